"""Declared value rules: what a setting accepts, checked and described from one declaration.

``GRPOConfig`` declares a :class:`Rule` per field and the GRPO algorithms one per constructor
parameter (``grpo/algorithms/parameters.py``); :func:`check` applies them and raises
:class:`InvalidValue` naming the setting, the value and what is allowed. The same
:meth:`Rule.allowed` text is the "allowed" column of the configuration reference, so the message,
the check and the documentation cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any


class InvalidValue(ValueError):
    """A value outside its rule: carries the name, the value and what is allowed."""

    owner = ""
    """Prefix of the name in the message (``"GRPOConfig."`` for configuration fields)."""

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"{self.owner}{name}={value!r} is invalid: {allowed}")


@dataclass(frozen=True)
class Rule:
    """The values one setting accepts.

    ``kind`` is ``bool``, ``int``, ``float`` (an int is accepted, bools never count as numbers,
    non-finite floats are refused), ``str`` or ``list`` (of distinct strings). ``low``/``high``
    bound a number (``open_low``/``open_high`` exclude the bound) or, for a list, its length
    from below. ``choices`` returns the valid values (for a list, its valid items); it is called
    when checking, so registries filled at import time are seen whole. ``none`` says what
    ``None`` means where it is allowed; ``note`` says why, in the message and the docs.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: Callable[[], Collection[Any]] | None = None
    none: str | None = None
    note: str = ""
    item: str = "item"
    """What one item of a list is called in messages (``"domain"``)."""

    def allowed(self) -> str:
        """What is allowed, in words: ``"None (all test tasks) or an integer >= 1"``."""
        text = self._base()
        if self.none is not None and self.kind is bool:
            text = f"True, False or None ({self.none})"
        elif self.none is not None:
            text = f"None ({self.none}) or {text}"
        return f"{text} ({self.note})" if self.note else text

    def problem(self, value: Any) -> str | None:
        """``None`` when ``value`` is allowed, else what is wrong with it."""
        if value is None:
            return None if self.none is not None else self.allowed()
        if self.kind is list:
            return self._list_problem(value)
        if not self._typed(value) or not self._in_range(value):
            return self.allowed()
        if self.choices is not None and value not in self.choices():
            return self.allowed()
        return None

    def _typed(self, value: Any) -> bool:
        if self.kind is float:
            return (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
        if self.kind is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, self.kind)

    def _in_range(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def _list_problem(self, value: Any) -> str | None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return self.allowed()
        if self.low is not None and len(value) < self.low:
            return self.allowed()
        if self.choices is not None:
            valid = list(self.choices())
            for item in value:
                if item not in valid:
                    return f"unknown {self.item} {item!r}; valid: {valid}"
        if len(set(value)) != len(value):
            return f"each {self.item} at most once"
        return None

    def _base(self) -> str:
        if self.kind is list:
            size = "a non-empty list" if self.low else "a list"
            valid = f" from {list(self.choices())}" if self.choices is not None else ""
            return f"{size} of distinct {self.item}s{valid}"
        if self.choices is not None:
            return f"one of {tuple(self.choices())}"
        noun = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}
        return f"{noun[self.kind]}{self._range()}"

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f" in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f" {'>' if self.open_low else '>='} {self.low:g}"
        if self.high is not None:
            return f" {'<' if self.open_high else '<='} {self.high:g}"
        return ""


def check(
    rules: Mapping[str, Rule],
    values: Mapping[str, Any],
    error: type[InvalidValue] = InvalidValue,
) -> None:
    """Raise ``error`` (an :class:`InvalidValue`) for the first value that breaks its rule."""
    for name, value in values.items():
        problem = rules[name].problem(value)
        if problem is not None:
            raise error(name, value, problem)


def reference(cls: type, rules: Mapping[str, Rule]) -> str:
    """A Markdown table of the dataclass ``cls``'s fields named in ``rules``, in that order: type,
    default, what is allowed and the field's ``--help`` text (docs/configuration.md)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    rows = ["| field | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for name, rule in rules.items():
        spec = fields[name]
        has_factory = spec.default_factory is not dataclasses.MISSING
        default = spec.default_factory() if has_factory else spec.default
        kind = _annotation(cls, name)
        text = re.split(r"\.\s+(?=[A-Z])", spec.metadata.get("help", ""))[0].rstrip(".") + "."
        cells = (f"`{name}`", f"`{kind}`", f"`{default!r}`", rule.allowed(), text)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def _annotation(cls: type, name: str) -> str:
    """A field's type as its class wrote it (HfArgumentParser rewrites ``Field.type``)."""
    for klass in cls.__mro__:
        written = vars(klass).get("__annotations__", {}).get(name)
        if written is not None:
            return (
                written if isinstance(written, str) else getattr(written, "__name__", str(written))
            )
    raise KeyError(name)
