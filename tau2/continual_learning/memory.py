"""Memory hygiene between the phases of a run: what one phase freed goes back to the system
before the next one allocates.

CPython frees objects in reference cycles only at a collection, and glibc's ``malloc`` keeps
freed memory of its arenas (torch's CPU tensors come from it) for reuse instead of returning
it, so the resident size of a process stays at its highest phase's unless told otherwise.
:func:`release_memory` does both: ``gc.collect()`` and ``malloc_trim(0)`` (a no-op where the C
library is not glibc). :func:`resident_mb`, :func:`peak_resident_mb` and :func:`reset_peak`
measure it (Linux).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging

logger = logging.getLogger(__name__)

__all__ = ["peak_resident_mb", "release_memory", "reset_peak", "resident_mb"]


@functools.cache
def _malloc_trim() -> object | None:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_memory(collect: bool = True) -> bool:
    """Collect garbage (with ``collect``) and return the allocator's free memory to the system;
    ``True`` when ``malloc_trim`` ran (glibc). A collection walks every object of the process
    (0.6-1.2 s in a run, whose tau2 databases are millions of objects): callers that freed
    their memory by dropping references, not cycles, pass ``collect=False``."""
    if collect:
        gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"/proc/self/status has no {field}")


def resident_mb() -> float:
    """This process's resident memory in MB (Linux ``/proc``)."""
    return _status_mb("VmRSS")


def peak_resident_mb() -> float:
    """The highest resident memory in MB since the process started or :func:`reset_peak`."""
    return _status_mb("VmHWM")


def reset_peak() -> None:
    """Start :func:`peak_resident_mb` afresh from the current resident memory (Linux's
    ``clear_refs``; it also resets what ``getrusage`` reports as ``ru_maxrss``)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
