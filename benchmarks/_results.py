"""The benchmark scripts' result lines: each printed as JSON (flushed, so a long run shows its
progress), appended to the script's JSON-lines file and kept for ``main`` to return.

The scripts run as ``python benchmarks/NAME.py``, which puts this folder on ``sys.path``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any


class ResultLines:
    """The lines one benchmark run prints; creating it sets up the script's logging (warnings
    from libraries, the script's own ``logger`` at INFO) and the results file's folder."""

    def __init__(self, path: Path, logger: logging.Logger) -> None:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        logger.setLevel(logging.INFO)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.printed: list[dict[str, Any]] = []

    def emit(self, line: dict[str, Any], record: bool = True) -> None:
        """Print ``line`` and keep it; append it to the results file unless ``record`` is
        false (a line recorded by an earlier run, printed again)."""
        text = json.dumps(line)
        print(text, flush=True)
        if record:
            with self.path.open("a") as fh:
                fh.write(text + "\n")
        self.printed.append(line)
