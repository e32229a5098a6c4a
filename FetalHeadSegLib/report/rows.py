"""A biometry record as rows of (measurement, value, unit, method, note): the one list the command line's table,
the Slicer module's tables and any report print, so they always show the same numbers with the same names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GA_FORMULAS = {
    "intergrowth21_2016_hc": ("GA from HC", "INTERGROWTH-21st 2016"),
    "hadlock1984_hc": ("GA from HC", "Hadlock 1984"),
    "hadlock1984_bpd": ("GA from BPD", "Hadlock 1984"),
}
"""Gestational-age estimates by JSON key: row name and method."""


@dataclass(frozen=True)
class BiometryRow:
    """One measurement: ``value`` is a number, a string or None (not defined, see ``note``)."""

    measurement: str
    value: Any
    unit: str
    method: str
    note: str = ""

    def value_text(self) -> str:
        """The value as people read it, the same in the command line's table and the QC picture's caption:
        ``"123.4 mm"``, ``"78.12"`` (cephalic index), ``"z +0.50"``, ``"24.3 wk (24+2)"``, ``"-"`` when not defined.
        """
        if self.value is None or isinstance(self.value, str):
            return "-" if self.value is None else self.value
        if self.unit == "weeks":
            return _weeks(self.value)
        if self.measurement.endswith("z-score"):
            return f"z {self.value:+.2f}"
        digits = 2 if self.measurement == "Cephalic index" else 1
        return f"{self.value:.{digits}f} {self.unit}".rstrip()


def biometry_rows(record: dict[str, Any]) -> list[BiometryRow]:
    """The rows of a biometry JSON record, in a fixed order: HC, BPD, OFD, cephalic index, then what the record
    has (BPD outer-inner, head volume, gestational ages, size for GA, AoP, pixel size, review). Lengths are in the
    record's ``units`` (``px`` records carry ``hc_px``-style keys)."""
    unit = record.get("units") or "mm"
    rows = [
        BiometryRow("HC", record.get(f"hc_{unit}"), unit, "Ramanujan I perimeter of the fitted ellipse", "outer skull"),
        BiometryRow("BPD", record.get(f"bpd_{unit}"), unit, "minor axis of the fitted ellipse", "outer-outer"),
        BiometryRow("OFD", record.get(f"ofd_{unit}"), unit, "major axis of the fitted ellipse", "outer-outer"),
        BiometryRow("Cephalic index", record.get("cephalic_index"), "", "100 x BPD / OFD"),
    ]
    if record.get(f"bpd_outer_inner_{unit}") is not None:
        rows.append(
            BiometryRow("BPD", record[f"bpd_outer_inner_{unit}"], unit, "outer to inner skull edge", "outer-inner")
        )
    if record.get("head_volume_ml") is not None:
        rows.append(BiometryRow("Head volume", record["head_volume_ml"], "mL", "voxel count x voxel volume"))
    for key, estimate in (record.get("ga_weeks") or {}).items():
        name, method = GA_FORMULAS.get(key, (f"GA ({key})", key))
        rows.append(BiometryRow(name, estimate.get("weeks"), "weeks", method, estimate.get("reason") or ""))
    for measure, size in (record.get("size_for_ga") or {}).items():
        label = measure.upper()
        rows.append(
            BiometryRow(f"{label} z-score", size.get("z_score"), "", "INTERGROWTH-21st 2014", size.get("reason") or "")
        )
        rows.append(BiometryRow(f"{label} centile", size.get("centile"), "%", "INTERGROWTH-21st 2014"))
    if record.get("aop_deg") is not None:
        rows.append(BiometryRow("Angle of progression", record["aop_deg"], "deg", "symphysis axis to head tangent"))
    if record.get("spacing_mm") is not None:
        spacing = record["spacing_mm"]
        value = " x ".join(f"{s:g}" for s in spacing) if isinstance(spacing, list) else spacing
        rows.append(BiometryRow("Pixel size", value, "mm", f"from the {record.get('spacing_source') or 'image'}"))
    if record.get("review_recommended") is not None:
        reasons = "; ".join(record.get("review_reasons") or [])
        rows.append(BiometryRow("Review recommended", "yes" if record["review_recommended"] else "no", "", reasons))
    return rows


def _weeks(weeks: float) -> str:
    whole = int(weeks)
    days = int(round((weeks - whole) * 7))
    if days == 7:
        whole, days = whole + 1, 0
    return f"{weeks:.1f} wk ({whole}+{days})"
