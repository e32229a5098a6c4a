"""The spread of a subject's reference HCs across its frames, checked against spreads worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.reference_spread import compare_lines, main, subject_spreads, summary_lines

HC18_HEADER = "filename,pixel size(mm),head circumference (mm)\r\n"


def test_the_spread_is_the_largest_minus_the_smallest_hc_of_a_subjects_frames() -> None:
    spreads = subject_spreads({"007_HC": 180.0, "007_2HC": 187.5, "007_3HC": 183.0, "008_HC": 60.0, "009_HC": 99.0})
    assert [(s.subject, s.frames, s.spread_mm, s.mean_mm) for s in spreads] == [
        ("007", ("007_2HC", "007_3HC", "007_HC"), 7.5, 183.5)
    ]  # subjects with one frame have no spread


def test_the_summary_counts_spreads_beyond_five_mm_in_each_size_band() -> None:
    frames = {"001_HC": 80.0, "001_2HC": 82.0, "002_HC": 150.0, "002_2HC": 156.0, "003_HC": 250.0, "003_2HC": 244.0}
    lines = summary_lines(subject_spreads(frames), "refs")
    assert lines[0] == "refs, all sizes: 3 subjects, spread median 6.00 mm, mean 4.67 mm, over 5 mm on 2 (67%)"
    assert lines[1] == "refs, HC 0-100 mm: 1 subjects, spread median 2.00 mm, mean 2.00 mm, over 5 mm on 0 (0%)"
    assert lines[3].startswith("refs, HC 200 mm and over: 1 subjects, spread median 6.00 mm")


def test_bad_frames_are_matched_with_their_subjects_reference_spread() -> None:
    reference = {"001_HC": 177.5, "001_2HC": 186.5, "002_HC": 150.0, "002_2HC": 151.0, "003_HC": 90.0}
    measured = {"001_HC": 183.3, "001_2HC": 180.8, "002_HC": 156.5, "002_2HC": 151.2, "003_HC": 96.0}
    lines = compare_lines(reference, measured)
    assert lines[-1] == (
        "4 frames off by more than 5 mm; 3 of them have another frame of the subject among the cases, and on 2 of "
        "those the subject's references lie more than 5 mm apart: 001_2HC, 001_HC"
    )
    assert lines[4].startswith("model on the same subjects, all sizes: 2 subjects, spread median 3.90 mm")


def _inputs(folder: Path, table_rows: str, cases_text: str) -> tuple[Path, Path]:
    """An HC18 table with these rows and an evaluation's cases file, written in ``folder``."""
    table, cases = folder / "pixel_size_and_HC.csv", folder / "cases.csv"
    table.write_text(HC18_HEADER + table_rows)
    cases.write_text(cases_text)
    return table, cases


def test_the_command_reads_an_hc18_csv_and_an_evaluations_cases(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table, cases = _inputs(
        tmp_path,
        "010_HC.png,0.1,170.0\r\n010_2HC.png,0.1,176.0\r\n011_HC.png,0.2,250.0\r\n",
        "case,reference_hc_mm,hc_mm,df_mm\n010_HC,170.0,175.5,5.5\n010_2HC,176.0,175.0,-1.0\n",
    )
    assert main([str(table), "--cases-csv", str(cases)]) == 0
    out = capsys.readouterr().out
    assert "references in pixel_size_and_HC.csv, all sizes: 1 subjects, spread median 6.00 mm" in out
    assert "on 1 of those the subject's references lie more than 5 mm apart: 010_HC" in out


def test_a_cases_file_without_hc_columns_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table, cases = _inputs(tmp_path, "010_HC.png,0.1,170.0\r\n", "case,dice\n010_HC,0.9\n")
    assert main([str(table), "--cases-csv", str(cases)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(cases) in err and "hc_mm" in err
