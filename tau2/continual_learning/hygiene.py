"""Import hygiene for the installed ``tau2`` package.

tau2-bench pulls in litellm (which fetches a cost map from the network on import) and logs
everything through loguru at DEBUG. A training library must not touch the network on import
nor flood stderr, so :func:`configure_tau2_environment` runs once, before any ``tau2.*``
module other than ``tau2`` itself is imported (``tau2.continual_learning`` calls it on import).
Users raise tau2's verbosity with :func:`set_verbosity`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

TAU2_LOG_ENV = "TAU2_CL_TAU2_LOG_LEVEL"
"""Environment variable: a loguru level name (e.g. ``INFO``) re-enables tau2's own logging."""

_LOGURU_SINK_ID: int | None = None


def configure_tau2_environment() -> None:
    """Make tau2/litellm imports offline and quiet; safe to call repeatedly."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    logging.getLogger("litellm").setLevel(logging.ERROR)
    # TRL 1.16 warns on import, once per module, when vLLM is newer than its tested 0.31; we use
    # vLLM only through our own engine (vLLM's CPU build is 0.32), not through TRL's.
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions")
    # Also TRL's, about its own choices, which users cannot act on: it flags `rollout_func` (the
    # continual trainer's rollouts, used on purpose) as experimental at every trainer, and it reads
    # transformers' deprecated `is_gradient_checkpointing`.
    warnings.filterwarnings("ignore", message="You are using 'rollout_func'")
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    set_verbosity(os.environ.get(TAU2_LOG_ENV))


def set_verbosity(tau2_level: str | None) -> None:
    """Silence tau2's loguru output (``None``) or route it to stderr at ``tau2_level``."""
    from loguru import logger

    global _LOGURU_SINK_ID
    if tau2_level is None:
        logger.disable("tau2")
        return
    logger.enable("tau2")
    # loguru's default sink logs everything at DEBUG; replace it by one at the requested level.
    with contextlib.suppress(ValueError):
        logger.remove(0)
    if _LOGURU_SINK_ID is not None:
        logger.remove(_LOGURU_SINK_ID)
    _LOGURU_SINK_ID = logger.add(sys.stderr, level=tau2_level.upper())
