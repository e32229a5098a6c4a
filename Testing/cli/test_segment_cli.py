"""``fetalheadseg segment`` and ``models`` end to end on a tiny phantom with a tiny random-weight model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import slicerio

from FetalHeadSegLib.cli import main
from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.core.io import read_image, write_image
from FetalHeadSegLib.core.samples import get_sample
from FetalHeadSegLib.phantom import PhantomConfig, generate_phantom

from tiny_models import make_tiny_bundle

SCHEMA = json.loads((Path(__file__).parents[1] / "data" / "markups-schema-v1.0.3.json").read_text())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("segment")
    case = generate_phantom(PhantomConfig(dimension=3, size=(48, 40, 32)), seed=3)
    volume = write_image(case.image, root / "case.nii.gz")
    frame_case = generate_phantom(PhantomConfig(dimension=2, size=(96, 64)), seed=4)
    frame = write_image(frame_case.image, root / "frame.nrrd")
    model = make_tiny_bundle(root / "model3d").path
    return {"root": root, "volume": volume, "frame": frame, "model": model}


def test_segment_writes_slicer_ready_outputs(workspace: dict[str, Path], tmp_path: Path) -> None:
    code = main(
        [
            "segment",
            str(workspace["volume"]),
            "-o",
            str(tmp_path),
            "--model",
            str(workspace["model"]),
            "--device",
            "cpu",
            "--progress",
            "none",
        ]
    )
    assert code == 0
    segmentation = slicerio.read_segmentation(str(tmp_path / "case.seg.nrrd"))
    (segment,) = segmentation["segments"]
    assert segment["name"] == "Head" and segment["labelValue"] == 1
    assert segment["terminology"]["type"] == ["SCT", "69536005", "Head"]
    image = read_image(workspace["volume"])
    labels = read_image(tmp_path / "case.seg.nrrd")
    assert labels.shape == image.shape == (48, 40, 32)
    np.testing.assert_allclose(labels.ijk_to_ras, image.ijk_to_ras, atol=1e-6)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.ijk_to_ras
    np.testing.assert_allclose(segmentation["ijkToLPS"], lps, atol=1e-5)
    record = json.loads((tmp_path / "case_biometry.json").read_text())
    assert {"hc_mm", "bpd_mm", "ofd_mm", "head_volume_ml", "flags", "provenance"} <= set(record)
    assert record["provenance"]["model_id"] == "tiny-test-model" and record["provenance"]["device"] == "cpu"
    assert isinstance(record["review_recommended"], bool) and isinstance(record["review_reasons"], list)
    assert record["review_recommended"] == bool(record["review_reasons"])
    assert (tmp_path / "case_qc.png").exists()
    for markup in tmp_path.glob("*.mrk.json"):
        jsonschema.validate(json.loads(markup.read_text()), SCHEMA)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_jsonl_progress_for_a_supervising_process(workspace: dict[str, Path], tmp_path: Path, capsys) -> None:
    import torch

    threads = torch.get_num_threads()
    try:
        code = main(
            [
                "segment",
                str(workspace["volume"]),
                "-o",
                str(tmp_path),
                "--model",
                str(workspace["model"]),
                "--progress",
                "jsonl",
                "--format",
                "nii.gz",
                "--no-qc",
                "--threads",
                "1",
            ]
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and kinds[-2:] == ["result", "done"]
    fractions = [event["fraction"] for event in events if event["event"] == "progress"]
    assert fractions and all(0.0 <= f <= 1.0 for f in fractions)
    assert {"load", "stage1", "stage2", "postprocess", "biometry"} <= {e.get("stage") for e in events}
    assert Path(events[-2]["outputs"]["labels"]).name == "case_seg.nii.gz"  # never the name of an input scan
    assert not (tmp_path / "case_qc.png").exists()


def test_a_cohort_goes_on_after_a_failure(workspace: dict[str, Path], tmp_path: Path, capsys) -> None:
    folder = tmp_path / "cohort"
    folder.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        (folder / name).write_bytes(workspace["volume"].read_bytes())
    (folder / "broken.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = main(["segment", str(folder), str(workspace["frame"]), "-o", str(out), "--model", str(workspace["model"])])
    assert code == 2
    rows = list(csv.DictReader((out / "summary.csv").open()))
    status = {Path(row["input"]).name: row["status"] for row in rows}
    assert status == {"a.nii.gz": "ok", "b.nii.gz": "ok", "broken.nii.gz": "failed", "frame.nrrd": "failed"}
    assert "is a 2D frame" in next(r["error"] for r in rows if r["input"].endswith("frame.nrrd"))
    assert "2 of 4 segmented" in capsys.readouterr().err


def test_damaged_model_is_refused_and_nothing_written(workspace: dict[str, Path], tmp_path: Path, capsys) -> None:
    model = make_tiny_bundle(tmp_path / "model").path
    weights = model / "weights" / "level0.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = tmp_path / "out"
    code = main(["segment", str(workspace["volume"]), "-o", str(out), "--model", str(model)])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and error[-1].startswith("fetalheadseg: error:") and "SHA-256 mismatch" in error[-1]
    assert not out.exists()


@pytest.mark.parametrize(
    "case", ["missing", "constant", "label map", "4d", "nan spacing", "unknown model", "bad device", "bad threads"]
)
def test_bad_inputs_exit_2_with_one_line(
    workspace: dict[str, Path], tmp_path: Path, capsys, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import SimpleITK as sitk

    monkeypatch.setenv("FETALHEADSEG_HOME", str(tmp_path / "empty-home"))
    model = ["--model", str(workspace["model"])]
    constant = write_image(Image(np.full((16, 16, 16), 7, np.uint8), make_ijk_to_ras((1, 1, 1))), tmp_path / "c.nrrd")
    series = sitk.JoinSeries([sitk.GetImageFromArray(np.ones((8, 8, 8), np.uint8))] * 2)
    sitk.WriteImage(series, str(tmp_path / "4d.nii.gz"))
    arguments, words = {
        "missing": ([str(tmp_path / "none.nii.gz"), *model], "no such file"),
        "constant": ([str(constant), *model], "same value"),
        "label map": ([str(get_sample("phantom3d_s000001").annotation_path), *model], "a label map or mask"),
        "4d": ([str(tmp_path / "4d.nii.gz"), *model], "4D"),
        "nan spacing": ([str(workspace["volume"]), "--spacing", "nan", *model], "spacing"),
        "unknown model": ([str(workspace["volume"]), "--model", "no-such-model"], "no model 'no-such-model'"),
        "bad device": ([str(workspace["volume"]), "--device", "cuda:7", *model], "CUDA"),
        "bad threads": ([str(workspace["volume"]), "--threads", "0", *model], "--threads must be at least 1"),
    }[case]
    out = tmp_path / "out"
    code = main(["segment", *arguments, "-o", str(out), "--progress", "none"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0] and "Traceback" not in lines[0]
    assert not out.exists()


def test_models_lists_and_verifies(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("FETALHEADSEG_HOME", str(home))
    make_tiny_bundle(tmp_path / "tiny", model_id="tiny-user-model", tta_by_default=True)
    assert main(["models", "--json", "--import", str(tmp_path / "tiny")]) == 0
    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["tiny-user-model"]["status"] == "ok" and rows["tiny-user-model"]["labels"] == ["Head"]
    assert rows["tiny-user-model"]["networks_per_level"] == 1 and rows["hc18-plane-2d"]["networks_per_level"] == 2
    assert rows["tiny-user-model"]["tta_by_default"] and not rows["psfhs-intrapartum-2d"]["tta_by_default"]
    assert main(["models"]) == 0
    listed = {line.split("@")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "flips by default" in listed["tiny-user-model"] and "flips" not in listed["psfhs-intrapartum-2d"]
    weights = Path(rows["tiny-user-model"]["path"]) / "weights" / "level1.pt"
    weights.write_bytes(b"tampered")
    assert main(["models"]) == 2
    assert "FAILED" in capsys.readouterr().out


def test_a_frame_without_pixel_size_is_refused_unless_pixel_units(tmp_path: Path, capsys) -> None:
    frame_case = generate_phantom(PhantomConfig(dimension=2, size=(96, 64)), seed=4)
    png = write_image(frame_case.image, tmp_path / "frame.png")
    model = make_tiny_bundle(tmp_path / "model2d", dimension=2, levels=1).path
    arguments = ["segment", str(png), "--model", str(model), "--no-qc"]
    assert main([*arguments, "-o", str(tmp_path / "a")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()  # one line, printed once, in text mode too
    assert str(png) in line and "--spacing" in line and "--pixel-units" in line
    assert not (tmp_path / "a").exists()
    assert main([*arguments, "-o", str(tmp_path / "b"), "--spacing", "0.3"]) == 0
    record = json.loads((tmp_path / "b" / "frame_biometry.json").read_text())
    assert record["spacing_mm"] == [0.3, 0.3] and record["spacing_source"] == "command_line"
    assert main([*arguments, "-o", str(tmp_path / "c"), "--pixel-units"]) == 0
    record = json.loads((tmp_path / "c" / "frame_biometry.json").read_text())
    assert record["units"] == "px" and record["spacing_source"] == "none"
    if record["hc_px"] is not None:
        assert not [key for key, value in record.items() if key.endswith("_mm") and value is not None]
    assert not list((tmp_path / "c").glob("*.mrk.json"))  # markups are in mm: none in pixel units
    stderr = capsys.readouterr().err
    assert "\r" not in stderr and "model tiny-test-model" in stderr  # a log file gets lines, not a live bar


def test_with_json_lines_every_fatal_error_is_an_event(workspace: dict[str, Path], tmp_path: Path, capsys) -> None:
    """A supervising program (the Slicer module) reads the error from stdout, never from stderr."""
    model = ["--model", str(workspace["model"]), "--progress", "jsonl"]
    for arguments, code in (
        ([str(tmp_path / "none.nii.gz")], "InputImageError"),  # before any case runs
        ([str(workspace["frame"])], "InputImageError"),  # the one case fails (a 2D frame, a 3D model)
    ):
        assert main(["segment", *arguments, "-o", str(tmp_path / "out"), *model]) == 2
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        errors = [event for event in events if event["event"] == "error"]
        assert len(errors) == 1 and errors[0]["code"] == code and errors[0]["message"]
