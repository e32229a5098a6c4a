"""Image I/O: exact geometry round trips, the RAS / (X, Y, Z) convention, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from FetalHeadSegLib.core.errors import InputImageError, OutputError
from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.core.io import read_image, read_image_frames, write_image, write_labelmap
from FetalHeadSegLib.core.spacing import SpacingSource

from shapes import rotation_matrix

OBLIQUE = rotation_matrix((0.3, 1.0, -0.6), 0.5)


def oblique_image(dtype=np.int16) -> Image:
    rng = np.random.default_rng(1)
    array = rng.integers(0, 1000, size=(7, 5, 3)).astype(dtype)
    return Image(array, make_ijk_to_ras((0.7, 1.3, 2.1), (12.5, -40.25, 7.0), OBLIQUE))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha", ".mhd"])
def test_round_trip_keeps_values_and_oblique_anisotropic_geometry(tmp_path: Path, suffix: str) -> None:
    image = oblique_image()
    path = write_image(image, tmp_path / f"volume{suffix}")
    back = read_image(path)
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.ijk_to_ras, image.ijk_to_ras, atol=1e-4)
    assert back.spacing_mm == pytest.approx(image.spacing_mm, abs=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging leftovers


def test_itk_lps_and_zyx_map_to_ras_and_xyz(tmp_path: Path) -> None:
    """An ITK image with LPS identity direction: RAS flips x and y; array[x, y, z] is ITK pixel (x, y, z)."""
    array_zyx = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    itk_image = sitk.GetImageFromArray(array_zyx)
    itk_image.SetOrigin((1.0, 2.0, 3.0))
    itk_image.SetSpacing((0.5, 0.75, 2.0))
    sitk.WriteImage(itk_image, str(tmp_path / "lps.nrrd"))
    image = read_image(tmp_path / "lps.nrrd")
    assert image.shape == (5, 4, 3)
    assert image.array[4, 1, 2] == itk_image.GetPixel(4, 1, 2)
    np.testing.assert_allclose(image.ijk_to_ras[:3, :3], np.diag([-0.5, -0.75, 2.0]))
    np.testing.assert_allclose(image.origin_ras, [-1.0, -2.0, 3.0])
    physical_lps = itk_image.TransformIndexToPhysicalPoint((4, 1, 2))
    ras = image.ijk_to_ras_points([[4, 1, 2]])[0]
    np.testing.assert_allclose(ras, [-physical_lps[0], -physical_lps[1], physical_lps[2]])


def test_nifti_sform_is_our_ijk_to_ras(tmp_path: Path) -> None:
    """NIfTI stores voxel-to-RAS natively: the header's sform rows must equal ijk_to_ras."""
    image = oblique_image()
    path = write_image(image, tmp_path / "volume.nii")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    sform = np.array([[float(v) for v in reader.GetMetaData(f"srow_{axis}").split()] for axis in "xyz"])
    np.testing.assert_allclose(sform, image.ijk_to_ras[:3], atol=1e-4)


def test_png_frame_reads_as_columns_rows_with_given_spacing(tmp_path: Path) -> None:
    rows, cols = 6, 9
    pixels = (np.arange(rows * cols).reshape(rows, cols) % 251).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(pixels), str(tmp_path / "frame.png"))
    image = read_image(tmp_path / "frame.png", spacing_mm=0.1)
    assert image.shape == (cols, rows, 1) and image.is_2d
    assert image.array[7, 2, 0] == pixels[2, 7]
    assert image.spacing_mm[:2] == pytest.approx((0.1, 0.1))
    anisotropic = read_image(tmp_path / "frame.png", spacing_mm=(0.1, 0.2))
    assert anisotropic.spacing_mm[:2] == pytest.approx((0.1, 0.2))
    out = write_image(image, tmp_path / "copy.png")
    np.testing.assert_array_equal(read_image(out).array, image.array)


def test_colour_png_becomes_grey(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 100, 100
    rgb[1, 2] = (255, 0, 0)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb.png"))
    image = read_image(tmp_path / "rgb.png")
    assert image.shape == (6, 4, 1)
    assert image.array[0, 0, 0] == 100 and image.array[2, 1, 0] == round(0.299 * 255)


def test_2d_frame_written_as_nifti_keeps_its_geometry(tmp_path: Path) -> None:
    frame = Image(np.ones((8, 6, 1), dtype=np.uint8), make_ijk_to_ras((0.12, 0.12, 1.0), (3.0, 4.0, 0.0)))
    back = read_image(write_labelmap(frame.array, frame, tmp_path / "frame.nii.gz"))
    assert back.is_2d
    np.testing.assert_allclose(back.ijk_to_ras, frame.ijk_to_ras, atol=1e-6)


def test_write_labelmap_picks_the_smallest_integer_type(tmp_path: Path) -> None:
    reference = oblique_image()
    small = read_image(write_labelmap(np.full(reference.shape, 3), reference, tmp_path / "a.nrrd"))
    large = read_image(write_labelmap(np.full(reference.shape, 300), reference, tmp_path / "b.nrrd"))
    assert small.array.dtype == np.uint8 and large.array.dtype == np.uint16
    with pytest.raises(ValueError, match="grid"):
        write_labelmap(np.zeros((2, 2, 2)), reference, tmp_path / "c.nrrd")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.nii.gz", None, "no such file"),
        ("notes.txt", b"hello", "not a supported image"),
        ("corrupt.nii.gz", b"\x1f\x8b garbage that is not gzip data", "cannot be read"),
        ("corrupt.png", b"not a png at all", "cannot be read"),
    ],
)
def test_unreadable_inputs_name_the_file(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputImageError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_folders_4d_and_multichannel_volumes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputImageError, match="folder"):
        read_image(tmp_path)
    volumes = [sitk.GetImageFromArray(np.zeros((3, 4, 5), dtype=np.uint8)) for _ in range(2)]
    sitk.WriteImage(sitk.JoinSeries(volumes), str(tmp_path / "series.nii.gz"))
    with pytest.raises(InputImageError, match="4D"):
        read_image(tmp_path / "series.nii.gz")
    vector = sitk.GetImageFromArray(np.zeros((3, 4, 5, 2), dtype=np.float32), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "vector.nrrd"))
    with pytest.raises(InputImageError, match="components"):
        read_image(tmp_path / "vector.nrrd")


@pytest.mark.parametrize("spacing", [[float("nan")], [0.0], [-1.0], [1.0, 1.0, 1.0, 1.0]])
def test_invalid_spacing_is_refused(tmp_path: Path, spacing: list[float]) -> None:
    path = write_image(oblique_image(), tmp_path / "v.nrrd")
    with pytest.raises(InputImageError, match="spacing"):
        read_image(path, spacing_mm=spacing)


def test_two_spacing_values_are_for_frames_only(tmp_path: Path) -> None:
    path = write_image(oblique_image(), tmp_path / "v.nrrd")
    with pytest.raises(InputImageError, match="2D"):
        read_image(path, spacing_mm=[1.0, 2.0])
    assert read_image(path, spacing_mm=[0.5]).spacing_mm == pytest.approx((0.5, 0.5, 0.5))


def test_unwritable_destination_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OutputError, match="cannot write"):
        write_image(oblique_image(), blocker / "sub" / "v.nrrd")
    with pytest.raises(OutputError, match="uint8 or uint16"):
        write_image(Image(np.zeros((4, 4, 1), np.float32), np.eye(4)), tmp_path / "f.png")


def test_a_frame_stored_as_identical_slices_reads_as_a_frame(tmp_path: Path) -> None:
    """PSFHS stores grey frames as 256 x 256 x 3 volumes of identical slices."""
    frame = np.random.default_rng(0).integers(0, 255, size=(6, 5), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([frame] * 3)), str(tmp_path / "rgb_as_slices.mha"))
    image = read_image(tmp_path / "rgb_as_slices.mha")
    assert image.shape == (5, 6, 1)
    np.testing.assert_array_equal(image.array[:, :, 0], frame.T)
    different = np.stack([frame, frame, frame[::-1]])
    sitk.WriteImage(sitk.GetImageFromArray(different), str(tmp_path / "volume.mha"))
    assert read_image(tmp_path / "volume.mha").shape == (5, 6, 3)


@pytest.mark.parametrize(("suffix", "channels"), [(".mha", 3), (".nrrd", 3), (".mha", 4), (".nii.gz", 3)])
def test_a_colour_2d_frame_becomes_grey_in_any_format(tmp_path: Path, suffix: str, channels: int) -> None:
    colour = np.random.default_rng(7).integers(0, 256, size=(4, 6, channels), dtype=np.uint8)
    itk_image = sitk.GetImageFromArray(colour, isVector=True)
    itk_image.SetSpacing((0.3, 0.2))
    sitk.WriteImage(itk_image, str(tmp_path / f"rgb{suffix}"))
    image = read_image(tmp_path / f"rgb{suffix}")
    assert image.shape == (6, 4, 1)
    assert image.spacing_mm[:2] == pytest.approx((0.3, 0.2))
    weighted = 0.299 * colour[..., 0].astype(float) + 0.587 * colour[..., 1] + 0.114 * colour[..., 2]
    np.testing.assert_array_equal(image.array[:, :, 0], np.rint(weighted).astype(np.uint8).T)


def test_a_colour_single_slice_volume_is_a_frame_but_a_colour_volume_is_refused(tmp_path: Path) -> None:
    slab = np.full((1, 4, 6, 3), (10, 20, 30), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(slab, isVector=True), str(tmp_path / "slab.mha"))
    assert read_image(tmp_path / "slab.mha").array[0, 0, 0] == round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)
    volume = np.zeros((3, 4, 6, 3), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(volume, isVector=True), str(tmp_path / "rgb_volume.mha"))
    with pytest.raises(InputImageError, match="3 components"):
        read_image(tmp_path / "rgb_volume.mha")


def test_read_image_frames_says_where_the_spacing_comes_from(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 6), dtype=np.uint8)), str(tmp_path / "frame.png"))
    raster = read_image_frames(tmp_path / "frame.png")
    assert raster.spacing_source is SpacingSource.NONE and not raster.is_cine and len(raster.frames) == 1
    path = write_image(oblique_image(), tmp_path / "volume.nii.gz")
    volume = read_image_frames(path)
    assert volume.spacing_source is SpacingSource.HEADER and not volume.is_cine
    np.testing.assert_allclose(volume.frames[0].ijk_to_ras, read_image(path).ijk_to_ras)
    assert volume.frames[0].spacing_mm == pytest.approx((0.7, 1.3, 2.1), abs=1e-5)
