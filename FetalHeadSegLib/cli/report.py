"""Human-readable text for the terminal (the JSON outputs carry the same numbers)."""

from __future__ import annotations

from typing import Any


def biometry_table(result: dict[str, Any], title: str) -> str:
    """Format a biometry JSON dictionary as an aligned table (the rows of ``biometry_rows``) with flags underneath."""
    from FetalHeadSegLib.report.rows import biometry_rows

    rows = [(row.measurement, row.value_text(), _note(row)) for row in biometry_rows(result)]
    width = max(len(name) for name, _, _ in rows)
    lines = [title] + [f"  {name:<{width}}  {value:>14}  {note}".rstrip() for name, value, note in rows]
    flags = result.get("flags") or []
    if flags:
        lines.append("Quality flags (detail):" if "review_recommended" in result else "Flags:")
        lines += [f"  - {flag['code']}: {flag['message']}" for flag in flags]
    return "\n".join(lines)


def _note(row: Any) -> str:
    return f"{row.method} ({row.note})" if row.note else row.method
