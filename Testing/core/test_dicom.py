"""Ultrasound DICOM input: region calibration and crop, colour, MONOCHROME1, cines, volumes and clear refusals.

Every file is built here with pydicom; expected values are computed from the test's own numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder, set_pixel_data
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from FetalHeadSegLib.core.errors import InputImageError, OutputError
from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.core.io import read_image, read_image_frames, write_image
from FetalHeadSegLib.core.spacing import SpacingSource

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
ENHANCED_US_VOLUME = "1.2.840.10008.5.1.4.1.1.6.2"
CM, SECONDS, HERTZ, CM_PER_S, NO_UNIT = 3, 4, 5, 7, 0


def dataset(sop_class: str = US_IMAGE, syntax: UID = ExplicitVRLittleEndian) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "US"
    return ds


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def write_frames(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 8, **tags) -> Path:
    ds = dataset(**{k: tags.pop(k) for k in ("sop_class",) if k in tags})
    set_pixel_data(ds, pixels, photometric, bits)
    for name, value in tags.items():
        setattr(ds, name, value)
    return save(ds, path)


def region(bounds, delta_cm, units=(CM, CM), spatial_format=1, data_type=1) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = spatial_format, data_type, 0
    item.RegionLocationMinX0, item.RegionLocationMinY0, item.RegionLocationMaxX1, item.RegionLocationMaxY1 = bounds
    item.PhysicalUnitsXDirection, item.PhysicalUnitsYDirection = units
    item.PhysicalDeltaX, item.PhysicalDeltaY = delta_cm
    return item


def grey_frame(rows: int = 40, columns: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(rows, columns), dtype=np.uint8)


def test_region_calibration_gives_mm_and_an_exact_crop(tmp_path: Path) -> None:
    pixels = grey_frame()
    regions = [
        region((0, 30, 49, 39), (0.01, 5.0), units=(SECONDS, CM_PER_S), spatial_format=3, data_type=3),  # Doppler
        region((0, 0, 4, 4), (0.05, 0.05)),  # a small 2D tissue region (e.g. a thumbnail)
        region((10, 5, 39, 24), (0.012, 0.015)),  # the B-mode image: the largest 2D tissue region
    ]
    path = write_frames(tmp_path / "frame.dcm", pixels, SequenceOfUltrasoundRegions=Sequence(regions))
    loaded = read_image_frames(path)
    assert loaded.spacing_source is SpacingSource.DICOM_REGION and not loaded.is_cine
    assert len(loaded.frames) == 1
    image = loaded.frames[0]
    assert image.shape == (30, 20, 1)
    assert image.spacing_mm[:2] == pytest.approx((0.12, 0.15))
    np.testing.assert_array_equal(image.array[:, :, 0], pixels[5:25, 10:40].T)
    column, row = 33, 17  # a pixel of the full frame
    assert image.array[column - 10, row - 5, 0] == pixels[row, column]
    ras = image.ijk_to_ras_points([[column - 10, row - 5, 0]])[0]
    np.testing.assert_allclose(ras, [-column * 0.12, -row * 0.15, 0.0], atol=1e-9)  # where the uncropped frame has it
    np.testing.assert_array_equal(read_image(path).array, image.array)


def luminance(rgb: np.ndarray) -> np.ndarray:
    red, green, blue = (rgb[..., channel].astype(np.float64) for channel in range(3))
    return np.rint(0.299 * red + 0.587 * green + 0.114 * blue).astype(np.uint8)


def test_rgb_frame_becomes_its_luminance(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    path = write_frames(tmp_path / "rgb.dcm", rgb, "RGB", PixelSpacing=[0.2, 0.2])
    image = read_image(path)
    assert image.shape == (16, 12, 1) and image.array.dtype == np.uint8
    np.testing.assert_array_equal(image.array[:, :, 0], luminance(rgb).T)


@pytest.mark.parametrize("photometric", ["YBR_FULL", "YBR_FULL_422"])
def test_ybr_frame_becomes_its_luminance(tmp_path: Path, photometric: str) -> None:
    """YBR_FULL's Y is the Rec. 601 luminance; going through RGB in 8 bits may round it by one grey level."""
    rng = np.random.default_rng(2)
    rows, columns = 6, 8
    luma = rng.integers(30, 221, size=(rows, columns)).astype(np.uint8)
    chroma = rng.integers(118, 139, size=(rows, columns // 2, 2)).astype(np.uint8)  # one (Cb, Cr) per pixel pair
    ds = dataset()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PlanarConfiguration = rows, columns, 3, 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if photometric == "YBR_FULL":
        full = np.concatenate([luma[..., np.newaxis], np.repeat(chroma, 2, axis=1)], axis=-1)
        ds.PixelData = full.tobytes()
    else:  # native 4:2:2 stores Y1 Y2 Cb Cr for each pair of pixels
        pairs = luma.reshape(rows, columns // 2, 2)
        ds.PixelData = np.concatenate([pairs, chroma], axis=-1).tobytes()
    image = read_image(save(ds, tmp_path / "ybr.dcm"))
    assert image.shape == (columns, rows, 1)
    difference = image.array[:, :, 0].T.astype(int) - luma
    assert np.abs(difference).max() <= 1, difference


def test_palette_colour_frame_becomes_the_luminance_of_its_lookup(tmp_path: Path) -> None:
    indices = np.random.default_rng(8).integers(0, 4, size=(5, 7)).astype(np.uint8)
    lut = np.array([[0, 0, 0], [65535, 0, 0], [0, 40000, 1000], [30000, 30000, 60000]], dtype=np.uint16)
    ds = dataset()
    set_pixel_data(ds, indices, "PALETTE COLOR", 8)
    for channel, colour in enumerate(("Red", "Green", "Blue")):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut[:, channel].astype("<u2").tobytes())
    image = read_image(save(ds, tmp_path / "palette.dcm"))
    weighted = np.rint(lut.astype(float) @ [0.299, 0.587, 0.114]).astype(np.uint16)
    np.testing.assert_array_equal(image.array[:, :, 0], weighted[indices].T)


@pytest.mark.parametrize(("dtype", "bits"), [(np.uint8, 8), (np.uint16, 12)])
def test_monochrome1_is_inverted(tmp_path: Path, dtype: type, bits: int) -> None:
    stored = np.random.default_rng(3).integers(0, 2**bits, size=(9, 7)).astype(dtype)
    image = read_image(write_frames(tmp_path / "mono1.dcm", stored, "MONOCHROME1", bits))
    expected = (2**bits - 1) - stored.astype(np.int64)
    np.testing.assert_array_equal(image.array[:, :, 0].T, expected)
    assert image.array.dtype == dtype


def test_cine_becomes_one_calibrated_2d_frame_per_time(tmp_path: Path) -> None:
    frames = np.random.default_rng(4).integers(0, 256, size=(5, 12, 16), dtype=np.uint8)
    path = write_frames(
        tmp_path / "cine.dcm",
        frames,
        sop_class=US_MULTIFRAME,
        FrameTime=33.3,
        SequenceOfUltrasoundRegions=Sequence([region((0, 0, 15, 11), (0.02, 0.025))]),
    )
    loaded = read_image_frames(path)
    assert loaded.is_cine and loaded.spacing_source is SpacingSource.DICOM_REGION
    assert len(loaded.frames) == 5
    for time, frame in enumerate(loaded.frames):
        assert frame.is_2d and frame.shape == (16, 12, 1)
        assert frame.spacing_mm[:2] == pytest.approx((0.2, 0.25))
        np.testing.assert_array_equal(frame.array[:, :, 0], frames[time].T)


def test_read_image_refuses_a_cine_and_names_the_way_out(tmp_path: Path) -> None:
    frames = np.zeros((4, 6, 8), dtype=np.uint8)
    path = write_frames(tmp_path / "loop.dcm", frames, sop_class=US_MULTIFRAME)
    with pytest.raises(InputImageError, match="4 frames.*read_image_frames") as info:
        read_image(path)
    assert str(path) in str(info.value)


def enhanced_volume(
    pixels: np.ndarray, positions: list[list[float]], orientation: list[float], frame: str = "Patient"
) -> Dataset:
    ds = dataset(ENHANCED_US_VOLUME)
    set_pixel_data(ds, pixels, "MONOCHROME2", 16)
    shared = Dataset()
    measures, plane = Dataset(), Dataset()
    measures.PixelSpacing = [0.4, 0.3]  # (between rows, between columns)
    measures.SliceThickness = 1.0
    setattr(plane, f"ImageOrientation{frame}", orientation)
    shared.PixelMeasuresSequence = Sequence([measures])
    setattr(shared, "PlaneOrientationSequence" if frame == "Patient" else "PlaneOrientationVolumeSequence", [plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for position in positions:
        item, where = Dataset(), Dataset()
        setattr(where, f"ImagePosition{frame}", [f"{v:.6f}" if frame == "Patient" else v for v in position])
        setattr(item, "PlanePositionSequence" if frame == "Patient" else "PlanePositionVolumeSequence", [where])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return ds


@pytest.mark.parametrize(("step_mm", "frame"), [(2.5, "Patient"), (-2.5, "Patient"), (2.5, "Volume")])
def test_enhanced_frames_on_an_even_stack_become_one_volume(tmp_path: Path, step_mm: float, frame: str) -> None:
    pixels = np.random.default_rng(5).integers(0, 4000, size=(4, 6, 8)).astype(np.uint16)
    row_axis, column_axis = np.array([0.0, 0.8, 0.6]), np.array([1.0, 0.0, 0.0])  # LPS directions of x and y
    normal = np.cross(row_axis, column_axis)
    first = np.array([10.0, -20.0, 5.0])
    positions = [(first + k * step_mm * normal).tolist() for k in range(4)]
    ds = enhanced_volume(pixels, positions, [*row_axis, *column_axis], frame)
    loaded = read_image_frames(save(ds, tmp_path / "volume.dcm"))
    assert not loaded.is_cine and loaded.spacing_source is SpacingSource.HEADER
    (volume,) = loaded.frames
    assert volume.shape == (8, 6, 4)
    assert volume.spacing_mm == pytest.approx((0.3, 0.4, 2.5), abs=1e-5)
    i, j, k = 5, 2, 3
    assert volume.array[i, j, k] == pixels[k, j, i]
    lps = first + i * 0.3 * row_axis + j * 0.4 * column_axis + k * step_mm * normal
    np.testing.assert_allclose(volume.ijk_to_ras_points([[i, j, k]])[0], lps * [-1, -1, 1], atol=1e-4)


def test_frames_at_uneven_positions_are_refused(tmp_path: Path) -> None:
    pixels = np.zeros((3, 6, 8), dtype=np.uint16)
    ds = enhanced_volume(pixels, [[0, 0, 0], [0, 0, 1], [0, 0, 3]], [1, 0, 0, 0, 1, 0])
    path = save(ds, tmp_path / "uneven.dcm")
    with pytest.raises(InputImageError, match="evenly spaced") as info:
        read_image_frames(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_enhanced_frames_at_one_position_are_a_cine(tmp_path: Path) -> None:
    pixels = np.random.default_rng(6).integers(0, 4000, size=(3, 6, 8)).astype(np.uint16)
    ds = enhanced_volume(pixels, [[1.0, 2.0, 3.0]] * 3, [1, 0, 0, 0, 1, 0])
    loaded = read_image_frames(save(ds, tmp_path / "same_plane.dcm"))
    assert loaded.is_cine and len(loaded.frames) == 3
    assert loaded.frames[2].spacing_mm[:2] == pytest.approx((0.3, 0.4))
    np.testing.assert_allclose(loaded.frames[2].origin_ras, [-1.0, -2.0, 3.0])
    np.testing.assert_array_equal(loaded.frames[2].array[:, :, 0], pixels[2].T)


@pytest.mark.parametrize(
    ("units", "named"),
    [
        ((SECONDS, CM), "x in seconds"),
        ((CM, HERTZ), "y in hertz"),
        ((CM_PER_S, CM), "cm/s"),
        ((NO_UNIT, NO_UNIT), "none"),
    ],
)
def test_a_calibration_that_is_not_a_length_is_refused(tmp_path: Path, units: tuple[int, int], named: str) -> None:
    path = write_frames(
        tmp_path / "units.dcm",
        grey_frame(),
        SequenceOfUltrasoundRegions=Sequence([region((0, 0, 49, 39), (0.01, 0.01), units=units)]),
    )
    with pytest.raises(InputImageError, match="not a length") as info:
        read_image_frames(path)
    message = str(info.value)
    assert str(path) in message and named in message and "\n" not in message


def test_regions_without_a_2d_image_are_refused(tmp_path: Path) -> None:
    spectral = region((0, 0, 49, 39), (0.01, 5.0), units=(SECONDS, CM_PER_S), spatial_format=3, data_type=3)
    path = write_frames(tmp_path / "doppler.dcm", grey_frame(), SequenceOfUltrasoundRegions=Sequence([spectral]))
    with pytest.raises(InputImageError, match="spectral Doppler"):
        read_image(path)


@pytest.mark.parametrize("tag", ["PixelSpacing", "ImagerPixelSpacing"])
def test_pixel_spacing_is_the_fallback(tmp_path: Path, tag: str) -> None:
    pixels = grey_frame()
    path = write_frames(tmp_path / "spaced.dcm", pixels, **{tag: [0.25, 0.2]})  # (row step, column step)
    loaded = read_image_frames(path)
    assert loaded.spacing_source is SpacingSource.HEADER
    image = loaded.frames[0]
    assert image.shape == (50, 40, 1)
    assert image.spacing_mm[:2] == pytest.approx((0.2, 0.25))
    np.testing.assert_array_equal(image.array[:, :, 0], pixels.T)


def test_no_calibration_means_no_spacing(tmp_path: Path) -> None:
    loaded = read_image_frames(write_frames(tmp_path / "bare.dcm", grey_frame()))
    assert loaded.spacing_source is SpacingSource.NONE and not loaded.is_cine
    assert loaded.frames[0].spacing_mm == pytest.approx((1.0, 1.0, 1.0))


def test_dicom_is_recognised_by_its_marker_without_a_suffix(tmp_path: Path) -> None:
    path = write_frames(tmp_path / "IM_0001", grey_frame(), PixelSpacing=[0.1, 0.1])
    assert read_image_frames(path).spacing_source is SpacingSource.HEADER
    assert read_image(path, spacing_mm=0.3).spacing_mm[:2] == pytest.approx((0.3, 0.3))


def test_not_dicom_and_no_pixels_name_the_file(tmp_path: Path) -> None:
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"not dicom at all")
    with pytest.raises(InputImageError, match="not a DICOM file") as info:
        read_image(fake)
    assert str(fake) in str(info.value)
    report = save(dataset("1.2.840.10008.5.1.4.1.1.88.11"), tmp_path / "report.dcm")
    with pytest.raises(InputImageError, match="no image"):
        read_image_frames(report)


def test_compression_without_its_plugin_is_one_clear_line(tmp_path: Path) -> None:
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder plugin is installed here")
    ds = dataset(syntax=JPEGLSLossless)
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 4, 4, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not really JPEG-LS \xff\xd9"])
    path = save(ds, tmp_path / "jpegls.dcm")
    with pytest.raises(InputImageError, match="JPEG-LS.*plugin is not installed") as info:
        read_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_writing_dicom_is_refused(tmp_path: Path) -> None:
    image = Image(np.zeros((4, 4, 1), dtype=np.uint8), make_ijk_to_ras((1.0, 1.0, 1.0)))
    with pytest.raises(OutputError, match="DICOM"):
        write_image(image, tmp_path / "out.dcm")


def test_the_command_line_segments_every_cine_frame(tmp_path: Path) -> None:
    """A suffix-less cine in a folder: found, one calibrated result per frame, one summary row per frame."""
    import csv
    import json

    from FetalHeadSegLib.cli import main
    from FetalHeadSegLib.phantom import PhantomConfig, generate_phantom

    from tiny_models import make_tiny_bundle

    frame = generate_phantom(PhantomConfig(dimension=2, size=(96, 64)), seed=4).image.array[:, :, 0]
    frames = np.stack([frame.T, frame.T[::-1], frame.T]).astype(np.uint8)
    folder = tmp_path / "study"
    folder.mkdir()
    write_frames(
        folder / "IM_0001",
        frames,
        sop_class=US_MULTIFRAME,
        SequenceOfUltrasoundRegions=Sequence([region((0, 0, 95, 63), (0.03, 0.03))]),
    )
    model = make_tiny_bundle(tmp_path / "model", dimension=2, levels=1).path
    out = tmp_path / "out"
    assert main(["segment", str(folder), "-o", str(out), "--model", str(model), "--progress", "none"]) == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [row["frame"] for row in rows] == ["0", "1", "2"]
    assert {row["spacing_source"] for row in rows} == {"dicom_region"}
    for number in range(3):
        record = json.loads((out / f"IM_0001_frame{number:04d}_biometry.json").read_text())
        assert record["spacing_mm"] == [0.3, 0.3] and record["spacing_source"] == "dicom_region"
