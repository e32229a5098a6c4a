"""Preprocessing shared by inference and training: resampling, intensity normalisation, padding.

One implementation is used by both, so a model sees at inference exactly what it saw in training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from FetalHeadSegLib.core.errors import InputImageError
from FetalHeadSegLib.core.image import Image, make_ijk_to_ras

MIN_SPACING_MM, MAX_SPACING_MM = 0.005, 20.0
"""Voxel sizes outside this range are taken for a header error rather than an ultrasound image."""
MAX_LABEL_VALUES = 8
"""An image with this many distinct values or fewer is a label map or a mask (a phantom's ``_labels`` or ``_head``
file, an HC18 ``_Annotation.png``), not ultrasound, whose speckle gives it hundreds."""
_VALUE_SAMPLE = 1_000_000
"""How many voxels, evenly strided, decide that an image has more distinct values than a label map."""


@dataclass(frozen=True)
class PreprocessingConfig:
    """How an image is prepared for a network.

    Attributes:
        target_spacing_mm: resample to this voxel size (in-plane only for 2D frames); None keeps the grid.
        max_size: alternatively, resample isotropically so the image's largest extent spans this many voxels
            (the field of view, not the voxel size, is what the network learns); None keeps the grid.
        clip_percentiles: clip intensities to these percentiles before min-max scaling to [0, 1].
        pad_multiple: pad every spatial axis to a multiple of this (8 for three poolings).
    """

    target_spacing_mm: tuple[float, ...] | None = None
    max_size: int | None = None
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5)
    pad_multiple: int = 8

    def __post_init__(self) -> None:
        if self.target_spacing_mm is not None and self.max_size is not None:
            raise ValueError("give target_spacing_mm or max_size, not both")
        if self.max_size is not None and self.max_size < self.pad_multiple:
            raise ValueError(f"max_size must be at least pad_multiple ({self.pad_multiple})")
        if self.pad_multiple < 1:
            raise ValueError("pad_multiple must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessingConfig:
        spacing = data.get("target_spacing_mm")
        clip = data.get("clip_percentiles")
        return cls(
            target_spacing_mm=None if spacing is None else tuple(float(v) for v in spacing),
            max_size=None if data.get("max_size") is None else int(data["max_size"]),
            clip_percentiles=None if clip is None else (float(clip[0]), float(clip[1])),
            pad_multiple=int(data.get("pad_multiple", 8)),
        )


def check_image(image: Image, source: str = "the image") -> None:
    """Refuse images no segmentation can be made of: NaN/infinite or constant values, absurd spacing.

    Raises:
        InputImageError: with the problem and ``source`` in the message.
    """
    spacing = image.spacing_mm[:2] if image.is_2d else image.spacing_mm
    if min(spacing) < MIN_SPACING_MM or max(spacing) > MAX_SPACING_MM:
        raise InputImageError(
            f"{source}: voxel spacing {tuple(round(s, 4) for s in spacing)} mm is outside "
            f"{MIN_SPACING_MM}-{MAX_SPACING_MM} mm; check the header or give --spacing"
        )
    values = image.array
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        raise InputImageError(f"{source}: holds NaN or infinite values")
    if values.min() == values.max():
        raise InputImageError(f"{source}: every voxel has the same value ({values.min()}): nothing to segment")
    distinct = few_distinct_values(values, MAX_LABEL_VALUES)
    if distinct is not None:
        shown = ", ".join(f"{value:g}" for value in distinct)
        raise InputImageError(
            f"{source}: holds only {distinct.size} distinct values ({shown}): "
            "a label map or mask, not an ultrasound image"
        )


def few_distinct_values(values: np.ndarray, limit: int) -> np.ndarray | None:
    """The sorted distinct values of ``values`` when there are at most ``limit`` of them, else None.

    An evenly strided sample of :data:`_VALUE_SAMPLE` voxels settles an ultrasound image in milliseconds; only
    an image whose sample has few values is read whole.

    Example:
        >>> few_distinct_values(np.array([0, 2, 2, 0, 1]), 8)
        array([0, 1, 2])
        >>> few_distinct_values(np.arange(100), 8) is None
        True
    """
    flat = values.reshape(-1)
    if np.unique(flat[:: max(1, flat.size // _VALUE_SAMPLE)]).size > limit:
        return None
    distinct = np.unique(flat)
    return distinct if distinct.size <= limit else None


def working_spacing(image: Image, config: PreprocessingConfig) -> tuple[float, float, float] | None:
    """The voxel size the network works at, or None to keep the image's grid."""
    if config.target_spacing_mm is not None:
        target = config.target_spacing_mm
        if image.is_2d:
            return float(target[0]), float(target[1] if len(target) > 1 else target[0]), image.spacing_mm[2]
        values = tuple(float(v) for v in target) * (3 if len(target) == 1 else 1)
        return values[0], values[1], values[2]
    if config.max_size is not None:
        axes = 2 if image.is_2d else 3
        extent = max(n * s for n, s in zip(image.shape[:axes], image.spacing_mm[:axes], strict=True))
        step = extent / config.max_size
        return step, step, image.spacing_mm[2] if image.is_2d else step
    return None


def resample(image: Image, spacing_mm: tuple[float, float, float], linear: bool = True) -> Image:
    """Resample onto a grid of ``spacing_mm`` covering the same physical box (SimpleITK; corner-aligned).

    Returns float32 values for linear interpolation, the input type for nearest neighbour.
    """
    import SimpleITK as sitk

    from FetalHeadSegLib.core.io import image_from_sitk, image_to_sitk

    old_spacing = np.asarray(image.spacing_mm)
    new_spacing = np.asarray(spacing_mm, dtype=np.float64)
    size = np.maximum(1, np.rint(np.asarray(image.shape) * old_spacing / new_spacing)).astype(int)
    if image.is_2d:
        size[2], new_spacing[2] = 1, old_spacing[2]
    direction = image.direction_ras
    origin = image.origin_ras + direction @ ((new_spacing - old_spacing) / 2.0)
    target = Image(
        np.zeros(tuple(int(n) for n in size), dtype=np.uint8), make_ijk_to_ras(new_spacing, origin, direction)
    )
    source = image_to_sitk(image.with_array(image.array.astype(np.float32) if linear else image.array))
    reference = image_to_sitk(target)
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    resampled = sitk.Resample(source, reference, sitk.Transform(), interpolator, 0.0)
    return image_from_sitk(resampled)


def resample_like(image: Image, reference: Image, linear: bool = True, extrapolate: bool = False) -> Image:
    """Resample ``image`` onto exactly the grid of ``reference`` (SimpleITK).

    Points of ``reference`` outside ``image``'s extent get 0, or with ``extrapolate`` the value of the nearest voxel
    (SimpleITK's nearest-neighbour extrapolator).
    """
    import SimpleITK as sitk

    from FetalHeadSegLib.core.io import image_from_sitk, image_to_sitk

    source = image_to_sitk(image.with_array(image.array.astype(np.float32) if linear else image.array))
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    resampled = sitk.Resample(
        source, image_to_sitk(reference), sitk.Transform(), interpolator, 0.0, source.GetPixelID(), extrapolate
    )
    return image_from_sitk(resampled)


INTENSITY_LEVELS = 255
"""Network inputs (image and context channels) take 256 levels in [0, 1]: ultrasound is 8-bit data, and the
training cache stores exactly these values, so training and inference feed the networks identical numbers."""


def quantise_unit(values: np.ndarray) -> np.ndarray:
    """Round [0, 1] values to the 256 input levels (float32)."""
    return np.asarray(np.rint(np.clip(values, 0.0, 1.0) * INTENSITY_LEVELS) / INTENSITY_LEVELS, dtype=np.float32)


def to_working_grid(image: Image, config: PreprocessingConfig) -> Image:
    """The image as the first network sees it, before padding: on the working grid (resampled when the config
    asks), clipped, min-max normalised and quantised to the input levels. Training caches exactly this."""
    spacing = working_spacing(image, config)
    working = resample(image, spacing) if spacing is not None else image
    return working.with_array(quantise_unit(normalise(working.array, config.clip_percentiles)))


def normalise(values: np.ndarray, clip_percentiles: tuple[float, float] | None) -> np.ndarray:
    """Clip to percentiles (optional) and scale to [0, 1], float32 (``method.md`` §1.2: min-max per volume)."""
    data = values.astype(np.float32)
    if clip_percentiles is not None:
        low, high = np.percentile(data, clip_percentiles)
    else:
        low, high = float(data.min()), float(data.max())
    if high <= low:
        low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros_like(data)
    return np.asarray(np.clip((data - low) / (high - low), 0.0, 1.0), dtype=np.float32)


@dataclass(frozen=True)
class Padding:
    """Zero padding of a (X, Y, Z) array to multiples: ``before`` and ``after`` per axis."""

    before: tuple[int, int, int]
    after: tuple[int, int, int]

    def crop(self, array: np.ndarray) -> np.ndarray:
        """Undo the padding on the last three axes of ``array``."""
        slices = tuple(
            slice(b, array.shape[-3 + axis] - a)
            for axis, (b, a) in enumerate(zip(self.before, self.after, strict=True))
        )
        index: tuple[Any, ...] = (Ellipsis, *slices)
        return array[index]

    def pad(self, array: np.ndarray) -> np.ndarray:
        """Apply the same zero padding to the last three axes of another array on the unpadded grid."""
        widths = [(0, 0)] * (array.ndim - 3) + list(zip(self.before, self.after, strict=True))
        return np.pad(array, widths)


def pad_to_multiple(array: np.ndarray, multiple: int, is_2d: bool) -> tuple[np.ndarray, Padding]:
    """Pad (X, Y, Z) symmetrically with zeros so each axis (X, Y only for 2D frames) is a multiple.

    Example: a 100x120x90 volume with multiple 8 becomes 104x120x96.
    """
    before, after = [0, 0, 0], [0, 0, 0]
    for axis in range(2 if is_2d else 3):
        total = int(math.ceil(array.shape[axis] / multiple)) * multiple - array.shape[axis]
        before[axis], after[axis] = total // 2, total - total // 2
    padded = np.pad(array, list(zip(before, after, strict=True)))
    return padded, Padding((before[0], before[1], before[2]), (after[0], after[1], after[2]))


@dataclass(frozen=True)
class Prepared:
    """An image made ready for a cascade, and the way back to its grid.

    Attributes:
        image: the input image.
        working: the image on the working grid, normalised and quantised (:func:`to_working_grid`).
        values: ``working``'s values padded to the cascade's size multiple, shape (X', Y', Z').
        padding: the padding added.
    """

    image: Image
    working: Image
    values: np.ndarray
    padding: Padding

    def restore(self, channels: np.ndarray) -> np.ndarray:
        """(C, X', Y', Z') arrays on the padded working grid -> (C, X, Y, Z) on the input grid (crop, then
        linear resampling back when the working grid differs from the input's).

        The working grid covers the input's box to within its rounding: where the input's outermost voxels lie
        beyond the working grid's, they take its nearest values rather than none (every class 0).
        """
        cropped = self.padding.crop(channels)
        if self.working.shape == self.image.shape and np.allclose(self.working.ijk_to_ras, self.image.ijk_to_ras):
            return np.asarray(cropped, dtype=np.float32)
        return np.stack(
            [resample_like(self.working.with_array(channel), self.image, extrapolate=True).array for channel in cropped]
        ).astype(np.float32)


def prepare(image: Image, config: PreprocessingConfig, size_multiple: int) -> Prepared:
    """Working grid, normalisation, quantisation and padding to ``size_multiple`` (the engine's first stage)."""
    working = to_working_grid(image, config)
    values, padding = pad_to_multiple(working.array, size_multiple, image.is_2d)
    return Prepared(image, working, np.asarray(values, dtype=np.float32), padding)


def cascade_size_multiple(pad_multiple: int, network_multiples: list[int]) -> int:
    """The size every padded input must be a multiple of: the preprocessing's and every network's."""
    return math.lcm(pad_multiple, *network_multiples)
