"""Keep memory-mapped files out of the process's resident set.

Pages of a shared file mapping that a process touches count towards its RSS until it unmaps
them, so a store that writes or samples gigabytes through a mapping would look (and, under
memory pressure, behave) as if it held them in RAM. ``release`` tells the kernel the process no
longer needs a range: the pages stay in the page cache (dirty ones are still written back), and
the next access maps them again with a minor fault.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap

import torch

logger = logging.getLogger(__name__)

# A read fault may map a whole page-cache folio (up to a 2 MiB huge page) around the address.
LARGEST_FOLIO = 2 << 20
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


def _load_madvise():
    """libc's ``madvise``, or None on platforms that lack it (then ``release`` is a no-op)."""
    if _MADV_DONTNEED is None:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_madvise = _load_madvise()


def _madvise_window(tensor: torch.Tensor, begin: int, end: int) -> None:
    """Release bytes ``[begin, end)`` of ``tensor``'s mapping, widened to whole folios.

    A fault maps the whole folio around the touched bytes, so releasing only those bytes
    would leave the rest of the folio mapped. Folios are aligned in the file (the mapping
    starts at offset 0), and the window is clamped to the mapping.
    """
    size = tensor.shape[0] * tensor.stride(0) * tensor.element_size()
    begin = begin // LARGEST_FOLIO * LARGEST_FOLIO
    end = min(size, -(-end // LARGEST_FOLIO) * LARGEST_FOLIO)
    if end > begin and _madvise(tensor.data_ptr() + begin, end - begin, _MADV_DONTNEED) != 0:
        logger.debug("madvise failed with errno %d", ctypes.get_errno())


def release(tensor: torch.Tensor, start: int = 0, stop: int | None = None) -> None:
    """Drop rows ``[start, stop)`` of a memory-mapped ``tensor`` from this process's RSS.

    Data is never lost by this call: the pages stay in the page cache (and in the file).
    """
    if _madvise is None:
        return
    stop = tensor.shape[0] if stop is None else stop
    if stop > start:
        row = tensor.stride(0) * tensor.element_size()
        _madvise_window(tensor, start * row, stop * row)


def release_rows(tensor: torch.Tensor, rows: list[int], span: int = 1) -> None:
    """``release`` rows ``[r, r + span)`` for each ``r`` in ``rows`` (what a gather touched)."""
    if _madvise is None:
        return
    row = tensor.stride(0) * tensor.element_size()
    for r in rows:
        _madvise_window(tensor, r * row, (r + span) * row)
