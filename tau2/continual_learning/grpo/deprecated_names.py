"""Old field names ``GRPOConfig`` still takes (command line, YAML, keywords) with a
``FutureWarning``: each value moves to its new field and the old one is unset, so ``to_dict()``
carries one name."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from tau2.continual_learning.grpo.config_error import require

DEPRECATED_NAMES = {"rollout_backend": "sampling_backend"}
"""Old field -> the field that replaced it."""


def take_deprecated_names(config: Any) -> None:
    """Move each set old field of the dataclass ``config`` to its new name; giving both (the new
    one not at its default) is refused with a ``ConfigError``."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for old, new in DEPRECATED_NAMES.items():
        value = getattr(config, old)
        if value is None:
            continue
        warnings.warn(
            f"GRPOConfig.{old} is deprecated: use {new}={value!r}",
            FutureWarning,
            stacklevel=4,  # the caller of GRPOConfig(...)
        )
        given = getattr(config, new)
        require(
            given in (defaults[new], value),
            old,
            value,
            f"the deprecated name of {new}; give one of them, not {new}={given!r} too",
        )
        setattr(config, new, value)
        setattr(config, old, None)
