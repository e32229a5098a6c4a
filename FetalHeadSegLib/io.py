"""Reading and writing images with exact geometry (NIfTI, NRRD, MetaImage, PNG/JPEG/BMP/TIFF).

All format work is done by SimpleITK. This module holds the one conversion between ITK images (arrays in
(z, y, x) order, LPS frame) and :class:`~FetalHeadSegLib.image.Image` (arrays in (X, Y, Z) order, RAS frame):
:func:`image_from_sitk` and :func:`image_to_sitk`.

2D raster formats carry no trustworthy pixel size; pass ``spacing_mm`` (for HC18, the CSV's pixel size).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from FetalHeadSegLib.atomic import atomic_output_dir
from FetalHeadSegLib.errors import InputImageError, OutputError
from FetalHeadSegLib.image import Image, make_ijk_to_ras

if TYPE_CHECKING:
    import SimpleITK as sitk

logger = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SUPPORTED_SUFFIXES = VOLUME_SUFFIXES + RASTER_SUFFIXES

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse


def image_suffix(path: str | os.PathLike[str]) -> str:
    """The format suffix of ``path`` in lower case (``.nii.gz`` and ``.seg.nrrd`` count as one suffix).

    Raises:
        InputImageError: the suffix is not a supported image format.
    """
    name = Path(path).name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    supported = ", ".join(SUPPORTED_SUFFIXES)
    raise InputImageError(f"{path}: not a supported image file name (expected one of {supported})")


def is_raster_path(path: str | os.PathLike[str]) -> bool:
    """True for 2D raster formats (PNG, JPEG, BMP, TIFF), which carry no reliable pixel size."""
    return image_suffix(path) in RASTER_SUFFIXES


def parse_spacing(values: Sequence[float] | float) -> tuple[float, ...]:
    """Validate 1 to 3 user-given spacings (mm); one value means isotropic.

    Raises:
        InputImageError: a value is not a finite positive number, or there are more than 3.
    """
    spacing = (float(values),) if isinstance(values, (int, float)) else tuple(float(v) for v in values)
    if not 1 <= len(spacing) <= 3:
        raise InputImageError(f"spacing needs 1 to 3 values in mm, got {len(spacing)}")
    for value in spacing:
        if not np.isfinite(value) or value <= 0:
            raise InputImageError(f"spacing must be finite and positive (mm), got {value}")
    return spacing


def read_image(path: str | os.PathLike[str], spacing_mm: Sequence[float] | float | None = None) -> Image:
    """Read a 2D or 3D single-channel image with its geometry.

    Args:
        path: a NIfTI, NRRD, MetaImage, PNG, JPEG, BMP or TIFF file.
        spacing_mm: optional voxel size in mm replacing the file's: one value (isotropic), two (a 2D frame's
            column and row size) or three. Orientation and origin are kept.

    Returns:
        The image; 2D files become single-slice images of shape (X, Y, 1), and so do frames stored as 2-4
        identical slices (grey written as colour channels, e.g. PSFHS). Colour raster images are converted to
        grey (luminance); colour volumes are refused.

    Raises:
        InputImageError: missing, unreadable, 4D or multi-channel file, or invalid spacing.

    Example:
        >>> image = read_image("000_HC.png", spacing_mm=0.069)  # doctest: +SKIP
        >>> image.shape, image.spacing_mm  # doctest: +SKIP
        ((800, 540, 1), (0.069, 0.069, 1.0))
    """
    import SimpleITK as sitk

    file = Path(path)
    if not file.exists():
        raise InputImageError(f"{file}: no such file")
    if file.is_dir():
        raise InputImageError(f"{file}: is a folder, not an image file")
    suffix = image_suffix(file)
    try:
        itk_image = sitk.ReadImage(str(file))
    except RuntimeError as err:
        raise InputImageError(f"{file}: cannot be read as an image (corrupt file or unknown format)") from err
    image = image_from_sitk(itk_image, source=str(file), raster=suffix in RASTER_SUFFIXES)
    image = _frame_from_channel_slices(image, file)
    if spacing_mm is not None:
        image = _override_spacing(image, parse_spacing(spacing_mm))
    logger.debug("read %s: shape %s, spacing %s mm", file, image.shape, image.spacing_mm)
    return image


def _frame_from_channel_slices(image: Image, source: Path) -> Image:
    """A frame stored as 2-4 identical slices (grey as RGB channels, as in PSFHS) becomes a single-slice image."""
    array = image.array
    if 2 <= array.shape[2] <= 4 and all(
        np.array_equal(array[:, :, 0], array[:, :, k]) for k in range(1, array.shape[2])
    ):
        logger.info("%s: %d identical slices read as one 2D frame", source, array.shape[2])
        return Image(np.ascontiguousarray(array[:, :, :1]), image.ijk_to_ras)
    return image


def _override_spacing(image: Image, spacing: tuple[float, ...]) -> Image:
    current = image.spacing_mm
    if len(spacing) == 1:
        new = (spacing[0], spacing[0], current[2] if image.is_2d else spacing[0])
    elif len(spacing) == 2:
        if not image.is_2d:
            raise InputImageError("two spacing values are for 2D frames; give one or three for a volume")
        new = (spacing[0], spacing[1], current[2])
    else:
        new = (spacing[0], spacing[1], spacing[2])
    return image.with_spacing(new)


def image_from_sitk(itk_image: sitk.Image, source: str = "image", raster: bool = False) -> Image:
    """Convert a SimpleITK image (LPS, (z, y, x) array) to an :class:`Image` (RAS, (X, Y, Z) array).

    Args:
        itk_image: a 2D or 3D SimpleITK image.
        source: name used in error messages (the file path).
        raster: the image comes from a 2D raster format; colour is converted to grey instead of refused.

    Raises:
        InputImageError: the image is 4D or has several components per voxel.
    """
    import SimpleITK as sitk

    dimension = itk_image.GetDimension()
    if dimension == 4 and itk_image.GetSize()[3] == 1:
        itk_image = itk_image[:, :, :, 0]
        dimension = 3
    if dimension not in (2, 3):
        raise InputImageError(
            f"{source}: {dimension}D images (time series or multi-channel) are not supported; extract one volume"
        )
    array = sitk.GetArrayFromImage(itk_image)
    components = itk_image.GetNumberOfComponentsPerPixel()
    if components > 1:
        if not raster:
            raise InputImageError(
                f"{source}: has {components} components per voxel; a single-channel (grey-scale) image is needed"
            )
        array = _to_grey(array)
    spacing = list(itk_image.GetSpacing())
    origin = list(itk_image.GetOrigin())
    direction = np.asarray(itk_image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)
    if dimension == 2:
        array = array[np.newaxis]
        spacing.append(1.0)
        origin.append(0.0)
        direction = np.block([[direction, np.zeros((2, 1))], [np.zeros((1, 2)), np.ones((1, 1))]])
    if not (np.all(np.isfinite(spacing)) and min(spacing) > 0):
        raise InputImageError(f"{source}: the file's voxel spacing {spacing} is not finite and positive")
    ijk_to_lps = make_ijk_to_ras(spacing, origin, direction)
    return Image(np.ascontiguousarray(array.transpose(2, 1, 0)), _LPS_FROM_RAS @ ijk_to_lps)


def image_to_sitk(image: Image, as_2d: bool = False) -> sitk.Image:
    """Convert an :class:`Image` to a SimpleITK image (the inverse of :func:`image_from_sitk`).

    Args:
        image: the image.
        as_2d: make a 2D ITK image from a single-slice image (needed for PNG/JPEG/BMP/TIFF output).
    """
    import SimpleITK as sitk

    ijk_to_lps = _LPS_FROM_RAS @ image.ijk_to_ras
    spacing = np.asarray(image.spacing_mm)
    direction = ijk_to_lps[:3, :3] / spacing[np.newaxis, :]
    origin = ijk_to_lps[:3, 3]
    if as_2d:
        if not image.is_2d:
            raise ValueError("only single-slice images can be written as 2D")
        itk_image = sitk.GetImageFromArray(np.ascontiguousarray(image.array[:, :, 0].T))
        itk_image.SetSpacing(spacing[:2].tolist())
        itk_image.SetOrigin(origin[:2].tolist())
        itk_image.SetDirection(direction[:2, :2].ravel().tolist())
        return itk_image
    itk_image = sitk.GetImageFromArray(np.ascontiguousarray(image.array.transpose(2, 1, 0)))
    itk_image.SetSpacing(spacing.tolist())
    itk_image.SetOrigin(origin.tolist())
    itk_image.SetDirection(direction.ravel().tolist())
    return itk_image


def write_image(image: Image, path: str | os.PathLike[str], compress: bool = True) -> Path:
    """Write an image atomically, keeping spacing, origin and direction.

    Single-slice images written to a raster format (PNG, ...) become 2D files, which hold no geometry and need
    8-bit or 16-bit unsigned integer values. Other formats keep all three axes.

    Returns:
        The path written.

    Raises:
        OutputError: the file cannot be written.
    """
    import SimpleITK as sitk

    target = Path(path)
    try:
        suffix = image_suffix(target)
    except InputImageError as err:
        raise OutputError(str(err)) from err
    raster = suffix in RASTER_SUFFIXES
    if raster and image.array.dtype not in (np.uint8, np.uint16):
        raise OutputError(f"{target}: raster formats need uint8 or uint16 values, got {image.array.dtype}")
    itk_image = image_to_sitk(image, as_2d=raster)
    with atomic_output_dir(target.parent) as staging:
        try:
            sitk.WriteImage(itk_image, str(staging / target.name), useCompression=compress and not raster)
        except RuntimeError as err:
            raise OutputError(f"{target}: SimpleITK could not write the image") from err
    return target


def write_labelmap(labels: np.ndarray, reference: Image, path: str | os.PathLike[str]) -> Path:
    """Write an integer label map on the grid of ``reference`` (uint8 when the labels fit, else uint16).

    Raises:
        ValueError: ``labels`` is not on the reference grid or holds negative values.
        OutputError: the file cannot be written.
    """
    if labels.shape != reference.shape:
        raise ValueError(f"label map shape {labels.shape} does not match the reference grid {reference.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("label values must be non-negative")
    dtype = np.uint8 if labels.size == 0 or labels.max() <= 255 else np.uint16
    return write_image(reference.with_array(labels.astype(dtype)), path)


def _to_grey(array: np.ndarray) -> np.ndarray:
    """Grey values from an (…, C) colour array: the first channel when all agree, else Rec. 601 luminance."""
    colour = array[..., :3]
    if colour.shape[-1] == 1 or np.all(colour == colour[..., :1]):
        return np.ascontiguousarray(colour[..., 0])
    weights = np.array([0.299, 0.587, 0.114])
    grey = colour.astype(np.float64) @ weights
    if np.issubdtype(array.dtype, np.integer):
        grey = np.clip(np.rint(grey), 0, np.iinfo(array.dtype).max)
    return grey.astype(array.dtype)
