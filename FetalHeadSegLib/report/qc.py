"""The QC picture of a segmentation: three orthogonal planes through the measurement plane (one for 2D frames)
with the head's outline, the HC ellipse, the BPD and OFD calipers, and the numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from FetalHeadSegLib.core.image import Image
from FetalHeadSegLib.measure.section import PlaneGrid, sample_on_plane
from FetalHeadSegLib.report.preview import orthogonal_slices
from FetalHeadSegLib.report.rows import biometry_rows

if TYPE_CHECKING:
    from FetalHeadSegLib.measure.biometry import Biometry

SEGMENTATION_RGB = (255, 70, 200)
HC_RGB, BPD_RGB, OFD_RGB = (255, 210, 0), (60, 220, 60), (60, 160, 255)
SYMPHYSIS_AXIS_RGB, AOP_TANGENT_RGB = (255, 60, 60), (0, 230, 230)
CAPTION_FONT_PX = 15
CAPTION_NAMES = {
    "HC": "HC",
    "BPD": "BPD",
    "OFD": "OFD",
    "Cephalic index": "CI",
    "Head volume": "volume",
    "Angle of progression": "AoP",
}
"""The rows of :func:`~FetalHeadSegLib.report.rows.biometry_rows` the caption shows (the first of each name), and
their short names."""


def qc_picture(
    image: Image, head_mask: Image, biometry: Biometry | None, record: dict[str, Any] | None = None
) -> np.ndarray:
    """An RGB (rows, columns, 3) uint8 picture; without biometry, orthogonal slices with the outline only.

    The segmentation's outline (pink) and the fitted HC ellipse (yellow) have their own colours, named in the
    caption with the numbers of :func:`caption_text`.

    Args:
        record: the biometry JSON written beside the picture, whose numbers the caption shows (``px`` lengths when
            no pixel size is known). None: ``biometry.to_dict()``, in mm.
    """
    if biometry is None:
        return orthogonal_slices(image, head_mask)
    grey = _to_unit(image)
    tiles = []
    for grid, main in _grids(image, biometry):
        pixels = (np.clip(sample_on_plane(grey, grid), 0, 1) * 255).astype(np.uint8)
        mask = sample_on_plane(head_mask.with_array((head_mask.array != 0).astype(np.float32)), grid) >= 0.5
        rgb = np.repeat(pixels[:, :, None], 3, axis=2)
        _draw_outline(rgb, mask)
        if main:
            _draw_landmarks(rgb, biometry, grid)
        tiles.append(rgb.transpose(1, 0, 2))
    gap = np.zeros((tiles[0].shape[0], 4, 3), dtype=np.uint8)
    picture = np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)
    return _caption(picture, biometry, caption_text(record if record is not None else biometry.to_dict()))


def caption_text(record: dict[str, Any]) -> str:
    """The caption's numbers, from the rows the command line's table and the Slicer tables show
    (``"HC 172.3 mm   BPD 45.1 mm   OFD 61.0 mm   CI 73.93"``, plus the head volume and the angle of progression
    when the record has them)."""
    parts: dict[str, str] = {}
    for row in biometry_rows(record):
        name = CAPTION_NAMES.get(row.measurement)
        if name is not None and name not in parts and row.value is not None:
            parts[name] = f"{name} {row.value_text()}"
    return "   ".join(parts.values())


def _grids(image: Image, biometry: Biometry) -> list[tuple[PlaneGrid, bool]]:
    """Where to sample: a 2D frame whole and unrotated, as acquired (at most 900 pixels wide); a volume as three
    orthogonal planes through the measurement plane, centred on the head."""
    if image.is_2d:
        direction = image.direction_ras
        extent = np.asarray(image.shape[:2]) * np.asarray(image.spacing_mm[:2])
        step = max(min(image.spacing_mm[:2]), float(extent.max()) / 900)
        corner = image.ijk_to_ras_points([-0.5, -0.5, 0.0])[0]
        shape = (int(extent[0] / step), int(extent[1] / step))
        return [(PlaneGrid(corner, direction[:, 0], direction[:, 1], 0.5 * step, 0.5 * step, step, shape), True)]
    plane = biometry.plane
    u, v = plane.ofd_axis_ras, plane.lr_axis_ras
    half = 0.75 * biometry.ofd_mm
    # Sample at the image's resolution, but finely enough that each plane is at least 256 pixels wide.
    step = min(min(image.spacing_mm), 2 * half / 256)
    size = int(2 * half / step) + 1
    return [
        (PlaneGrid(plane.origin_ras, axis_u, axis_v, -half, -half, step, (size, size)), main)
        for axis_u, axis_v, main in ((u, v, True), (u, plane.normal_ras, False), (v, plane.normal_ras, False))
    ]


def _to_unit(image: Image) -> Image:
    values = image.array.astype(np.float32)
    low, high = np.percentile(values, [0.5, 99.5])
    return image.with_array((values - low) / max(float(high - low), 1e-6))


def _draw_outline(rgb: np.ndarray, mask: np.ndarray) -> None:
    from scipy import ndimage

    rgb[mask & ~ndimage.binary_erosion(mask)] = SEGMENTATION_RGB


def _to_pixels(points_ras: np.ndarray, grid: PlaneGrid) -> np.ndarray:
    relative = points_ras - grid.origin_ras
    uv = np.stack([relative @ grid.axis_u_ras, relative @ grid.axis_v_ras], axis=1) - grid.grid_offset()
    return np.asarray(np.rint(uv / grid.step_mm).astype(int))


def _draw_polyline(rgb: np.ndarray, points: np.ndarray, color: tuple[int, int, int], closed: bool) -> None:
    from skimage.draw import line

    sequence = np.vstack([points, points[:1]]) if closed else points
    for (r0, c0), (r1, c1) in zip(sequence[:-1], sequence[1:], strict=True):
        rows, cols = line(int(r0), int(c0), int(r1), int(c1))
        keep = (rows >= 0) & (rows < rgb.shape[0]) & (cols >= 0) & (cols < rgb.shape[1])
        rgb[rows[keep], cols[keep]] = color


def _draw_landmarks(rgb: np.ndarray, biometry: Biometry, grid: PlaneGrid) -> None:
    landmarks = biometry.landmarks
    _draw_polyline(rgb, _to_pixels(landmarks.hc_ellipse_ras, grid), HC_RGB, closed=True)
    _draw_polyline(rgb, _to_pixels(landmarks.bpd_ras, grid), BPD_RGB, closed=False)
    _draw_polyline(rgb, _to_pixels(landmarks.ofd_ras, grid), OFD_RGB, closed=False)
    aop = biometry.aop
    if aop is not None:  # the construction: symphysis axis from the apex V to S, and the line from V through T
        apex = aop.v_ras
        _draw_polyline(rgb, _to_pixels(np.stack([apex, aop.s_ras]), grid), SYMPHYSIS_AXIS_RGB, closed=False)
        through = apex + 1.3 * (aop.t_ras - apex)
        _draw_polyline(rgb, _to_pixels(np.stack([apex, through]), grid), AOP_TANGENT_RGB, closed=False)


def _caption(picture: np.ndarray, biometry: Biometry, numbers: str) -> np.ndarray:
    from PIL import Image as PilImage
    from PIL import ImageDraw, ImageFont

    flags = ", ".join(flag.code for flag in biometry.flags)
    font = ImageFont.load_default(size=CAPTION_FONT_PX)
    line = CAPTION_FONT_PX + 5
    band = np.zeros((3 * line + 6, max(picture.shape[1], 640), 3), dtype=np.uint8)
    canvas = PilImage.fromarray(band)
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), numbers, fill=(255, 255, 255), font=font)
    x = 4
    for text, colour in (
        ("segmentation outline", SEGMENTATION_RGB),
        ("HC ellipse fit", HC_RGB),
        ("BPD", BPD_RGB),
        ("OFD", OFD_RGB),
        *((("symphysis axis", SYMPHYSIS_AXIS_RGB), ("AoP tangent", AOP_TANGENT_RGB)) if biometry.aop else ()),
    ):
        draw.text((x, 3 + line), text, fill=colour, font=font)
        x += int(draw.textlength(text, font=font)) + 16
    draw.text(
        (4, 3 + 2 * line), f"flags: {flags or 'none'}", fill=(255, 180, 120) if flags else (160, 160, 160), font=font
    )
    body = np.zeros((picture.shape[0], band.shape[1], 3), dtype=np.uint8)
    body[:, : picture.shape[1]] = picture
    return np.concatenate([body, np.asarray(canvas)], axis=0)
