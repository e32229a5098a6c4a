"""A cohort never loses a user's data: inputs are never written over, cases never collide, existing outputs are
kept unless asked, a killed run leaves only complete cases and a re-run resumes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from FetalHeadSegLib.cli import main
from FetalHeadSegLib.core.errors import OutputError
from FetalHeadSegLib.core.io import write_image
from FetalHeadSegLib.phantom import PhantomConfig, generate_phantom
from FetalHeadSegLib.report.cohort import Case, expand_inputs, is_tool_output, plan_cases

from tiny_models import make_tiny_bundle


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cohort")
    case = generate_phantom(PhantomConfig(dimension=3, size=(40, 32, 32)), seed=7)
    volume = write_image(case.image, root / "volume.nii.gz")
    return {"root": root, "volume": volume, "model": make_tiny_bundle(root / "model").path}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _segment(workspace: dict[str, Path], *arguments: str) -> int:
    return main(["segment", *arguments, "--model", str(workspace["model"]), "--progress", "none", "--no-qc"])


def test_same_named_inputs_in_different_folders_never_collide(workspace: dict[str, Path], tmp_path: Path) -> None:
    for patient in ("p1", "p2"):
        (tmp_path / "cohort" / patient).mkdir(parents=True)
        (tmp_path / "cohort" / patient / "image.nii.gz").write_bytes(workspace["volume"].read_bytes())
    out = tmp_path / "out"
    assert _segment(workspace, str(tmp_path / "cohort" / "p1"), str(tmp_path / "cohort" / "p2"), "-o", str(out)) == 0
    for patient in ("p1", "p2"):
        record = json.loads((out / patient / "image_biometry.json").read_text())
        assert record["input"].endswith(f"{patient}/image.nii.gz")
        assert (out / patient / "image.seg.nrrd").exists()
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert {row["outputs"] for row in rows} == {str(out / "p1"), str(out / "p2")}


def test_same_stem_in_one_folder_gets_the_full_name(tmp_path: Path) -> None:
    inputs = [tmp_path / "scan.nii.gz", tmp_path / "scan.nrrd", tmp_path / "other.nrrd"]
    stems = [case.stem for case in plan_cases(inputs, tmp_path / "out")]
    assert stems == ["scan_nii_gz", "scan_nrrd", "other"]


def test_an_input_is_never_an_output(workspace: dict[str, Path], tmp_path: Path, capsys) -> None:
    # The label map of scan.nii.gz written next to it is scan_seg.nii.gz, never the scan itself.
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(workspace["volume"].read_bytes())
    before = _digest(scan)
    assert _segment(workspace, str(scan), "-o", str(tmp_path), "--format", "nii.gz") == 0
    assert _digest(scan) == before and (tmp_path / "scan_seg.nii.gz").exists()
    # An input whose name is an output name of its own case is refused before anything runs.
    clash = tmp_path / "b" / "case.seg.nrrd"
    clash.parent.mkdir()
    clash.write_bytes(workspace["volume"].read_bytes())
    with pytest.raises(OutputError, match="is an input"):
        plan_cases([clash], clash.parent)
    capsys.readouterr()
    assert _segment(workspace, str(clash), "-o", str(clash.parent)) == 2
    assert "is an input" in capsys.readouterr().err
    assert sorted(p.name for p in clash.parent.iterdir()) == ["case.seg.nrrd"]


def test_rerun_into_the_input_folder_skips_own_outputs_and_keeps_results(
    workspace: dict[str, Path], tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "scan.nii.gz").write_bytes(workspace["volume"].read_bytes())
    assert _segment(workspace, str(folder), "-o", str(folder), "--tta") == 0
    written = {path.name: _digest(path) for path in folder.iterdir() if path.name != "scan.nii.gz"}
    assert {"scan.seg.nrrd", "scan_biometry.json", "scan_uncertainty.nii.gz", "summary.csv"} <= set(written)
    assert expand_inputs([str(folder)]) == [folder / "scan.nii.gz"]  # its own outputs are not inputs
    assert all(is_tool_output(folder / name) for name in written if name != "summary.csv")
    capsys.readouterr()
    # Default: existing outputs are refused, with one line saying what to do; nothing changes.
    assert _segment(workspace, str(folder), "-o", str(folder)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--skip-existing" in error[0] and "--overwrite" in error[0]
    assert {path.name: _digest(path) for path in folder.iterdir() if path.name != "scan.nii.gz"} == written
    # --skip-existing keeps the complete case byte for byte; --overwrite replaces it.
    mtime = (folder / "scan.seg.nrrd").stat().st_mtime_ns
    assert _segment(workspace, str(folder), "-o", str(folder), "--skip-existing") == 0
    assert (folder / "scan.seg.nrrd").stat().st_mtime_ns == mtime
    rows = list(csv.DictReader((folder / "summary.csv").open()))
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["hc_mm"]
    assert _segment(workspace, str(folder), "-o", str(folder), "--overwrite") == 0
    assert (folder / "scan.seg.nrrd").stat().st_mtime_ns != mtime
    assert not (folder / "scan_uncertainty.nii.gz").stat().st_mtime_ns > time.time_ns()


def test_tta_writes_the_uncertainty_map_it_promises(workspace: dict[str, Path], tmp_path: Path) -> None:
    from FetalHeadSegLib.core.io import read_image

    assert _segment(workspace, str(workspace["volume"]), "-o", str(tmp_path), "--tta") == 0
    uncertainty = read_image(tmp_path / "volume_uncertainty.nii.gz")
    image = read_image(workspace["volume"])
    assert uncertainty.shape == image.shape
    np.testing.assert_allclose(uncertainty.ijk_to_ras, image.ijk_to_ras, atol=1e-5)
    assert 0.0 <= float(uncertainty.array.min()) and float(uncertainty.array.max()) <= 1.0


def test_one_file_gets_a_summary_with_rounded_ga_and_z_scores(workspace: dict[str, Path], tmp_path: Path) -> None:
    assert _segment(workspace, str(workspace["volume"]), "-o", str(tmp_path), "--ga-weeks", "24") == 0
    (row,) = csv.DictReader((tmp_path / "summary.csv").open())
    record = json.loads((tmp_path / "volume_biometry.json").read_text())
    assert row["status"] == "ok" and row["spacing_source"] == "header" and row["units"] == "mm"
    assert row["review_recommended"] == str(record["review_recommended"])
    assert row["review_reasons"] == ";".join(record["review_reasons"])
    assert float(row["hc_mm"]) == pytest.approx(record["hc_mm"], abs=0.005)
    assert float(row["hc_z"]) == pytest.approx(record["size_for_ga"]["hc"]["z_score"], abs=0.005)
    ga = row["ga_intergrowth_weeks"]
    assert ga == "" or len(ga.split(".")[-1]) <= 1


def test_a_killed_cohort_keeps_finished_cases_whole_and_a_rerun_resumes(
    workspace: dict[str, Path], tmp_path: Path
) -> None:
    """kill -9 of a real process mid-cohort: every case is complete or absent, no staging folder stays behind
    once the re-run has started, and --skip-existing finishes the rest without touching what was done."""
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for number in range(8):
        (cohort / f"case{number}.nii.gz").write_bytes(workspace["volume"].read_bytes())
    out = tmp_path / "out"
    command = [sys.executable, "-m", "FetalHeadSegLib", "segment", str(cohort), "-o", str(out)]
    command += ["--model", str(workspace["model"]), "--progress", "none", "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*_biometry.json"))) < 2:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = sorted(out.glob("*_biometry.json"))
    assert 2 <= len(finished) < 8, "the run was not interrupted mid-cohort"
    cases = [Case(cohort / f"case{n}.nii.gz", out, f"case{n}") for n in range(8)]
    done = {case.stem: {p.name: p.stat().st_mtime_ns for p in case.existing_outputs()} for case in cases}
    for case in cases:
        if case.is_complete():
            assert {f"{case.stem}.seg.nrrd", f"{case.stem}_qc.png"} <= set(done[case.stem])
    subprocess.run([*command, "--skip-existing"], check=True, timeout=300)
    assert all(case.is_complete() for case in cases)
    for case in cases:
        if f"{case.stem}_biometry.json" in done[case.stem]:
            now = {p.name: p.stat().st_mtime_ns for p in case.existing_outputs()}
            assert now == done[case.stem], f"{case.stem} was complete and has been rewritten"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a staging folder was left behind"
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert sorted(Path(row["input"]).name for row in rows) == sorted(f"case{n}.nii.gz" for n in range(8))
    assert {row["status"] for row in rows} == {"ok"}
