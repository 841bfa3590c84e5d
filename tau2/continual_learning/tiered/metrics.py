"""Metrics against the global frame count: one JSON line per record, mirrored to ``logging``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class MetricsLog:
    """Append-only JSON-lines metrics file (or just logging when ``path`` is None).

    Every record carries ``frames`` (the global frame count, the step of every curve) and
    ``phase``; ``rewind`` drops records of phases after a checkpoint so a resumed run does not
    log them twice.
    """

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, frames: int, phase: int, **metrics: Any) -> dict[str, Any]:
        """Write one record and return it."""
        record = {"frames": int(frames), "phase": int(phase), **metrics}
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        shown = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
        )
        logger.info("frames %d phase %d: %s", frames, phase, shown)
        return record

    def records(self) -> list[dict[str, Any]]:
        """All records written so far."""
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def rewind(self, phase: int) -> None:
        """Keep only the records of phases up to ``phase``."""
        if self.path is None or not self.path.exists():
            return
        kept = [r for r in self.records() if r["phase"] <= phase]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)
