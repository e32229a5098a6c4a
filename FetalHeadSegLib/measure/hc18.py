"""HC18 data conventions (``biometry.md`` §5): pixel-size CSV, outline annotations, subject ids.

The reference ellipse of an HC18 annotation is the least-squares ellipse through the drawn outline's pixel
centres; its Ramanujan perimeter times the pixel size reproduces the CSV's head circumference. Training masks
are that ellipse rasterised and filled, never a flood fill of the outline.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from FetalHeadSegLib.core.errors import InputImageError
from FetalHeadSegLib.measure.ellipse import Ellipse, fit_ellipse

CSV_HEADER = ("filename", "pixel size(mm)", "head circumference (mm)")


@dataclass(frozen=True)
class PixelSizeRow:
    """One row of an HC18-style CSV: file name, pixel size and (training set only) reference HC."""

    filename: str
    pixel_size_mm: float
    hc_mm: float | None


def read_pixel_size_csv(path: str | os.PathLike[str]) -> dict[str, PixelSizeRow]:
    """Read an HC18-style CSV (``filename,pixel size(mm)[,head circumference (mm)]``), keyed by file name.

    Raises:
        InputImageError: missing file, unexpected header, or a value that is not a positive number.
    """
    file = Path(path)
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except OSError as err:
        raise InputImageError(f"{file}: cannot read the CSV ({err.strerror or err})") from err
    if not rows or tuple(cell.strip() for cell in rows[0][:2]) != CSV_HEADER[:2]:
        raise InputImageError(f"{file}: expected the header 'filename,pixel size(mm)[,head circumference (mm)]'")
    table = {}
    for line_number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            pixel = float(row[1])
            hc = float(row[2]) if len(row) > 2 and row[2].strip() else None
        except (IndexError, ValueError) as err:
            raise InputImageError(f"{file}, line {line_number}: expected a file name and numbers") from err
        if not np.isfinite(pixel) or pixel <= 0:
            raise InputImageError(f"{file}, line {line_number}: pixel size must be positive, got {row[1]}")
        table[row[0].strip()] = PixelSizeRow(row[0].strip(), pixel, hc)
    return table


def subject_id(filename: str) -> str:
    """The subject of an HC18 file: its numeric prefix (``012_2HC.png`` -> ``012``)."""
    match = re.match(r"(\d+)_", Path(filename).name)
    if match is None:
        raise ValueError(f"{filename}: not an HC18 file name (NNN_HC.png, NNN_2HC.png, ...)")
    return match.group(1)


def ellipse_from_outline(outline: np.ndarray) -> Ellipse:
    """The reference ellipse of an HC18 annotation, in pixels.

    Args:
        outline: 2D array indexed (x, y) = (column, row); non-zero on the drawn outline.
    """
    points = np.argwhere(np.asarray(outline) != 0).astype(np.float64)
    if len(points) < 5:
        raise InputImageError("the annotation holds no ellipse outline")
    return fit_ellipse(points)


def rasterize_ellipse(ellipse: Ellipse, shape: tuple[int, int]) -> np.ndarray:
    """Filled ellipse on a pixel grid indexed (x, y): True where the pixel centre lies inside."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return ellipse.contains(np.stack([x.ravel(), y.ravel()], axis=1)).reshape(shape)
