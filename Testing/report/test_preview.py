"""QC pictures: three orthogonal planes with square pixels and the mask outline drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.core.io import read_image
from FetalHeadSegLib.report.preview import OUTLINE_RGB, orthogonal_slices, write_png

from shapes import make_ellipsoid


def test_three_planes_side_by_side_with_the_outline(tmp_path: Path) -> None:
    shape = make_ellipsoid((20.0, 15.0, 12.0), spacing_mm=(1.0, 1.0, 2.0))
    image = shape.image.with_array((shape.image.array * 120 + 20).astype(np.uint8))
    picture = orthogonal_slices(image, shape.image)
    nx, ny, nz = image.shape
    # k-slice (nx by ny), j-slice (nx by 2 nz) and i-slice (ny by 2 nz): z pixels are doubled to be square.
    assert picture.shape == (max(ny, 2 * nz), nx + 4 + nx + 4 + ny, 3)
    assert (picture == OUTLINE_RGB).all(axis=2).any()
    path = write_png(picture, tmp_path / "qc.png")
    assert read_image(path).shape == (picture.shape[1], picture.shape[0], 1)  # RGB read back as grey


def test_a_frame_is_shown_alone() -> None:
    frame = Image(np.zeros((30, 20, 1), dtype=np.uint8), make_ijk_to_ras((0.5, 0.5, 1.0)))
    assert orthogonal_slices(frame).shape == (20, 30, 3)
