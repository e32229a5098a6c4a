"""Ultrasound DICOM input: frames, cine loops and volumes, with the pixel size of the ultrasound calibration.

Files are read with pydicom, imported inside the functions so that ``import FetalHeadSegLib`` stays numpy-only.
What a file becomes (:func:`read_dicom`):

- one frame: one 2D image;
- several frames that are times of one view (an ultrasound multi-frame cine, or frames all at one plane position):
  one 2D image per frame, ``is_cine=True``;
- an enhanced multi-frame object whose per-frame plane positions (Plane Position (Patient) or (Volume), as in
  Enhanced US Volume) step evenly along the plane normal: one 3D image with that slice step.

Pixel size, the first that the file has:

1. the ultrasound region calibration (Sequence of Ultrasound Regions): the 2D tissue region that covers most of the
   image. Its Physical Delta X/Y must be in cm (unit code 3) and become mm; other units are refused. The image is
   cropped to the region's bounds and the crop's offset goes into the origin, so every pixel keeps its position.
   ``SpacingSource.DICOM_REGION``.
2. Pixel Spacing (top level or in the Pixel Measures functional group), else Imager Pixel Spacing.
   ``SpacingSource.HEADER``.
3. none: ``SpacingSource.NONE``, 1 mm per pixel; callers then refuse the file or measure in pixel units
   (:func:`FetalHeadSegLib.core.spacing.choose_spacing`).

Pixels go through pydicom's own handling (decompression, YBR_FULL/YBR_FULL_422 to RGB as ``Dataset.pixel_array``
does, palette colour lookup, modality LUT). Colour becomes grey the way raster files do
(:func:`~FetalHeadSegLib.core.io.colour_to_grey`) and MONOCHROME1 is inverted so that bright means echogenic, as in
MONOCHROME2. Positions are in DICOM's LPS patient frame: Image Position/Orientation when present, otherwise columns
along L and rows along P from the first pixel, the frame SimpleITK gives a PNG. The one conversion to RAS and
(X, Y, Z) order is :func:`~FetalHeadSegLib.core.io.image_from_lps_zyx`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from FetalHeadSegLib.core.errors import InputImageError
from FetalHeadSegLib.core.image import Image
from FetalHeadSegLib.core.io import ImageFrames, colour_to_grey, image_from_lps_zyx
from FetalHeadSegLib.core.spacing import SpacingSource

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

REGION_2D = 1
"""Region Spatial Format 0001H: a 2D image (tissue or flow)."""
REGION_TISSUE = 1
"""Region Data Type 0001H: tissue (B-mode)."""
UNIT_CM = 3
"""Physical Units X/Y Direction 0003H: cm, the only length unit the calibration has."""
MM_PER_CM = 10.0
UNIT_NAMES = {
    0: "none",
    1: "percent",
    2: "dB",
    3: "cm",
    4: "seconds",
    5: "hertz",
    6: "dB/s",
    7: "cm/s",
    8: "cm²",
    9: "cm²/s",
    10: "cm³",
    11: "cm³/s",
    12: "degrees",
}
REGION_FORMATS = {0: "none", 1: "2D", 2: "M-mode", 3: "spectral Doppler", 4: "waveform", 5: "graphics"}
PHOTOMETRIC_INTERPRETATIONS = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR")
"""What a native or pydicom-decoded file may use (JPEG 2000's YBR_ICT/YBR_RCT are decoded to RGB by pydicom)."""
SLICE_STEP_TOLERANCE = 0.01
"""Largest deviation of a frame from an even slice stack, relative to the slice step."""
SAME_POSITION_MM = 1e-3
"""Frames closer than this are at the same plane position (a cine)."""


@dataclass(frozen=True)
class _Region:
    """One item of the Sequence of Ultrasound Regions; bounds are inclusive pixel indices."""

    spatial_format: int
    data_type: int
    bounds: tuple[int, int, int, int]
    units: tuple[int, int]
    delta: tuple[float, float]

    def clipped(self, columns: int, rows: int) -> tuple[int, int, int, int]:
        """(min x, min y, max x, max y) inside an image of ``columns`` x ``rows`` pixels."""
        x0, y0, x1, y1 = self.bounds
        return max(x0, 0), max(y0, 0), min(x1, columns - 1), min(y1, rows - 1)

    def area_in(self, columns: int, rows: int) -> int:
        x0, y0, x1, y1 = self.clipped(columns, rows)
        return max(x1 - x0 + 1, 0) * max(y1 - y0 + 1, 0)


@dataclass(frozen=True)
class _Planes:
    """Frame geometry from Image Position/Orientation: LPS directions (columns: x, y, normal) and positions."""

    direction_lps: np.ndarray
    positions_lps: np.ndarray


def read_dicom(path: str | os.PathLike[str]) -> ImageFrames:
    """Read an ultrasound DICOM file as 2D frames, a cine loop or a 3D volume with its calibrated pixel size.

    Args:
        path: a DICOM Part 10 file (single-frame or multi-frame; greyscale, RGB, YBR or palette colour).

    Returns:
        The frames (cropped to the calibrated region, if any), where their pixel size came from, and whether they
        are the times of a cine. See the module documentation for the rules.

    Raises:
        InputImageError: not DICOM, no pixel data, a compression whose decoder plugin is not installed, an
            unsupported photometric interpretation, a calibration in units that are not lengths (seconds, Hz,
            cm/s, none, ...), no 2D region among several, or frames that are neither one plane nor an even stack.

    Example:
        >>> loop = read_dicom("cine.dcm")  # doctest: +SKIP
        >>> len(loop.frames), loop.frames[0].spacing_mm, loop.spacing_source.value  # doctest: +SKIP
        (24, (0.12, 0.12, 1.0), 'dicom_region')
    """
    file = Path(path)
    dataset = _read_dataset(file)
    pixels = _grey_pixels(dataset, file)
    frames, rows, columns = pixels.shape
    region = _calibrated_region(dataset, file, columns, rows)
    crop_xy = (0, 0)
    if region is not None:
        spacing_xy = _region_spacing_mm(region, file)
        source = SpacingSource.DICOM_REGION
        x0, y0, x1, y1 = region.clipped(columns, rows)
        pixels = pixels[:, y0 : y1 + 1, x0 : x1 + 1]
        crop_xy = (x0, y0)
        logger.debug("%s: cropped to the ultrasound region x %d-%d, y %d-%d", file, x0, x1, y0, y1)
    else:
        header = _header_spacing_mm(dataset)
        source = SpacingSource.NONE if header is None else SpacingSource.HEADER
        spacing_xy = header or (1.0, 1.0)
    planes = _plane_geometry(dataset, file, frames)
    origin_offset = np.array([crop_xy[0] * spacing_xy[0], crop_xy[1] * spacing_xy[1], 0.0])
    if frames > 1 and planes is not None and _is_stack(planes, file):
        return ImageFrames([_volume(pixels, spacing_xy, origin_offset, planes, file)], source, is_cine=False)
    images = [_frame(pixels[k], spacing_xy, origin_offset, planes, k, file) for k in range(frames)]
    return ImageFrames(images, source, is_cine=frames > 1)


def _read_dataset(file: Path) -> Dataset:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not file.is_file():
        raise InputImageError(f"{file}: no such file")
    try:
        dataset = pydicom.dcmread(file)
    except InvalidDicomError as err:
        raise InputImageError(f"{file}: not a DICOM file (no 'DICM' marker after the 128-byte preamble)") from err
    except (OSError, EOFError, ValueError) as err:
        raise InputImageError(f"{file}: cannot be read as DICOM ({err})") from err
    if "PixelData" not in dataset:
        raise InputImageError(f"{file}: the DICOM file holds no image (no Pixel Data element)")
    return dataset


def _check_decoder(dataset: Dataset, file: Path) -> None:
    """Refuse, in one line, a transfer syntax pydicom cannot decode here (unknown, or its plugins not installed)."""
    from pydicom.pixels import get_decoder

    syntax = getattr(dataset, "file_meta", {}).get("TransferSyntaxUID")
    if not syntax:
        raise InputImageError(f"{file}: the DICOM file meta information has no Transfer Syntax UID")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as err:
        raise InputImageError(f"{file}: pydicom cannot decode pixel data in transfer syntax {syntax}") from err
    if not decoder.is_available:
        plugins = "; ".join(decoder.missing_dependencies)
        raise InputImageError(
            f"{file}: the pixel data is compressed as {syntax.name}, whose decoder plugin is not installed ({plugins})"
        )


def _grey_pixels(dataset: Dataset, file: Path) -> np.ndarray:
    """All frames as grey values, shape (frames, rows, columns)."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array

    _check_decoder(dataset, file)
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in PHOTOMETRIC_INTERPRETATIONS:
        raise InputImageError(
            f"{file}: photometric interpretation {photometric or 'missing'} is not supported "
            f"(expected one of {', '.join(PHOTOMETRIC_INTERPRETATIONS)})"
        )
    try:
        # pydicom decompresses and converts YBR_FULL / YBR_FULL_422 to RGB, as Dataset.pixel_array does.
        array = pixel_array(dataset)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputImageError(f"{file}: the DICOM pixel data cannot be decoded ({message})") from err
    frames = int(dataset.get("NumberOfFrames") or 1)
    colour = int(dataset.get("SamplesPerPixel") or 1) > 1
    if frames == 1:
        array = array[np.newaxis]
    if photometric == "PALETTE COLOR":
        try:
            array, colour = apply_color_lut(array, dataset), True
        except (ValueError, AttributeError) as err:
            raise InputImageError(f"{file}: the palette colour lookup table cannot be used ({err})") from err
    if colour:  # frame by frame: a long colour cine would not fit in memory as float64
        return np.stack([colour_to_grey(frame) for frame in array])
    if photometric == "MONOCHROME1":
        array = _invert(array, dataset)
    if _has_modality_lut(dataset):
        array = apply_modality_lut(array, dataset)
    return array


def _invert(array: np.ndarray, dataset: Dataset) -> np.ndarray:
    """MONOCHROME1 to MONOCHROME2: swap the ends of the stored value range (pydicom has no helper for this)."""
    if int(dataset.get("PixelRepresentation", 0)) == 1:
        return np.invert(array)  # -1 - v maps [-2^(b-1), 2^(b-1) - 1] onto itself, reversed
    top = (1 << int(dataset.get("BitsStored") or array.dtype.itemsize * 8)) - 1
    return (top - array.astype(np.int64)).astype(array.dtype)


def _has_modality_lut(dataset: Dataset) -> bool:
    if "ModalityLUTSequence" in dataset:
        return True
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    return slope is not None and intercept is not None and (float(slope), float(intercept)) != (1.0, 0.0)


def _calibrated_region(dataset: Dataset, file: Path, columns: int, rows: int) -> _Region | None:
    """The 2D region (tissue first) covering most of the image, or None without a region calibration."""
    items = dataset.get("SequenceOfUltrasoundRegions")
    if not items:
        return None
    regions = [_region_from_item(item, file) for item in items]
    inside = [region for region in regions if region.area_in(columns, rows) > 0]
    planar = [region for region in inside if region.spatial_format == REGION_2D]
    candidates = [region for region in planar if region.data_type == REGION_TISSUE] or planar
    if not candidates:
        found = ", ".join(sorted({REGION_FORMATS.get(r.spatial_format, str(r.spatial_format)) for r in regions}))
        raise InputImageError(
            f"{file}: none of the ultrasound regions is a 2D image inside the frame (found: {found}); "
            "a B-mode frame is needed"
        )
    chosen = max(candidates, key=lambda region: region.area_in(columns, rows))  # the first of equals
    if len(regions) > 1:
        logger.info("%s: using ultrasound region %d of %d", file, regions.index(chosen) + 1, len(regions))
    return chosen


def _region_from_item(item: Dataset, file: Path) -> _Region:
    names = (
        "RegionSpatialFormat",
        "RegionDataType",
        "RegionLocationMinX0",
        "RegionLocationMinY0",
        "RegionLocationMaxX1",
        "RegionLocationMaxY1",
        "PhysicalUnitsXDirection",
        "PhysicalUnitsYDirection",
        "PhysicalDeltaX",
        "PhysicalDeltaY",
    )
    missing = [name for name in names if item.get(name) is None]
    if missing:
        raise InputImageError(f"{file}: an ultrasound region lacks {', '.join(missing)}")
    v = {name: item.get(name) for name in names}
    return _Region(
        spatial_format=int(v["RegionSpatialFormat"]),
        data_type=int(v["RegionDataType"]),
        bounds=(
            int(v["RegionLocationMinX0"]),
            int(v["RegionLocationMinY0"]),
            int(v["RegionLocationMaxX1"]),
            int(v["RegionLocationMaxY1"]),
        ),
        units=(int(v["PhysicalUnitsXDirection"]), int(v["PhysicalUnitsYDirection"])),
        delta=(float(v["PhysicalDeltaX"]), float(v["PhysicalDeltaY"])),
    )


def _region_spacing_mm(region: _Region, file: Path) -> tuple[float, float]:
    """The region's pixel size (x, y) in mm; only cm converts to mm."""
    wrong = [
        f"{axis} in {UNIT_NAMES.get(unit, f'unknown unit code {unit}')}"
        for axis, unit in zip("xy", region.units, strict=True)
        if unit != UNIT_CM
    ]
    if wrong:
        raise InputImageError(
            f"{file}: the ultrasound region's pixel size is not a length ({' and '.join(wrong)}; "
            "cm is needed to measure in mm)"
        )
    spacing = (abs(region.delta[0]) * MM_PER_CM, abs(region.delta[1]) * MM_PER_CM)
    if not all(np.isfinite(value) and value > 0 for value in spacing):
        raise InputImageError(
            f"{file}: the ultrasound region's pixel size {region.delta[0]} x {region.delta[1]} cm is not positive"
        )
    return spacing


def _header_spacing_mm(dataset: Dataset) -> tuple[float, float] | None:
    """(x, y) from Pixel Spacing or Imager Pixel Spacing, whose values are (row step, column step)."""
    values = (
        dataset.get("PixelSpacing")
        or _functional_value(dataset, 0, "PixelMeasuresSequence", "PixelSpacing")
        or dataset.get("ImagerPixelSpacing")
    )
    if not values or len(values) != 2:
        return None
    row_step, column_step = (float(value) for value in values)
    return column_step, row_step


def _functional_value(dataset: Dataset, frame: int, group: str, name: str) -> Any:
    """``name`` from functional group ``group`` of one frame: per-frame first, then shared (None when absent)."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    sources = [per_frame[frame]] if per_frame and frame < len(per_frame) else []
    shared = dataset.get("SharedFunctionalGroupsSequence")
    sources += [shared[0]] if shared else []
    for functional in sources:
        items = functional.get(group)
        if items and items[0].get(name) is not None:
            return items[0].get(name)
    return None


def _plane_geometry(dataset: Dataset, file: Path, frames: int) -> _Planes | None:
    """Direction and per-frame position from Plane Orientation/Position, patient or volume frame, if all present."""
    for orientation_group, orientation_name, position_group, position_name in (
        ("PlaneOrientationSequence", "ImageOrientationPatient", "PlanePositionSequence", "ImagePositionPatient"),
        (
            "PlaneOrientationVolumeSequence",
            "ImageOrientationVolume",
            "PlanePositionVolumeSequence",
            "ImagePositionVolume",
        ),
    ):
        orientations = [_functional_value(dataset, k, orientation_group, orientation_name) for k in range(frames)]
        positions = [_functional_value(dataset, k, position_group, position_name) for k in range(frames)]
        if orientation_name == "ImageOrientationPatient":  # classic objects keep them at the top level
            orientations = [value or dataset.get(orientation_name) for value in orientations]
            positions = [value or dataset.get(position_name) for value in positions]
        if all(value is not None and len(value) == 6 for value in orientations) and all(
            value is not None and len(value) == 3 for value in positions
        ):
            cosines = np.asarray(orientations, dtype=np.float64)
            if not np.allclose(cosines, cosines[0], atol=1e-4):
                raise InputImageError(f"{file}: the frames have different orientations; cannot stack them")
            x_axis, y_axis = cosines[0, :3], cosines[0, 3:]
            direction = np.column_stack([x_axis, y_axis, np.cross(x_axis, y_axis)])
            return _Planes(direction, np.asarray(positions, dtype=np.float64))
    return None


def _is_stack(planes: _Planes, file: Path) -> bool:
    """True for an even stack along the normal, False for frames all at one position (a cine)."""
    offsets = planes.positions_lps - planes.positions_lps[0]
    if np.all(np.linalg.norm(offsets, axis=1) < SAME_POSITION_MM):
        return False
    normal = planes.direction_lps[:, 2]
    along = offsets @ normal
    step = along[-1] / (len(along) - 1)
    even = along - step * np.arange(len(along))
    across = offsets - np.outer(along, normal)
    tolerance = SLICE_STEP_TOLERANCE * abs(step)
    if abs(step) < SAME_POSITION_MM or np.abs(even).max() > tolerance or np.abs(across).max() > tolerance:
        steps = np.diff(along)
        raise InputImageError(
            f"{file}: its {len(along)} frames are neither one plane nor an evenly spaced stack "
            f"(steps {steps.min():.4g} to {steps.max():.4g} mm along the normal, up to "
            f"{np.linalg.norm(across, axis=1).max():.4g} mm sideways)"
        )
    return True


def _frame(
    pixels: np.ndarray,
    spacing_xy: tuple[float, float],
    origin_offset: np.ndarray,
    planes: _Planes | None,
    index: int,
    file: Path,
) -> Image:
    """One 2D frame, shape (rows, columns), as a single-slice image."""
    if planes is None:
        return image_from_lps_zyx(pixels, spacing_xy, origin_offset[:2], np.eye(2), source=str(file))
    origin = planes.positions_lps[index] + planes.direction_lps @ origin_offset
    spacing = (*spacing_xy, 1.0)
    return image_from_lps_zyx(pixels[np.newaxis], spacing, origin, planes.direction_lps, source=str(file))


def _volume(
    pixels: np.ndarray, spacing_xy: tuple[float, float], origin_offset: np.ndarray, planes: _Planes, file: Path
) -> Image:
    """An even stack of frames, shape (frames, rows, columns), as one 3D image in acquisition order."""
    along = (planes.positions_lps[-1] - planes.positions_lps[0]) @ planes.direction_lps[:, 2]
    step = along / (len(planes.positions_lps) - 1)
    direction = planes.direction_lps.copy()
    direction[:, 2] *= np.sign(step)
    origin = planes.positions_lps[0] + planes.direction_lps @ origin_offset
    spacing = (*spacing_xy, abs(step))
    logger.debug("%s: %d frames read as a volume, slice step %.4g mm", file, len(pixels), step)
    return image_from_lps_zyx(pixels, spacing, origin, direction, source=str(file))
