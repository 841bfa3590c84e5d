"""``ConfigError``: a configuration value or combination that ``GRPOConfig`` refuses, naming the
field, the value and what is allowed. Its own module so the pieces the configuration delegates
to (``sampling_backend.py``, ``deprecated_names.py``) raise it without importing the config."""

from __future__ import annotations

from typing import Any

from tau2.continual_learning.rules import InvalidValue


class ConfigError(InvalidValue):
    """An invalid configuration value or combination."""

    owner = "GRPOConfig."


def require(condition: bool, name: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` for field ``name`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(name, value, allowed)
