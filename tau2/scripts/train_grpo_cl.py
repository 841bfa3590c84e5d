"""Command line entry point: ``python -m tau2.scripts.train_grpo_cl``."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    raise SystemExit("placeholder")


if __name__ == "__main__":
    raise SystemExit(main())
