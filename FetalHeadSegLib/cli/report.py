"""Human-readable text for the terminal (the JSON outputs carry the same numbers)."""

from __future__ import annotations

from typing import Any


def _number(value: float | None, unit: str, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f} {unit}".rstrip()


def biometry_table(result: dict[str, Any], title: str) -> str:
    """Format a biometry JSON dictionary as an aligned table (the rows of ``biometry_rows``) with flags underneath."""
    from FetalHeadSegLib.report.rows import biometry_rows

    rows = [(row.measurement, _value(row), _note(row)) for row in biometry_rows(result)]
    width = max(len(name) for name, _, _ in rows)
    lines = [title] + [f"  {name:<{width}}  {value:>14}  {note}".rstrip() for name, value, note in rows]
    flags = result.get("flags") or []
    if flags:
        lines.append("Quality flags (detail):" if "review_recommended" in result else "Flags:")
        lines += [f"  - {flag['code']}: {flag['message']}" for flag in flags]
    return "\n".join(lines)


def _value(row: Any) -> str:
    if row.value is None or isinstance(row.value, str):
        return "-" if row.value is None else row.value
    if row.unit == "weeks":
        return _weeks(row.value)
    if row.measurement.endswith("z-score"):
        return f"z {row.value:+.2f}"
    return _number(row.value, row.unit, 2 if row.measurement == "Cephalic index" else 1)


def _note(row: Any) -> str:
    return f"{row.method} ({row.note})" if row.note else row.method


def _weeks(weeks: float | None) -> str:
    if weeks is None:
        return "-"
    whole = int(weeks)
    days = int(round((weeks - whole) * 7))
    if days == 7:
        whole, days = whole + 1, 0
    return f"{weeks:.1f} wk ({whole}+{days})"
