"""HC18 conventions against the real expert annotations (biometry.md §5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from FetalHeadSegLib.core.errors import InputImageError
from FetalHeadSegLib.core.io import read_image
from FetalHeadSegLib.core.samples import get_sample
from FetalHeadSegLib.measure.biometry import measure_biometry
from FetalHeadSegLib.measure.hc18 import ellipse_from_outline, rasterize_ellipse, read_pixel_size_csv, subject_id


def test_bundled_sample_reproduces_its_expert_hc() -> None:
    sample = get_sample("hc18_207_HC")
    assert sample.annotation_path is not None
    outline = read_image(sample.annotation_path)
    ellipse = ellipse_from_outline(outline.array[:, :, 0])
    hc_mm = ellipse.perimeter * sample.info["pixel_size_mm"]
    assert hc_mm == pytest.approx(sample.info["reference_hc_mm"], abs=0.05)


def test_full_training_csv_vector_14(hc18_dir: Path) -> None:
    raw = (hc18_dir / "training_set_pixel_size_and_HC.csv").read_bytes()
    assert raw.startswith(b"filename,pixel size(mm),head circumference (mm)\r\n")
    table = read_pixel_size_csv(hc18_dir / "training_set_pixel_size_and_HC.csv")
    assert len(table) == 999
    assert table["000_HC.png"].pixel_size_mm == pytest.approx(0.0691358041432)
    assert table["000_HC.png"].hc_mm == pytest.approx(44.3)


def test_fitted_outlines_reproduce_the_csv_hc(hc18_dir: Path) -> None:
    """Every 5th annotation of the local subset: ellipse through the outline pixels x pixel size = CSV HC."""
    table = read_pixel_size_csv(hc18_dir / "subset_pixel_size_and_HC.csv")
    names = sorted(table)[::5]
    errors = []
    for name in names:
        outline = read_image(hc18_dir / "training_set" / name.replace(".png", "_Annotation.png"))
        ellipse = ellipse_from_outline(outline.array[:, :, 0])
        errors.append(ellipse.perimeter * table[name].pixel_size_mm - table[name].hc_mm)
    errors_mm = np.asarray(errors)
    assert len(errors_mm) >= 100
    assert abs(errors_mm.mean()) < 0.01  # biometry.md §5.3: mean +0.002 mm, SD 0.008, max 0.046
    assert np.abs(errors_mm).max() < 0.1


def test_biometry_of_the_filled_reference_ellipse_matches_the_csv(hc18_dir: Path) -> None:
    """The training-mask convention (filled fitted ellipse) measured by the engine's sub-pixel edges."""
    table = read_pixel_size_csv(hc18_dir / "subset_pixel_size_and_HC.csv")
    for name in sorted(table)[::70]:
        row = table[name]
        outline = read_image(
            hc18_dir / "training_set" / name.replace(".png", "_Annotation.png"), spacing_mm=row.pixel_size_mm
        )
        filled = rasterize_ellipse(ellipse_from_outline(outline.array[:, :, 0]), outline.shape[:2])
        biometry = measure_biometry(outline.with_array(filled[:, :, None].astype(np.uint8)))
        assert biometry.hc_mm == pytest.approx(row.hc_mm, abs=max(0.2, 0.002 * row.hc_mm)), name


def test_subject_ids_and_csv_errors(tmp_path: Path) -> None:
    assert subject_id("012_2HC.png") == "012" == subject_id("012_HC.png")
    with pytest.raises(ValueError):
        subject_id("scan.png")
    bad = tmp_path / "pixels.csv"
    bad.write_text("name,size\nx.png,1\n")
    with pytest.raises(InputImageError, match="header"):
        read_pixel_size_csv(bad)
    bad.write_text("filename,pixel size(mm)\nx.png,-2\n")
    with pytest.raises(InputImageError, match="positive"):
        read_pixel_size_csv(bad)
