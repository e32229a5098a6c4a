"""The cohort table (``summary.csv``): one row per case (or cine frame), built from its biometry JSON record.

The same function turns a fresh result and a biometry JSON read back from disk (a case kept by
``--skip-existing``) into a row, so a resumed cohort's table is the one an uninterrupted run writes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SUMMARY_COLUMNS = (
    "input",
    "frame",
    "status",
    "review_recommended",
    "review_reasons",
    "hc_mm",
    "bpd_mm",
    "ofd_mm",
    "cephalic_index",
    "head_volume_ml",
    "aop_deg",
    "ga_intergrowth_weeks",
    "hc_z",
    "bpd_z",
    "ofd_z",
    "hc_centile",
    "spacing_mm",
    "spacing_source",
    "units",
    "model_id",
    "flags",
    "seconds",
    "outputs",
    "error",
)
PIXEL_COLUMNS = {"hc_px": "hc_mm", "bpd_px": "bpd_mm", "ofd_px": "ofd_mm"}
"""In pixel units the lengths go into the same columns; the ``units`` column says ``px``."""


def summary_row(record: dict[str, Any], status: str = "ok") -> dict[str, Any]:
    """A summary row from a biometry JSON record (numbers rounded for reading; the JSON keeps full precision)."""
    row: dict[str, Any] = {"input": record.get("input", ""), "status": status, "error": ""}
    for key in ("hc_mm", "bpd_mm", "ofd_mm", "head_volume_ml"):
        row[key] = _rounded(record.get(key), 2)
    for pixel_key, column in PIXEL_COLUMNS.items():
        if record.get(pixel_key) is not None:
            row[column] = _rounded(record[pixel_key], 2)
    row["cephalic_index"] = _rounded(record.get("cephalic_index"), 1)
    row["aop_deg"] = _rounded(record.get("aop_deg"), 1)
    row["ga_intergrowth_weeks"] = _rounded(
        ((record.get("ga_weeks") or {}).get("intergrowth21_2016_hc") or {}).get("weeks"), 1
    )
    size = record.get("size_for_ga") or {}
    for measure in ("hc", "bpd", "ofd"):
        row[f"{measure}_z"] = _rounded((size.get(measure) or {}).get("z_score"), 2)
    row["hc_centile"] = _rounded((size.get("hc") or {}).get("centile"), 1)
    spacing = record.get("spacing_mm")
    row["spacing_mm"] = "" if not spacing else " ".join(f"{value:g}" for value in spacing)
    row["spacing_source"] = record.get("spacing_source", "")
    row["units"] = record.get("units", "")
    row["review_recommended"] = record.get("review_recommended", "")
    row["review_reasons"] = ";".join(record.get("review_reasons") or [])
    row["model_id"] = (record.get("provenance") or {}).get("model_id", "")
    row["flags"] = ";".join(flag["code"] for flag in record.get("flags") or [])
    row["frame"] = "" if record.get("frame") is None else record["frame"]
    return row


def failed_row(source: str, message: str, frame: int | None = None) -> dict[str, Any]:
    """The row of a case that could not be segmented."""
    return {"input": source, "frame": "" if frame is None else frame, "status": "failed", "error": message}


def summary_text(rows: Sequence[dict[str, Any]]) -> str:
    """The CSV text of the rows (missing columns empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_summary(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write ``summary.csv`` atomically (a reader sees the old table or the new one, never half of one)."""
    from FetalHeadSegLib.core.atomic import write_text_atomic

    return write_text_atomic(path, summary_text(rows))


def _rounded(value: Any, digits: int) -> Any:
    return "" if value is None else round(float(value), digits)
