"""``python -m training.reference_spread CSV [--cases-csv CASES]``: how far the reference HC moves between frames
of one subject, the floor under an HC error.

HC18 holds up to three frames of a subject from one exam (``NNN_HC``, ``NNN_2HC``, ``NNN_3HC``), each measured by
a sonographer. Within an exam the head does not grow, so the spread of a subject's reference HCs (largest minus
smallest) is what the choice of plane and the drawing of the ellipse add to a reference. A model's error against
one frame's reference cannot be expected to stay below that spread, and a review flag, which sees only the image,
cannot predict the part of an error that lies in the reference.

With ``--cases-csv`` (per-frame results of ``training.evaluate --cases-csv``: ``case``, ``reference_hc_mm``,
``hc_mm``) it compares, on the subjects with several frames among those cases, the spread of the references with
the spread of the model's HCs, and counts the frames whose error exceeds the bad-measurement limit (5 mm) on
subjects whose references themselves lie further apart than that.

Run:
    python -m training.reference_spread ../shared/data/hc18/training_set_pixel_size_and_HC.csv
    python -m training.reference_spread ../shared/data/hc18/subset_pixel_size_and_HC.csv --cases-csv cases.csv
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from FetalHeadSegLib.core.errors import FetalHeadSegError, InputImageError
from FetalHeadSegLib.measure.hc18 import read_pixel_size_csv, subject_id
from training.case_records import HC_ERROR_BAD_MM, read_rows

SIZE_BANDS_MM = (
    ("all sizes", 0.0, math.inf),
    ("HC 0-100 mm", 0.0, 100.0),
    ("HC 100-200 mm", 100.0, 200.0),
    ("HC 200 mm and over", 200.0, math.inf),
)
"""All subjects, then the HC bands the model cards report errors in: name, lowest and (excluded) highest mean HC."""


@dataclass(frozen=True)
class SubjectSpread:
    """The HCs of one subject's frames: ``spread_mm`` is the largest minus the smallest, ``mean_mm`` their mean."""

    subject: str
    frames: tuple[str, ...]
    spread_mm: float
    mean_mm: float


def subject_spreads(hc_by_frame: Mapping[str, float]) -> list[SubjectSpread]:
    """The spread of the HCs of every subject with two or more frames (HC18 names: ``NNN_HC``, ``NNN_2HC``, ...),
    sorted by subject.

    Example:
        >>> subject_spreads({"001_HC": 170.0, "001_2HC": 176.5, "002_HC": 60.0})
        [SubjectSpread(subject='001', frames=('001_2HC', '001_HC'), spread_mm=6.5, mean_mm=173.25)]
    """
    frames_by_subject: dict[str, list[str]] = defaultdict(list)
    for frame in hc_by_frame:
        frames_by_subject[subject_id(frame)].append(frame)
    spreads = []
    for subject in sorted(frames_by_subject):
        frames = tuple(sorted(frames_by_subject[subject]))
        if len(frames) < 2:
            continue
        values = [hc_by_frame[frame] for frame in frames]
        spreads.append(SubjectSpread(subject, frames, max(values) - min(values), statistics.fmean(values)))
    return spreads


def summary_lines(spreads: Sequence[SubjectSpread], label: str) -> list[str]:
    """One line for all subjects and one per HC band: count, median spread and the share beyond 5 mm."""
    lines = []
    for band, low, high in SIZE_BANDS_MM:
        chosen = [s.spread_mm for s in spreads if low <= s.mean_mm < high]
        if not chosen:
            lines.append(f"{label}, {band}: no subject with two or more frames")
            continue
        beyond = sum(value > HC_ERROR_BAD_MM for value in chosen)
        lines.append(
            f"{label}, {band}: {len(chosen)} subjects, spread median {statistics.median(chosen):.2f} mm, "
            f"mean {statistics.fmean(chosen):.2f} mm, over {HC_ERROR_BAD_MM:g} mm on {beyond} "
            f"({beyond / len(chosen):.0%})"
        )
    return lines


def read_cases(path: Path) -> tuple[dict[str, float], dict[str, float]]:
    """The reference and the measured HC of every frame of a ``training.evaluate --cases-csv`` file (frames the
    model did not measure are left out).

    Raises:
        InputImageError: the file cannot be read or lacks the columns case, reference_hc_mm and hc_mm.
    """
    rows = read_rows(path, ("case", "hc_mm", "reference_hc_mm"))
    reference, measured = {}, {}
    for line_number, row in enumerate(rows, start=2):
        if not row["hc_mm"]:
            continue
        try:
            reference_hc, hc = float(row["reference_hc_mm"]), float(row["hc_mm"])
        except ValueError as err:
            raise InputImageError(f"{path}, line {line_number}: expected numbers in reference_hc_mm and hc_mm") from err
        if math.isfinite(hc):
            reference[row["case"]], measured[row["case"]] = reference_hc, hc
    return reference, measured


def compare_lines(reference: Mapping[str, float], measured: Mapping[str, float]) -> list[str]:
    """The spreads of the references and of the model on the same subjects, and where the bad frames lie."""
    reference_spreads = subject_spreads(reference)
    model_spreads = {s.subject: s for s in subject_spreads(measured)}
    paired = [s for s in reference_spreads if s.subject in model_spreads]
    lines = summary_lines(paired, "references of the cases")
    lines += summary_lines([model_spreads[s.subject] for s in paired], "model on the same subjects")
    bad = [frame for frame in measured if abs(measured[frame] - reference[frame]) > HC_ERROR_BAD_MM]
    spread_by_subject = {s.subject: s.spread_mm for s in reference_spreads}
    with_spread = [frame for frame in bad if subject_id(frame) in spread_by_subject]
    noisy = [frame for frame in with_spread if spread_by_subject[subject_id(frame)] > HC_ERROR_BAD_MM]
    lines.append(
        f"{len(bad)} frames off by more than {HC_ERROR_BAD_MM:g} mm; {len(with_spread)} of them have another frame of "
        f"the subject among the cases, and on {len(noisy)} of those the subject's references lie more than "
        f"{HC_ERROR_BAD_MM:g} mm apart: {', '.join(sorted(noisy)) or 'none'}"
    )
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", type=Path, help="HC18 CSV: filename, pixel size(mm), head circumference (mm)")
    parser.add_argument("--cases-csv", type=Path, help="per-frame results of training.evaluate --cases-csv")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        table = read_pixel_size_csv(args.csv)
        hc_by_frame = {Path(name).stem: row.hc_mm for name, row in table.items() if row.hc_mm is not None}
        if not hc_by_frame:
            raise InputImageError(f"{args.csv}: no head circumference column")
        lines = summary_lines(subject_spreads(hc_by_frame), f"references in {args.csv.name}")
        if args.cases_csv is not None:
            lines += compare_lines(*read_cases(args.cases_csv))
    except (FetalHeadSegError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
