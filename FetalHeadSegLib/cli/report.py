"""Human-readable text for the terminal (the JSON outputs carry the same numbers)."""

from __future__ import annotations

from typing import Any


def _number(value: float | None, unit: str, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f} {unit}".rstrip()


def biometry_table(result: dict[str, Any], title: str) -> str:
    """Format a biometry JSON dictionary as an aligned table with flags underneath (lengths in the record's
    ``units``: ``px`` records carry ``hc_px``-style keys)."""
    unit = result.get("units", "mm")
    rows: list[tuple[str, str, str]] = [
        ("HC", _number(result[f"hc_{unit}"], unit), "Ramanujan I perimeter of the fitted outer ellipse"),
        ("BPD", _number(result[f"bpd_{unit}"], unit), "outer-outer"),
    ]
    if result.get(f"bpd_outer_inner_{unit}") is not None:
        rows.append(("BPD", _number(result[f"bpd_outer_inner_{unit}"], unit), "outer-inner"))
    rows += [
        ("OFD", _number(result[f"ofd_{unit}"], unit), "outer-outer"),
        ("Cephalic index", _number(result["cephalic_index"], ""), "100 x BPD / OFD"),
    ]
    if result["dimension"] == 3 and unit == "mm":
        rows.append(("Head volume", _number(result["head_volume_ml"], "mL"), "voxel count x voxel volume"))
    for key, estimate in result["ga_weeks"].items():
        label = {
            "intergrowth21_2016_hc": "GA (IG-21 2016, HC)",
            "hadlock1984_hc": "GA (Hadlock 1984, HC)",
            "hadlock1984_bpd": "GA (Hadlock 1984, BPD)",
        }.get(key, key)
        rows.append((label, _weeks(estimate["weeks"]), estimate["reason"] or ""))
    for key, size in (result.get("size_for_ga") or {}).items():
        if size["z_score"] is None:
            rows.append((f"{key.upper()} for GA", "-", size["reason"]))
        else:
            rows.append(
                (f"{key.upper()} for GA", f"z {size['z_score']:+.2f}", f"centile {size['centile']:.1f} (IG-21)")
            )
    if result.get("aop_deg") is not None:
        rows.append(("Angle of progression", _number(result["aop_deg"], "deg"), "symphysis axis to head tangent"))
    width = max(len(name) for name, _, _ in rows)
    lines = [title] + [f"  {name:<{width}}  {value:>12}  {note}".rstrip() for name, value, note in rows]
    if "review_recommended" in result:
        reasons = ", ".join(result.get("review_reasons") or [])
        lines.append(f"Review: {'recommended (' + reasons + ')' if result['review_recommended'] else 'not needed'}")
    flags = result.get("flags") or []
    if flags:
        lines.append("Quality flags (detail):" if "review_recommended" in result else "Flags:")
        lines += [f"  - {flag['code']}: {flag['message']}" for flag in flags]
    return "\n".join(lines)


def _weeks(weeks: float | None) -> str:
    if weeks is None:
        return "-"
    whole = int(weeks)
    days = int(round((weeks - whole) * 7))
    if days == 7:
        whole, days = whole + 1, 0
    return f"{weeks:.1f} wk ({whole}+{days})"
