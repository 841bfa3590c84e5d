"""The benchmark scripts' shared command line: a repeatable ``--set KEY=VALUE`` that overrides
one :class:`~tau2.continual_learning.grpo.config.GRPOConfig` field, its value parsed as YAML.

The scripts run as ``python benchmarks/NAME.py``, which puts this folder on ``sys.path``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
from collections.abc import Collection
from typing import Any

import yaml

from tau2.continual_learning.grpo.config import GRPOConfig

SEQUENCE_FIELDS = (
    "domains",
    "seed",
    "skills_seed",
    "output_dir",
    "cl_algorithm",
    "max_steps_per_domain",
    "task_source",
)
"""The fields a benchmark that builds its own domain sequences sets per run (``--set`` may not)."""

_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str, reserved: Collection[str] = (), hint: str = "") -> tuple[str, Any]:
    """A ``--set key=value`` argument: a :class:`GRPOConfig` field and its value parsed as YAML
    (so ``3e-5``, ``true`` and ``[a, b]`` take their types). Fields in ``reserved`` are refused
    (the script sets them; ``hint`` says how). Raises ``argparse.ArgumentTypeError``, whose
    message argparse prints."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    if key not in {f.name for f in dataclasses.fields(GRPOConfig)}:
        raise argparse.ArgumentTypeError(f"{key!r} is not a GRPOConfig field")
    if key in reserved:
        raise argparse.ArgumentTypeError(f"{key!r} is set by the benchmark{hint}")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str) and _EXPONENT_FLOAT.fullmatch(parsed):
        parsed = float(parsed)  # YAML 1.1 (PyYAML) reads an exponent without a dot as a string
    return key, parsed


def add_override_argument(
    parser: argparse.ArgumentParser, reserved: Collection[str], hint: str
) -> None:
    """Add the repeatable ``--set KEY=VALUE`` (:func:`parse_override`; the pairs land in
    ``args.overrides``)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=functools.partial(parse_override, reserved=reserved, hint=hint),
        default=[],
        metavar="KEY=VALUE",
        help="override a GRPOConfig field (repeatable; the value is parsed as YAML)",
    )
