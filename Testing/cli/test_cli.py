"""The command line through ``main(argv)``: outputs, readable tables, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from FetalHeadSegLib.cli import main
from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.core.io import write_image, write_labelmap
from FetalHeadSegLib.measure.biometry import BIOMETRY_JSON_KEYS

from shapes import intrapartum_labels, make_ellipse_frame, make_ellipsoid

REQUIRED_KEYS = set(BIOMETRY_JSON_KEYS)


def test_biometry_of_a_3d_label_map(tmp_path: Path, capsys) -> None:
    shape = make_ellipsoid((40.0, 32.0, 28.0), spacing_mm=(0.8, 0.9, 1.0))
    labels = shape.image.array * 3  # the head is label 3
    mask_path = write_labelmap(labels, shape.image, tmp_path / "case01.nii.gz")
    code = main(
        [
            "biometry",
            str(mask_path),
            "--label",
            "3",
            "--ga-weeks",
            "24",
            "--json",
            str(tmp_path / "out.json"),
            "--markups",
            str(tmp_path / "markups"),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert REQUIRED_KEYS <= set(result)
    assert result["head_volume_ml"] == pytest.approx(shape.volume_ml, rel=0.02)
    assert result["hc_mm"] == pytest.approx(np.pi * (3 * 72 - np.sqrt((120 + 32) * (40 + 96))), rel=0.01)
    assert result["size_for_ga"]["hc"]["z_score"] is not None
    assert result["aop_deg"] is None
    assert sorted(p.name for p in (tmp_path / "markups").iterdir()) == [
        "case01_BPD.mrk.json",
        "case01_HC.mrk.json",
        "case01_OFD.mrk.json",
        "case01_plane.mrk.json",
    ]
    table = capsys.readouterr().out
    assert "HC" in table and "Head volume" in table and "plane_from_principal_axes" in table


def test_inner_label_adds_bpd_outer_inner(tmp_path: Path) -> None:
    """A label map with 1 = skull (3 mm thick) and 2 = brain: BPD outer-inner = 36 + 33 mm."""
    outer = make_ellipse_frame((45.0, 36.0), 0.5, spacing_mm=(0.15, 0.15))
    inner = make_ellipse_frame((42.0, 33.0), 0.5, spacing_mm=(0.15, 0.15))
    labels = outer.array + inner.array  # 1 on the skull, 2 inside it
    path = write_labelmap(labels, outer, tmp_path / "skull_brain.nrrd")
    assert main(["biometry", str(path), "--label", "1", "--inner-label", "2", "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["bpd_outer_inner_mm"] == pytest.approx(69.0, abs=0.1)
    assert result["bpd_mm"] == pytest.approx(72.0, abs=0.1)
    assert result["ga_weeks"]["hadlock1984_bpd"]["reason"] is None


def test_png_mask_needs_a_pixel_size_or_pixel_units(tmp_path: Path, capsys) -> None:
    frame = make_ellipse_frame((45.0, 36.0), 0.3, spacing_mm=(0.2, 0.2))
    png = write_image(frame.with_array(frame.array * 255), tmp_path / "mask.png")
    assert main(["biometry", str(png), "--spacing", "0.2", "--json", str(tmp_path / "a.json")]) == 0
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["hc_mm"] == pytest.approx(255.3, rel=0.003)
    assert record["spacing_mm"] == [0.2, 0.2] and record["spacing_source"] == "command_line"
    capsys.readouterr()
    # No pixel size anywhere: refused with one line saying how to give it, nothing written.
    assert main(["biometry", str(png), "--json", str(tmp_path / "b.json")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(png) in lines[0] and "--spacing" in lines[0]
    assert not (tmp_path / "b.json").exists()
    # Asked for pixel units: every length says so; nothing is labelled mm.
    assert main(["biometry", str(png), "--pixel-units", "--json", str(tmp_path / "c.json")]) == 0
    record = json.loads((tmp_path / "c.json").read_text())
    assert record["hc_px"] == pytest.approx(255.3 / 0.2, rel=0.003) and record["units"] == "px"
    assert not [key for key, value in record.items() if key.endswith("_mm") and value is not None]
    assert record["ga_weeks"] == {} and record["spacing_source"] == "none"
    assert "spacing_unknown" in {flag["code"] for flag in record["flags"]}


def test_spacing_that_contradicts_the_header_must_be_chosen(tmp_path: Path, capsys) -> None:
    frame = make_ellipse_frame((45.0, 36.0), 0.3, spacing_mm=(0.2, 0.2))
    nifti = write_image(frame, tmp_path / "mask.nii.gz")
    assert main(["biometry", str(nifti), "--spacing", "0.1"]) == 2
    message = capsys.readouterr().err.strip()
    assert "image header gives 0.2x0.2 mm" in message and "--spacing-source" in message
    assert main(["biometry", str(nifti), "--spacing", "0.1", "--spacing-source", "command_line"]) == 0
    assert main(["biometry", str(nifti), "--spacing", "0.2", "--json", str(tmp_path / "m.json")]) == 0  # agrees
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["hc_mm"] == pytest.approx(255.3, rel=0.003) and record["spacing_source"] == "header"


def test_an_image_is_not_measured_as_a_mask(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    image = Image(rng.integers(0, 255, (64, 48, 1)).astype(np.uint8), make_ijk_to_ras((0.2, 0.2, 1.0)))
    path = write_image(image, tmp_path / "scan.nii.gz")
    assert main(["biometry", str(path)]) == 2
    line = capsys.readouterr().err.strip()
    assert "an image, not a segmentation" in line and str(path) in line and "Traceback" not in line


def test_intrapartum_adds_the_angle_of_progression(tmp_path: Path) -> None:
    labels = intrapartum_labels()
    path = write_labelmap(labels.array, labels, tmp_path / "ip.mha")
    assert (
        main(["biometry", str(path), "--intrapartum", "--json", str(tmp_path / "ip.json"), "--markups", str(tmp_path)])
        == 0
    )
    result = json.loads((tmp_path / "ip.json").read_text())
    assert result["aop_deg"] == pytest.approx(126.9, abs=0.3)
    assert (tmp_path / "ip_AoP.mrk.json").exists()


def test_a_mirrored_frame_measured_with_the_apex_on_the_left_gives_the_same_angle(tmp_path: Path) -> None:
    labels = intrapartum_labels()
    mirrored = labels.with_array(labels.array[::-1].copy())  # columns reversed: the apex is now at the left end
    paths = [
        write_labelmap(frame.array, frame, tmp_path / f"{name}.mha") for name, frame in (("a", labels), ("b", mirrored))
    ]
    angles = []
    for path, side in zip(paths, ("right", "left"), strict=True):
        out = tmp_path / f"{path.stem}.json"
        assert main(["biometry", str(path), "--intrapartum", "--apex-side", side, "--json", str(out)]) == 0
        angles.append(json.loads(out.read_text())["aop_deg"])
    assert angles[0] == pytest.approx(126.9, abs=0.3) and angles[1] == pytest.approx(angles[0], abs=0.05)
    assert main(["biometry", str(paths[1]), "--intrapartum", "--json", str(tmp_path / "wrong.json")]) == 0
    assert json.loads((tmp_path / "wrong.json").read_text())["aop_deg"] != pytest.approx(angles[0], abs=5.0)


def test_real_psfhs_label_map(psfhs_dir: Path, tmp_path: Path) -> None:
    path = sorted((psfhs_dir / "label_mha").glob("*.mha"))[0]
    assert main(["biometry", str(path), "--intrapartum", "--json", str(tmp_path / "r.json")]) == 0
    assert 90 < json.loads((tmp_path / "r.json").read_text())["aop_deg"] < 160


def write_bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Bad inputs and the words their one-line error must contain."""
    grid = make_ijk_to_ras((1.0, 1.0, 1.0))
    empty = write_labelmap(np.zeros((10, 10, 10), np.uint8), Image(np.zeros((10, 10, 10)), grid), tmp_path / "e.nrrd")
    (tmp_path / "corrupt.nii.gz").write_bytes(b"\x1f\x8bnot really gzip")
    series = sitk.JoinSeries([sitk.GetImageFromArray(np.ones((4, 4, 4), np.uint8))] * 2)
    sitk.WriteImage(series, str(tmp_path / "4d.nii.gz"))
    shape = make_ellipsoid((20.0, 16.0, 14.0))
    head = write_labelmap(shape.image.array, shape.image, tmp_path / "head.nii.gz")
    return {
        "missing": ([str(tmp_path / "nope.nii.gz")], "no such file"),
        "corrupt": ([str(tmp_path / "corrupt.nii.gz")], "cannot be read"),
        "empty": ([str(empty)], "empty"),
        "4d": ([str(tmp_path / "4d.nii.gz")], "4D"),
        "wrong label": ([str(head), "--label", "7"], "label 7 is not in the mask"),
        "nan spacing": ([str(head), "--spacing", "nan"], "spacing"),
        "3d intrapartum": ([str(head), "--intrapartum"], "2D frames"),
        "bad ga": ([str(head), "--ga-weeks", "-3"], "ga-weeks"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "corrupt", "empty", "4d", "wrong label", "nan spacing", "3d intrapartum", "bad ga"]
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path: Path, capsys, case: str) -> None:
    arguments, words = write_bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    code = main(["biometry", *arguments, "--json", str(out / "r.json"), "--markups", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fetalheadseg: error:")
    assert words in lines[0]
    assert "Traceback" not in captured.err
    assert not out.exists()


def test_inputs_are_never_modified(tmp_path: Path) -> None:
    shape = make_ellipsoid((20.0, 16.0, 14.0))
    path = write_labelmap(shape.image.array, shape.image, tmp_path / "head.nrrd")
    before = path.read_bytes()
    assert main(["biometry", str(path), "--json", str(tmp_path / "r.json")]) == 0
    assert path.read_bytes() == before


def test_unwritable_output_is_reported(tmp_path: Path, capsys) -> None:
    shape = make_ellipsoid((20.0, 16.0, 14.0))
    path = write_labelmap(shape.image.array, shape.image, tmp_path / "head.nrrd")
    (tmp_path / "blocker").write_text("")
    code = main(
        ["biometry", str(path), "--markups", str(tmp_path / "m"), "--json", str(tmp_path / "blocker" / "r.json")]
    )
    assert code == 2
    assert "cannot write" in capsys.readouterr().err
    assert not (tmp_path / "m" / "head_BPD.mrk.json").exists()  # the markups already written were removed


def test_phantom_command_writes_cases(tmp_path: Path, capsys) -> None:
    code = main(
        ["phantom", str(tmp_path), "--dim", "2", "--count", "2", "--seed", "5", "--size", "160", "120", "--preview"]
    )
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        f"phantom2d_s00000{seed}_{part}"
        for seed in (5, 6)
        for part in ("image.nii.gz", "head.nii.gz", "labels.nii.gz", "truth.json", "preview.png")
    )
    truth = json.loads((tmp_path / "phantom2d_s000005_truth.json").read_text())
    assert truth["seed"] == 5 and truth["hc_mm"] > 0
    assert "[2/2]" in capsys.readouterr().out
    # The biometry command measures the phantom's head mask close to its truth.
    assert main(["biometry", str(tmp_path / "phantom2d_s000005_head.nii.gz"), "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["hc_mm"] == pytest.approx(truth["hc_mm"], rel=0.01)


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["--count", "0"], "--count"),
        (["--ga-weeks", "45"], "14-40"),
        (["--size", "8", "8", "8"], "size"),
        (["--dim", "2", "--size", "100", "100", "100"], "size"),
    ],
)
def test_phantom_command_rejects_bad_options(tmp_path: Path, capsys, arguments: list[str], words: str) -> None:
    assert main(["phantom", str(tmp_path / "out"), *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("fetalheadseg: error:") and words in error and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_demo_without_models_measures_the_annotation(tmp_path: Path, capsys, monkeypatch) -> None:
    import FetalHeadSegLib.models.catalog as catalog

    monkeypatch.setattr(catalog, "list_models", lambda home=None: [])
    assert main(["demo", "-o", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["hc18_annotation"]
    assert summary["hc_mm"] == pytest.approx(summary["reference_hc_mm"], abs=0.1)
    assert (tmp_path / "hc18_207_HC_biometry.json").exists()
    assert (tmp_path / "hc18_207_HC_head.nii.gz").exists()


def test_console_entry_point_and_module_run() -> None:
    done = subprocess.run([sys.executable, "-m", "FetalHeadSegLib", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("fetalheadseg ")
    usage = subprocess.run([sys.executable, "-m", "FetalHeadSegLib", "biometry"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_verbose_after_the_command_and_a_closed_pipe(tmp_path: Path) -> None:
    frame = make_ellipse_frame((45.0, 36.0), 0.3, spacing_mm=(0.2, 0.2))
    nifti = write_image(frame, tmp_path / "mask.nii.gz")
    assert main(["biometry", str(nifti), "-v"]) == 0
    assert main(["-v", "biometry", str(nifti)]) == 0
    # `fetalheadseg models --json | head -c 0`: the reader is gone before anything is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    code = "from FetalHeadSegLib.cli import main; raise SystemExit(main(['models', '--json']))"
    finished = subprocess.run([sys.executable, "-c", code], stdout=write_end, stderr=subprocess.PIPE, timeout=120)
    os.close(write_end)
    assert finished.returncode == 0 and b"Traceback" not in finished.stderr and b"BrokenPipe" not in finished.stderr
