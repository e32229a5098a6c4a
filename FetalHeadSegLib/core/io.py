"""Reading and writing images with exact geometry (NIfTI, NRRD, MetaImage, PNG/JPEG/BMP/TIFF, ultrasound DICOM).

SimpleITK reads and writes every format except DICOM, which :mod:`FetalHeadSegLib.core.dicom` reads with pydicom
(files named ``.dcm``/``.dicom`` or holding the ``DICM`` marker at byte 128). This module holds the one conversion
between (z, y, x) arrays in the LPS frame, as ITK and DICOM store them, and :class:`~FetalHeadSegLib.core.image.Image`
(arrays in (X, Y, Z) order, RAS frame): :func:`image_from_lps_zyx` (used by :func:`image_from_sitk` and the DICOM
reader) and :func:`image_to_sitk`.

:func:`read_image_frames` reads any supported file as a list of images and says where their pixel size came from;
:func:`read_image` reads one image. 2D raster formats carry no trustworthy pixel size; pass ``spacing_mm`` (for
HC18, the CSV's pixel size). Colour 2D frames are converted to grey (Rec. 601 luminance) in every format.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from FetalHeadSegLib.core.atomic import atomic_output_dir
from FetalHeadSegLib.core.errors import InputImageError, OutputError
from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.core.spacing import SpacingSource, apply_spacing

if TYPE_CHECKING:
    import SimpleITK as sitk

logger = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
SUPPORTED_SUFFIXES = VOLUME_SUFFIXES + RASTER_SUFFIXES + DICOM_SUFFIXES
DICOM_MAGIC_OFFSET = 128
"""A DICOM Part 10 file holds ``b"DICM"`` after a 128-byte preamble."""

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


@dataclass(frozen=True)
class ImageFrames:
    """The images held by one file, with where their pixel size came from.

    Attributes:
        frames: one image for a 2D frame or a 3D volume; one single-slice image per frame for a cine (all on the
            same grid).
        spacing_source: ``HEADER`` for NIfTI/NRRD/MetaImage and DICOM Pixel Spacing, ``DICOM_REGION`` for a DICOM
            ultrasound region calibration, ``NONE`` for raster formats and uncalibrated DICOM (1 mm per pixel:
            :func:`FetalHeadSegLib.core.spacing.choose_spacing` then refuses the file or measures in pixel units).
        is_cine: the frames are successive times of one 2D view (an ultrasound cine loop), not one image.
    """

    frames: list[Image]
    spacing_source: SpacingSource
    is_cine: bool

    def __post_init__(self) -> None:
        if not self.frames:
            raise ValueError("ImageFrames needs at least one image")


def is_dicom_path(path: str | os.PathLike[str]) -> bool:
    """True for files named ``.dcm``/``.dicom`` and for files holding the DICOM ``DICM`` marker at byte 128.

    Example:
        >>> is_dicom_path("IM_0001.dcm")
        True
    """
    file = Path(path)
    if file.name.lower().endswith(DICOM_SUFFIXES):
        return True
    if not file.is_file():
        return False
    try:
        with file.open("rb") as stream:
            stream.seek(DICOM_MAGIC_OFFSET)
            return stream.read(4) == b"DICM"
    except OSError:
        return False


def read_image_frames(path: str | os.PathLike[str]) -> ImageFrames:
    """Read every image a file holds, for all supported formats, with the source of its pixel size.

    Args:
        path: a NIfTI, NRRD, MetaImage, PNG, JPEG, BMP, TIFF or DICOM file.

    Returns:
        Raster files: one frame, ``SpacingSource.NONE``. NIfTI/NRRD/MetaImage: one image,
        ``SpacingSource.HEADER``. DICOM: see :func:`FetalHeadSegLib.core.dicom.read_dicom` (a cine gives one 2D frame
        per time point).

    Raises:
        InputImageError: missing or unreadable file, or an image that cannot be used (see :func:`read_image`).

    Example:
        >>> loop = read_image_frames("cine.dcm")  # doctest: +SKIP
        >>> len(loop.frames), loop.is_cine, loop.spacing_source.value  # doctest: +SKIP
        (24, True, 'dicom_region')
    """
    file = _existing_file(path)
    if is_dicom_path(file):
        from FetalHeadSegLib.core.dicom import read_dicom

        return read_dicom(file)
    suffix = image_suffix(file)
    source = SpacingSource.NONE if suffix in RASTER_SUFFIXES else SpacingSource.HEADER
    return ImageFrames([_read_with_sitk(file, suffix)], source, is_cine=False)


def read_image(path: str | os.PathLike[str], spacing_mm: Sequence[float] | float | None = None) -> Image:
    """Read a 2D or 3D single-channel image with its geometry.

    Args:
        path: a NIfTI, NRRD, MetaImage, PNG, JPEG, BMP, TIFF or DICOM file.
        spacing_mm: optional voxel size in mm replacing the file's: one value (isotropic), two (a 2D frame's
            column and row size) or three. Orientation and origin are kept.

    Returns:
        The image; 2D files become single-slice images of shape (X, Y, 1), and so do frames stored as 2-4
        identical slices (grey written as colour channels, e.g. PSFHS). Colour 2D frames are converted to grey
        (luminance); colour volumes are refused. A DICOM file gives its one frame or its 3D volume.

    Raises:
        InputImageError: missing, unreadable, 4D or multi-channel file, a DICOM cine (several frames; use
            :func:`read_image_frames`), or invalid spacing.

    Example:
        >>> image = read_image("000_HC.png", spacing_mm=0.069)  # doctest: +SKIP
        >>> image.shape, image.spacing_mm  # doctest: +SKIP
        ((800, 540, 1), (0.069, 0.069, 1.0))
    """
    file = _existing_file(path)
    if is_dicom_path(file):
        frames = read_image_frames(file)
        if len(frames.frames) > 1:
            raise InputImageError(
                f"{file}: is a cine of {len(frames.frames)} frames; read it with read_image_frames "
                "(or the fetalheadseg command line, which segments every frame)"
            )
        image = frames.frames[0]
    else:
        image = _read_with_sitk(file, image_suffix(file))
    if spacing_mm is not None:
        image = apply_spacing(image, spacing_mm)
    logger.debug("read %s: shape %s, spacing %s mm", file, image.shape, image.spacing_mm)
    return image


def _existing_file(path: str | os.PathLike[str]) -> Path:
    file = Path(path)
    if not file.exists():
        raise InputImageError(f"{file}: no such file")
    if file.is_dir():
        raise InputImageError(f"{file}: is a folder, not an image file")
    return file


def _read_with_sitk(file: Path, suffix: str) -> Image:
    import SimpleITK as sitk

    try:
        itk_image = sitk.ReadImage(str(file))
    except RuntimeError as err:
        raise InputImageError(f"{file}: cannot be read as an image (corrupt file or unknown format)") from err
    image = image_from_sitk(itk_image, source=str(file), raster=suffix in RASTER_SUFFIXES)
    return _frame_from_channel_slices(image, file)


def _frame_from_channel_slices(image: Image, source: Path) -> Image:
    """A frame stored as 2-4 identical slices (grey as RGB channels, as in PSFHS) becomes a single-slice image."""
    array = image.array
    if 2 <= array.shape[2] <= 4 and all(
        np.array_equal(array[:, :, 0], array[:, :, k]) for k in range(1, array.shape[2])
    ):
        logger.info("%s: %d identical slices read as one 2D frame", source, array.shape[2])
        return Image(np.ascontiguousarray(array[:, :, :1]), image.ijk_to_ras)
    return image


def image_from_sitk(itk_image: sitk.Image, source: str = "image", raster: bool = False) -> Image:
    """Convert a SimpleITK image (LPS, (z, y, x) array) to an :class:`Image` (RAS, (X, Y, Z) array).

    Args:
        itk_image: a 2D or 3D SimpleITK image.
        source: name used in error messages (the file path).
        raster: the image comes from a 2D raster format: colour with any number of components is converted to
            grey. Otherwise colour (3 or 4 components: RGB, RGBA) is converted only for 2D frames.

    Raises:
        InputImageError: the image is 4D or a volume with several components per voxel.
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
        is_frame = dimension == 2 or itk_image.GetSize()[2] == 1
        if not (raster or (is_frame and components in (3, 4))):
            raise InputImageError(
                f"{source}: has {components} components per voxel; a single-channel (grey-scale) image is needed "
                "(colour is accepted for 2D frames only)"
            )
        array = colour_to_grey(array)
    return image_from_lps_zyx(
        array, itk_image.GetSpacing(), itk_image.GetOrigin(), itk_image.GetDirection(), source=source
    )


def image_from_lps_zyx(
    array: np.ndarray,
    spacing_mm: Sequence[float] | np.ndarray,
    origin_lps: Sequence[float] | np.ndarray,
    direction_lps: Sequence[float] | np.ndarray,
    source: str = "image",
) -> Image:
    """Build an :class:`Image` from an array and geometry stored the ITK and DICOM way.

    Args:
        array: voxel values in (row, column) order for a 2D frame or (slice, row, column) order for a volume,
            i.e. (y, x) or (z, y, x).
        spacing_mm: voxel size along x, y (and z) in mm; a 2D frame gets 1 mm across its plane.
        origin_lps: LPS position (mm) of the first voxel, 2 or 3 values like the spacing.
        direction_lps: 2x2 or 3x3 matrix (or its values row by row) whose columns are the LPS directions of the
            x, y (and z) axes.
        source: name used in error messages (the file path).

    Returns:
        The image, array in (X, Y, Z) order and ``ijk_to_ras`` in the RAS frame.

    Raises:
        InputImageError: the spacing is not finite and positive, or the geometry is degenerate.

    Example:
        >>> frame = image_from_lps_zyx(np.zeros((4, 6)), (0.2, 0.3), (0.0, 0.0), np.eye(2))
        >>> frame.shape, frame.ijk_to_ras.diagonal().tolist()
        ((6, 4, 1), [-0.2, -0.3, 1.0, 1.0])
    """
    dimension = array.ndim
    spacing = [float(v) for v in spacing_mm]
    origin = [float(v) for v in origin_lps]
    direction = np.asarray(direction_lps, dtype=np.float64).reshape(dimension, dimension)
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
    if suffix in DICOM_SUFFIXES:
        raise OutputError(f"{target}: writing DICOM is not supported; use .nii.gz, .nrrd, .mha or .png")
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


def colour_to_grey(array: np.ndarray) -> np.ndarray:
    """Grey values from an (..., C) colour array: the first channel when all agree, else Rec. 601 luminance.

    The first three channels are read as R, G, B (a fourth, alpha, is ignored); with fewer than three channels
    (grey plus alpha) the first is the grey value. Integer arrays keep their type (rounded, clipped).

    Example:
        >>> colour_to_grey(np.array([[255, 0, 0], [7, 7, 7]], dtype=np.uint8)).tolist()
        [76, 7]
    """
    colour = array[..., :3]
    if colour.shape[-1] < 3 or np.all(colour == colour[..., :1]):
        return np.ascontiguousarray(colour[..., 0])
    weights = np.array([0.299, 0.587, 0.114])
    grey = colour.astype(np.float64) @ weights
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        grey = np.clip(np.rint(grey), info.min, info.max)
    return grey.astype(array.dtype)
