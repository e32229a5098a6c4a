"""Biometry tables: the worker's biometry JSON as a table node, for one result or one row per frame.

Every function takes the scene explicitly, so it runs in Slicer and, for tests, with the ``slicer-core`` wheel
(real MRML without the application). Segmentations and markups are not built here: Slicer's loaders read the
files the worker wrote (``results.py``).
"""

from __future__ import annotations

from typing import Any


def _rows(biometry: dict[str, Any]) -> list[tuple[str, Any, str, str, str]]:
    """(measurement, value, unit, method, convention or note) rows of a biometry JSON: the library's
    ``biometry_rows``, the same the command line prints."""
    from FetalHeadSegLib.report.rows import biometry_rows

    return [(row.measurement, row.value, row.unit, row.method, row.note) for row in biometry_rows(biometry)]


def _text(value: Any) -> str:
    return "" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))


def _flags(biometry: dict[str, Any]) -> str:
    return "; ".join(flag["code"] for flag in biometry.get("flags", []))


def _table(scene: Any, name: str, headings: list[str], rows: list[list[str]]) -> Any:
    """A table node of text cells."""
    import vtk

    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = table_node.GetTable()
    for heading in headings:
        array = vtk.vtkStringArray()
        array.SetName(heading)
        table.AddColumn(array)
    for cells in rows:
        row = table.InsertNextBlankRow()
        for column, cell in enumerate(cells):
            table.SetValue(row, column, vtk.vtkVariant(cell))
    table_node.Modified()
    return table_node


def create_biometry_table(scene: Any, biometry: dict[str, Any], name: str) -> Any:
    """A table node with one row per measurement: measurement, value, unit, method, convention, flags."""
    headings = ["measurement", "value", "unit", "method", "convention", "flags"]
    flags = _flags(biometry)
    rows = [
        [measurement, _text(value), unit, method, convention, flags]
        for measurement, value, unit, method, convention in _rows(biometry)
    ]
    return _table(scene, name, headings, rows)


def create_frame_table(scene: Any, frames: list[tuple[str, dict[str, Any]]], index_name: str, name: str) -> Any:
    """A table node with one row per frame of a sequence: the frame's index value, then one column per
    measurement (named with its unit and convention where two share a name), then the frame's flags.

    Args:
        frames: (index value, biometry JSON) per frame, in sequence order.
        index_name: heading of the first column, e.g. ``time (s)``.
    """
    units: dict[tuple[str, str], str] = {}  # column (measurement, convention) -> unit, in first-seen order
    per_frame = []
    for _, biometry in frames:
        values = {}
        for measurement, value, unit, _method, convention in _rows(biometry):
            key = (measurement, convention if measurement == "BPD" else "")  # BPD comes outer-outer and outer-inner
            units.setdefault(key, unit)
            values[key] = value
        per_frame.append(values)
    headings = [index_name]
    for key, unit in units.items():
        label = " ".join(key).strip()
        headings.append(f"{label} ({unit})" if unit else label)
    rows = [
        [index_value, *(_text(values.get(key)) for key in units), _flags(biometry)]
        for (index_value, biometry), values in zip(frames, per_frame, strict=True)
    ]
    return _table(scene, name, [*headings, "flags"], rows)
