"""What every evaluation of ``training.evaluate`` keeps per case: its row for ``--cases-csv``, its review signals
with whether the result was bad (for the review flag's rates and calibration), and the summary of a column."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def summarise(values: list[float]) -> dict[str, float]:
    """Mean, SD, median and count of the finite values (a failed case counts as NaN and is left out).

    Example:
        >>> summarise([1.0, 2.0, float("nan"), 6.0])
        {'mean': 3.0, 'sd': 2.1602, 'median': 2.0, 'n': 3}
    """
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {
        "mean": round(float(np.mean(finite)), 4),
        "sd": round(float(np.std(finite)), 4),
        "median": round(float(np.median(finite)), 4),
        "n": len(finite),
    }


ReviewCases = list[tuple[Any, bool]]
"""(review signals, bad result) per case, for the review flag's rates and calibration."""
HC_ERROR_BAD_MM = 5.0
"""An HC18 frame is a bad result when its HC is off by more than this."""
AOP_ERROR_BAD_DEG = 10.0
"""An intrapartum frame is a bad result when its angle of progression is off by more than this."""
DICE_BAD_3D = 0.9
"""A 3D phantom is a bad result when its head's Dice is below this."""


def add_review_case(result: Any, bad: bool, cases: ReviewCases) -> None:
    """Keep a result's review signals (none where it has no review) with whether the case was bad."""
    from FetalHeadSegLib.measure.review import ReviewSignals

    signals = result.review.signals if result.review is not None else ReviewSignals()
    cases.append((signals, bad))


CaseRows = list[dict[str, Any]]
"""One row per case (``--cases-csv``): the case id, its reference and measured values and the review verdict."""


def case_row(case_id: str, result: Any, **values: Any) -> dict[str, Any]:
    """A case's row: its id, its values (floats to 4 decimals) and the result's review verdict and reasons."""
    review = result.review
    return {
        "case": case_id,
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()},
        "review_recommended": bool(review and review.recommended),
        "review_reasons": ";".join(review.reasons) if review else "",
    }


def write_rows(path: Path, rows: CaseRows) -> None:
    """The per-case rows as CSV (columns: the union of the rows' keys, in first-seen order), written atomically."""
    import csv
    import io

    from FetalHeadSegLib.core.atomic import write_text_atomic

    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def read_rows(path: Path, columns: tuple[str, ...]) -> CaseRows:
    """The rows of a ``--cases-csv`` file (values as text), which must hold ``columns``.

    Raises:
        InputImageError: the file cannot be read, is empty, or lacks one of ``columns``.
    """
    import csv

    from FetalHeadSegLib.core.errors import InputImageError

    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows: CaseRows = list(csv.DictReader(handle))
    except OSError as err:
        raise InputImageError(f"{path}: cannot read the cases CSV ({err.strerror or err})") from err
    if not rows or not set(columns) <= set(rows[0]):
        raise InputImageError(f"{path}: expected the columns {', '.join(columns)} (training.evaluate --cases-csv)")
    return rows
