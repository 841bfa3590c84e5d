"""Continual-learning metrics from a score matrix (definitions in ``docs/design.md``).

``R[i][j]`` is the score on task ``j`` after training through task ``i`` (0-based here; the
formulas below use the 1-based notation of the design, where ``T`` is the last trained task):

* ``ACC = mean_j R[T][j]`` - average final score over the tasks trained so far;
* ``BWT = mean_{j<T} (R[T][j] - R[j][j])`` - backward transfer (negative = forgetting);
* ``FWT = mean_{j>1} (R[j-1][j] - b[j])`` - forward transfer against the untrained model's
  scores ``b`` (``None`` without a baseline or without off-diagonal entries);
* ``forgetting f_j = max_{l<T} R[l][j] - R[T][j]`` averaged over ``j<T`` (Chaudhry et al. 2018).

For lower-is-better scores (MSE, NMSE) the signs are flipped so that every metric reads the
same way: BWT and FWT positive = better, forgetting positive = got worse. ACC stays the plain
mean of the final scores (so it is an MSE when the scores are MSEs).

The matrix may still be growing while training runs: rows are the tasks trained so far, a row
may be shorter than the number of columns or hold ``None`` for tasks not evaluated (e.g. tasks
not seen yet). Metrics use the leading *complete* rows - row ``i`` is complete when it has a
finite number for every task ``j <= i``; an incomplete last row (evaluation in progress) is
ignored, an incomplete row followed by complete ones is an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Score = float | int | None


def _as_float(value: Any, where: str) -> float | None:
    """``None`` stays ``None``; anything else must be a finite real number."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number or None, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{where} must be finite, got {number!r}")
    return number


def _complete_rows(matrix: Sequence[Sequence[Score]]) -> tuple[list[list[float | None]], int]:
    """Validated rows (as floats) and the number of columns."""
    if isinstance(matrix, (str, bytes)) or not isinstance(matrix, Sequence):
        raise ValueError(f"matrix must be a list of rows, got {type(matrix).__name__}")
    rows = [list(row) for row in matrix]
    if not rows:
        raise ValueError("matrix is empty: no task has been trained and evaluated yet")
    width = max(len(row) for row in rows)
    if len(rows) > width:
        raise ValueError(
            f"matrix has {len(rows)} rows but at most {width} columns; R[i][j] needs one column "
            "per task and one row per trained task (square T x T)"
        )
    parsed = [
        [_as_float(v, f"matrix[{i}][{j}]") for j, v in enumerate(row)] for i, row in enumerate(rows)
    ]
    complete = []
    for i, row in enumerate(parsed):
        missing = [j for j in range(i + 1) if j >= len(row) or row[j] is None]
        if missing:
            if i != len(parsed) - 1:
                raise ValueError(
                    f"matrix row {i} lacks scores for seen task(s) {missing}, but later rows "
                    "exist; only the last row may be incomplete"
                )
            break
        complete.append(row + [None] * (width - len(row)))
    if not complete:
        raise ValueError("matrix has no complete row: row 0 needs a score for task 0")
    return complete, width


def compute_cl_metrics(
    matrix: Sequence[Sequence[Score]],
    baseline: Sequence[Score] | None = None,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """ACC, BWT, FWT, mean forgetting and per-task forgetting of a score matrix.

    Returns a dict with ``ACC``, ``BWT``, ``FWT``, ``forgetting``, ``forgetting_per_task``
    (one value per task ``j < T``), ``num_tasks`` (complete rows used), ``final_scores`` and
    ``higher_is_better``. BWT and forgetting are ``None`` after a single task; FWT is ``None``
    without ``baseline`` or when a needed ``R[j-1][j]`` was not evaluated.
    """
    rows, width = _complete_rows(matrix)
    if baseline is not None:
        if isinstance(baseline, (str, bytes)) or not isinstance(baseline, Sequence):
            raise ValueError(f"baseline must be a list of scores, got {type(baseline).__name__}")
        if len(baseline) != width:
            raise ValueError(
                f"baseline has {len(baseline)} entries but the matrix has {width} tasks (columns)"
            )
        base = [_as_float(b, f"baseline[{j}]") for j, b in enumerate(baseline)]
    sign = 1.0 if higher_is_better else -1.0
    k = len(rows)
    last = rows[k - 1]
    final = [float(last[j]) for j in range(k)]  # type: ignore[arg-type]
    acc = sum(final) / k
    bwt = forgetting = None
    forgetting_per_task: list[float] = []
    if k > 1:
        diffs = [sign * (final[j] - rows[j][j]) for j in range(k - 1)]  # type: ignore[operator]
        bwt = sum(diffs) / len(diffs)
        for j in range(k - 1):
            earlier = [sign * r[j] for r in rows[: k - 1] if r[j] is not None]
            forgetting_per_task.append(max(earlier) - sign * final[j])
        forgetting = sum(forgetting_per_task) / len(forgetting_per_task)
    fwt = None
    if baseline is not None and k > 1:
        pairs = [(rows[j - 1][j], base[j]) for j in range(1, k)]
        if all(r is not None and b is not None for r, b in pairs):
            fwt = sum(sign * (r - b) for r, b in pairs) / len(pairs)  # type: ignore[operator]
    return {
        "ACC": acc,
        "BWT": bwt,
        "FWT": fwt,
        "forgetting": forgetting,
        "forgetting_per_task": forgetting_per_task,
        "num_tasks": k,
        "final_scores": final,
        "higher_is_better": higher_is_better,
    }


CL_METRIC_NAMES = ("ACC", "BWT", "FWT", "forgetting")


def bootstrap_cl_intervals(
    rewards: Sequence[Sequence[Sequence[float]]],
    baseline_rewards: Sequence[Sequence[float]] | None = None,
    num_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float] | None]:
    """Percentile bootstrap intervals of ACC, BWT, FWT and forgetting over test tasks.

    ``rewards[i][j]`` are the per-task rewards on domain ``j`` after training through domain
    ``i`` (``baseline_rewards[j]`` untrained). Every row scores the same tasks of a domain, so
    one resample of a domain's task indices is applied to all rows (a paired bootstrap: the
    noise of which tasks happen to be in the test split is shared, as it is in the metrics).
    A metric that is undefined (one domain; FWT without a baseline) gets ``None``.
    """
    import numpy as np

    rows = [[np.asarray(cell, dtype=float) for cell in row] for row in rewards]
    if not rows:
        return dict.fromkeys(CL_METRIC_NAMES)
    base = [np.asarray(b, dtype=float) for b in baseline_rewards] if baseline_rewards else None
    sizes = [len(cell) for cell in rows[0]]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in CL_METRIC_NAMES}
    for _ in range(num_resamples):
        picks = [rng.integers(0, n, n) if n else np.zeros(0, dtype=int) for n in sizes]
        matrix = [
            [float(c[p].mean()) if len(p) else 0.0 for c, p in zip(r, picks, strict=True)]
            for r in rows
        ]
        baseline = (
            [float(b[p].mean()) if len(p) else 0.0 for b, p in zip(base, picks, strict=True)]
            if base
            else None
        )
        result = compute_cl_metrics(matrix, baseline)
        for name in CL_METRIC_NAMES:
            if result[name] is not None:
                samples[name].append(result[name])
    tail = (1.0 - level) / 2 * 100
    return {
        name: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) if v else None
        for name, v in samples.items()
    }
