"""``fetalheadseg segment``: segment and measure images, one file or a whole cohort."""

from __future__ import annotations

import argparse
import csv
import glob
import io
import sys
import time
from pathlib import Path
from typing import Any

from FetalHeadSegLib.errors import ConfigError, FetalHeadSegError, InputImageError


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "segment",
        help="segment the fetal head and measure it (files, folders or globs)",
        description="Segment the fetal head in 3D volumes or 2D frames and measure it. For each input, writes "
        "the label map, the biometry JSON, Slicer markups and a QC picture into OUTDIR; for several inputs also "
        "summary.csv. A failing input is reported and the others go on; the exit code is 2 if any failed.",
    )
    parser.add_argument("inputs", nargs="+", help="image files, folders of images, or glob patterns")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--model",
        help="model id (see `fetalheadseg models`) or bundle folder "
        "(default: the installed model for the input's dimension)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--spacing", type=float, nargs="+", metavar="MM", help="pixel/voxel size for all inputs")
    parser.add_argument(
        "--spacing-csv",
        type=Path,
        metavar="FILE",
        help="per-file pixel sizes (HC18 style: filename,pixel size(mm)[,...])",
    )
    parser.add_argument("--format", choices=["seg.nrrd", "nii.gz"], default="seg.nrrd", help="label map format")
    parser.add_argument("--ga-weeks", type=float, metavar="W", help="known gestational age (z-scores, centiles)")
    parser.add_argument("--no-biometry", action="store_true", help="segment only")
    parser.add_argument("--tta", action="store_true", help="test-time flips: uncertainty map and a quality flag")
    parser.add_argument("--tile-size", type=int, metavar="N", help="always predict in tiles of N voxels")
    parser.add_argument("--no-qc", action="store_true", help="do not write the QC picture")
    parser.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads for the networks (default: torch's, all cores)"
    )
    parser.add_argument(
        "--progress",
        choices=["text", "jsonl", "none"],
        default="text",
        help="progress on stderr as text (default), JSON lines on stdout, or none",
    )
    parser.set_defaults(run=run)


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files named, images inside named folders (sorted), and matches of glob patterns, without duplicates."""
    from FetalHeadSegLib.io import SUPPORTED_SUFFIXES

    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(SUPPORTED_SUFFIXES))
        elif any(ch in pattern for ch in "*?[") and not path.exists():
            found += sorted(Path(p) for p in glob.glob(pattern))
        else:
            found.append(path)
    unique: dict[Path, None] = dict.fromkeys(found)
    if not unique:
        raise InputImageError(f"no input images found in {' '.join(patterns)}")
    return list(unique)


class _Reporter:
    """Progress as text on stderr, JSON lines on stdout, or nothing."""

    def __init__(self, mode: str, total: int) -> None:
        self.mode, self.total, self.index, self.name = mode, total, 0, ""

    def start_input(self, index: int, path: Path) -> None:
        self.index, self.name = index, path.name

    def progress(self, stage: str, fraction: float, message: str) -> None:
        from FetalHeadSegLib.protocol import emit

        if self.mode == "jsonl":
            emit("progress", input=self.name, stage=stage, fraction=round(fraction, 4), message=message)
        elif self.mode == "text":
            overall = (self.index + 0.5) / self.total
            bar = "#" * int(24 * overall)
            print(
                f"\r[{bar:<24}] {self.index + 1}/{self.total} {self.name}: {stage} {message:<28}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def event(self, event: str, **fields: Any) -> None:
        from FetalHeadSegLib.protocol import emit

        if self.mode == "jsonl":
            emit(event, **fields)
        elif self.mode == "text" and event in ("result", "error", "warning"):
            text = {
                "result": lambda: f"ok ({fields['seconds']:.1f} s)",
                "error": lambda: f"FAILED: {fields['message']}",
                "warning": lambda: f"warning {fields['code']}: {fields['message']}",
            }[event]()
            print(f"\r{' ' * 100}\r{self.index + 1}/{self.total} {self.name}: {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from FetalHeadSegLib._version import __version__
    from FetalHeadSegLib.inference import InferenceOptions

    inputs = expand_inputs(args.inputs)
    spacing_table = _spacing_table(args.spacing_csv)
    if args.tile_size is not None and (args.tile_size < 8 or args.tile_size % 8):
        raise ConfigError(f"--tile-size must be a positive multiple of 8, got {args.tile_size}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    options = InferenceOptions(
        tta=args.tta, tile_size=args.tile_size, biometry=not args.no_biometry, ga_weeks=args.ga_weeks
    )
    reporter = _Reporter(args.progress, len(inputs))
    models = _ModelCache(args.model, args.device)
    rows, failed = [], 0
    for index, path in enumerate(inputs):
        reporter.start_input(index, path)
        start = time.perf_counter()
        try:
            outputs, row = _segment_one(path, args, options, models, spacing_table, reporter)
        except FetalHeadSegError as err:
            reporter.event("error", input=str(path), code=type(err).__name__, message=str(err))
            if len(inputs) == 1:
                raise
            failed += 1
            rows.append({"input": str(path), "status": "failed", "error": str(err)})
            continue
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        reporter.event(
            "result",
            input=str(path),
            outputs={k: str(v) for k, v in outputs.items()},
            seconds=row["seconds"],
            version=__version__,
        )
    if len(inputs) > 1 and len(rows) > failed:
        _write_summary(rows, args.output / "summary.csv")
    reporter.event("done", succeeded=len(inputs) - failed, failed=failed)
    if args.progress == "text":
        print(f"{len(inputs) - failed} of {len(inputs)} segmented; outputs in {args.output}", file=sys.stderr)
    return 0 if failed == 0 else 2


class _ModelCache:
    """Loads each model once: the one named by --model, or the default for each input dimension."""

    def __init__(self, name: str | None, device: str) -> None:
        self.name, self.device = name, device
        self.loaded: dict[Any, Any] = {}

    def get(self, dimension: int) -> Any:
        from FetalHeadSegLib.catalog import default_model, find_model
        from FetalHeadSegLib.inference import Segmenter

        key = self.name or dimension
        if key not in self.loaded:
            bundle = find_model(self.name) if self.name else default_model(dimension)
            self.loaded[key] = Segmenter(bundle, self.device)
        return self.loaded[key]


def _segment_one(
    path: Path,
    args: argparse.Namespace,
    options: Any,
    models: _ModelCache,
    spacing_table: dict[str, float],
    reporter: _Reporter,
) -> tuple[dict[str, Path], dict[str, Any]]:
    from FetalHeadSegLib.cli.biometry_command import output_stem
    from FetalHeadSegLib.io import is_raster_path, read_image
    from FetalHeadSegLib.outputs import write_outputs
    from FetalHeadSegLib.quality import Flag

    spacing = args.spacing if args.spacing else spacing_table.get(path.name)
    image = read_image(path, spacing_mm=spacing)
    segmenter = models.get(2 if image.is_2d else 3)
    reporter.event(
        "start",
        input=str(path),
        model_id=segmenter.bundle.id,
        model_sha256=segmenter.bundle.fingerprint,
        device=str(segmenter.device),
    )
    result = segmenter.segment(image, options, progress=reporter.progress, source=str(path))
    if spacing is None and is_raster_path(path):
        flag = Flag("spacing_unknown", "the file carries no pixel size: lengths are in pixels, not mm")
        result.flags.append(flag)
        if result.biometry is not None:
            result.biometry = result.biometry.with_flags([flag])
    for flag in result.flags:
        reporter.event("warning", input=str(path), code=flag.code, message=flag.message)
    outputs = write_outputs(
        result, image, args.output, output_stem(path), args.format, qc=not args.no_qc, source=str(path)
    )
    measured = result.biometry
    row: dict[str, Any] = {"input": str(path), "status": "ok", "error": ""}
    if measured is not None:
        record = measured.to_dict()
        row.update(
            {key: record[key] for key in ("hc_mm", "bpd_mm", "ofd_mm", "cephalic_index", "head_volume_ml", "aop_deg")}
        )
        row["ga_intergrowth_weeks"] = (record["ga_weeks"].get("intergrowth21_2016_hc") or {}).get("weeks")
    row["flags"] = ";".join(flag.code for flag in (measured.flags if measured is not None else result.flags))
    return outputs, row


def _spacing_table(path: Path | None) -> dict[str, float]:
    if path is None:
        return {}
    from FetalHeadSegLib.hc18 import read_pixel_size_csv

    return {name: row.pixel_size_mm for name, row in read_pixel_size_csv(path).items()}


SUMMARY_COLUMNS = [
    "input",
    "status",
    "hc_mm",
    "bpd_mm",
    "ofd_mm",
    "cephalic_index",
    "head_volume_ml",
    "aop_deg",
    "ga_intergrowth_weeks",
    "flags",
    "seconds",
    "error",
]


def _write_summary(rows: list[dict[str, Any]], path: Path) -> None:
    from FetalHeadSegLib.atomic import write_text_atomic

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
