"""Preprocessing: resampling keeps the physical box, padding round-trips, bad images are refused."""

from __future__ import annotations

import numpy as np
import pytest

from FetalHeadSegLib.core.errors import InputImageError
from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.inference.preprocessing import (
    PreprocessingConfig,
    check_image,
    normalise,
    pad_to_multiple,
    prepare,
    resample,
    resample_like,
    working_spacing,
)

from shapes import make_ellipsoid, rotation_matrix


def test_resampling_keeps_the_physical_box_and_the_object() -> None:
    shape = make_ellipsoid(
        (20.0, 15.0, 12.0),
        rotation=rotation_matrix((1, 1, 0), 0.4),
        spacing_mm=(0.7, 0.9, 1.3),
        direction_ras=rotation_matrix((0, 1, 1), 0.3),
    )
    coarse = resample(shape.image, (1.5, 1.5, 1.5))
    old_box = np.asarray(shape.image.shape) * np.asarray(shape.image.spacing_mm)
    new_box = np.asarray(coarse.shape) * np.asarray(coarse.spacing_mm)
    np.testing.assert_allclose(new_box, old_box, atol=1.5)
    np.testing.assert_allclose(coarse.direction_ras, shape.image.direction_ras, atol=1e-9)
    centre_old = shape.image.ijk_to_ras_points(np.argwhere(shape.image.array > 0)).mean(axis=0)
    centre_new = coarse.ijk_to_ras_points(np.argwhere(coarse.array > 0.5)).mean(axis=0)
    assert np.linalg.norm(centre_new - centre_old) < 0.3
    back = resample_like(coarse, shape.image)
    assert back.shape == shape.image.shape
    np.testing.assert_allclose(back.ijk_to_ras, shape.image.ijk_to_ras)
    agreement = ((back.array > 0.5) == (shape.image.array > 0)).mean()
    assert agreement > 0.99


def test_working_spacing_rules() -> None:
    volume = Image(np.zeros((100, 80, 60)), make_ijk_to_ras((0.5, 0.5, 1.0)))
    assert working_spacing(volume, PreprocessingConfig()) is None
    assert working_spacing(volume, PreprocessingConfig(max_size=64)) == pytest.approx((60 / 64,) * 3)
    frame = Image(np.zeros((800, 540, 1)), make_ijk_to_ras((0.1, 0.1, 1.0)))
    assert working_spacing(frame, PreprocessingConfig(max_size=200)) == pytest.approx((0.4, 0.4, 1.0))
    assert working_spacing(frame, PreprocessingConfig(target_spacing_mm=(0.3,))) == pytest.approx((0.3, 0.3, 1.0))
    with pytest.raises(ValueError):
        PreprocessingConfig(target_spacing_mm=(1.0,), max_size=64)


@pytest.mark.parametrize(("shape", "is_2d"), [((13, 7, 9), False), ((33, 20, 1), True)])
def test_padding_to_multiples_round_trips(shape: tuple[int, int, int], is_2d: bool) -> None:
    array = np.random.default_rng(0).random(shape).astype(np.float32)
    padded, padding = pad_to_multiple(array, 8, is_2d)
    assert all(n % 8 == 0 for n in padded.shape[: 2 if is_2d else 3])
    assert padded.shape[2] == (1 if is_2d else 16)
    np.testing.assert_array_equal(padding.crop(padded), array)
    np.testing.assert_array_equal(padding.crop(np.stack([padded, padded]))[1], array)


def test_normalise_clips_and_scales() -> None:
    values = np.arange(1000, dtype=np.float32)
    values[0] = -1e6  # an outlier
    scaled = normalise(values, (0.5, 99.5))
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    assert 0.45 < float(np.median(scaled)) < 0.55


@pytest.mark.parametrize(
    ("array", "spacing", "words"),
    [
        (np.ones((8, 8, 8)), (1.0, 1.0, 1.0), "same value"),
        (np.full((8, 8, 8), np.nan), (1, 1, 1), "NaN"),
        (np.arange(512.0).reshape(8, 8, 8), (50.0, 1.0, 1.0), "spacing"),
    ],
)
def test_unsegmentable_images_are_refused(array: np.ndarray, spacing: tuple, words: str) -> None:
    with pytest.raises(InputImageError, match=words):
        check_image(Image(array, make_ijk_to_ras(spacing)), "scan.nii.gz")


@pytest.mark.parametrize("name", ["hc18_207_HC", "psfhs_03744", "phantom3d_s000001"])
def test_a_bundled_samples_annotation_is_refused_as_a_label_map_and_its_image_is_not(name: str) -> None:
    """Each bundled sample's expert or exact annotation (an HC18 outline of 0 and 255, PSFHS classes 0-2, a
    phantom's head mask) is refused with its file named and its values listed; the ultrasound beside it has
    hundreds of values and passes."""
    from FetalHeadSegLib.core.io import read_image
    from FetalHeadSegLib.core.samples import get_sample

    sample = get_sample(name)
    assert sample.annotation_path is not None
    pixel_mm = 0.2 if name.startswith("hc18") else None  # HC18 PNGs carry no pixel size
    annotation = read_image(sample.annotation_path, spacing_mm=pixel_mm)
    values = ", ".join(f"{v:g}" for v in np.unique(annotation.array))
    words = rf"{sample.annotation_path.name}: holds only \d distinct values \({values}\)"
    with pytest.raises(InputImageError, match=words):
        check_image(annotation, sample.annotation_path.name)
    check_image(read_image(sample.image_path, spacing_mm=pixel_mm), name)


def test_an_image_whose_strided_sample_looks_like_a_label_map_is_read_whole() -> None:
    """The sample takes every other voxel of a 2.1-million-voxel image; values only on the others are found by
    the whole read, so a mostly black image with a little signal is not refused."""
    array = np.zeros((128, 128, 128), np.uint8)
    array.reshape(-1)[1:40:2] = np.arange(1, 21, dtype=np.uint8)
    check_image(Image(array, make_ijk_to_ras((0.5, 0.5, 0.5))), "dark.nii.gz")
    array.reshape(-1)[1:40:2] = 7
    with pytest.raises(InputImageError, match=r"dark.nii.gz: holds only 2 distinct values \(0, 7\)"):
        check_image(Image(array, make_ijk_to_ras((0.5, 0.5, 0.5))), "dark.nii.gz")


@pytest.mark.parametrize(
    ("shape", "spacing_mm"),
    [((58, 48, 33), (0.9, 1.1, 1.6)), ((61, 40, 1), (0.3, 0.3, 1.0))],  # 47.45 -> 47, 31.48 -> 31 voxels
)
def test_restore_covers_every_voxel_of_the_input(shape: tuple[int, int, int], spacing_mm: tuple) -> None:
    """The working grid's size is rounded, so the input's outermost voxel centres can lie beyond its last one by
    more than half a working voxel. A constant field on the working grid comes back constant on every input voxel
    (before the fix, the outermost plane came back 0: every class's probability 0, the head's shown as 1)."""
    image = Image(np.random.default_rng(3).random(shape).astype(np.float32), make_ijk_to_ras(spacing_mm))
    prepared = prepare(image, PreprocessingConfig(max_size=48), 8)
    assert prepared.working.shape != image.shape
    channels = np.full((2, *prepared.values.shape), 0.25, dtype=np.float32)
    restored = prepared.restore(channels)
    assert restored.shape == (2, *shape)
    np.testing.assert_allclose(restored, 0.25, atol=1e-6)
