"""``python -m training.export RUN_DIR OUT``: a training run folder to a FetalHeadSeg model bundle with its card."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from FetalHeadSegLib.core.errors import BundleError, FetalHeadSegError
from FetalHeadSegLib.core.tasks import Task, task_spec
from FetalHeadSegLib.models.bundle import ModelBundle, write_bundle
from training.config import TrainConfig
from training.engine import level_network_config


def export(
    run_dir: Path,
    destination: Path,
    model_id: str | None = None,
    version: str | None = None,
    half_precision: bool = False,
    extra_card: dict[str, Any] | None = None,
) -> ModelBundle:
    """Write the bundle of a finished run: every level's weights, the preprocessing, labels and model card.

    Raises:
        BundleError: the run folder is incomplete.
    """
    try:
        config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        splits = json.loads((run_dir / "splits.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BundleError(f"{run_dir}: not a finished training run ({err})") from err
    states = []
    for level in range(config.levels):
        weights = run_dir / f"level{level}.pt"
        if not weights.exists():
            raise BundleError(f"{weights}: missing; did training finish?")
        states.append(torch.load(weights, map_location="cpu", weights_only=True))
    meta = config.model
    tta_by_default = meta.get("tta_by_default", False)
    if not isinstance(tta_by_default, bool):
        raise BundleError(f"{run_dir}: model.tta_by_default must be true or false, got {tta_by_default!r}")
    card: dict[str, Any] = {
        "intended_use": meta.get("intended_use", "Research use only; not a medical device."),
        "limitations": meta.get("limitations", ""),
        "training_data": meta.get("training_data", f"{config.data.kind} data in {config.data.root}"),
        "license": meta.get("license", ""),
        "citation": meta.get("citation", ""),
        **{key: meta[key] for key in ("retraining", "timing", "history") if key in meta},
        "splits": {
            "train_cases": len(splits["train"]),
            "validation_cases": len(splits["validation"]),
            "train_subjects": len(splits["train_subjects"]),
            "validation_subjects": len(splits["validation_subjects"]),
            "split": "by subject",
        },
        "validation_metrics_working_grid": metrics,
        "training": {
            "iterations_per_level": config.iterations,
            "steps_trained_per_level": _steps_trained(run_dir, config.levels),
            "time_budget_minutes": config.time_budget_minutes,
            "levels": config.levels,
            "context": config.context,
            "batch_size": config.batch_size,
            "optimizer": config.optim.__dict__,
            "loss": config.loss.__dict__,
            "augment": config.augment.to_dict(),
            "seed": config.seed,
        },
        **(extra_card or {}),
    }
    labels = list(task_spec(config.task).labels)
    description = ModelBundle(
        path=destination,
        id=model_id or meta.get("id", run_dir.name),
        version=version or meta.get("version", "0.1.0"),
        name=meta.get("name", model_id or run_dir.name),
        dimension=config.network.spatial_dims,
        task=Task(config.task),
        networks=[level_network_config(config, level) for level in range(config.levels)],
        preprocessing=config.level_preprocessing(0),
        cascade=config.cascade,
        postprocessing=config.postprocessing,
        labels=labels,
        model_card=card,
        tta_by_default=tta_by_default,
    )
    return write_bundle(destination, description, states, half_precision=half_precision)


def _steps_trained(run_dir: Path, levels: int) -> list[int | None]:
    """The steps each level was trained for, from its last checkpoint (None: a level taken as it was, or a run
    without checkpoints); fewer than ``iterations`` where a time budget ended the level."""
    steps: list[int | None] = []
    for level in range(levels):
        checkpoint = run_dir / "checkpoints" / f"level{level}.pt"
        if checkpoint.exists():
            steps.append(int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"]))
        else:
            steps.append(None)
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("output", type=Path, help="bundle folder to write")
    parser.add_argument("--id", help="model id (default: the config's model.id)")
    parser.add_argument("--version", help="model version (default: the config's model.version)")
    parser.add_argument("--half", action="store_true", help="store the weights in float16")
    args = parser.parse_args(argv)
    try:
        bundle = export(args.run_dir, args.output, args.id, args.version, args.half)
    except FetalHeadSegError as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {bundle.path} ({bundle.id}@{bundle.version}, {bundle.levels} levels)")
    if bundle.review.calibration is None:
        print(
            "review thresholds: the defaults, not calibrated for these weights; calibrate them on held-out data with "
            f"python -m training.evaluate {bundle.path} ... --calibrate-review 0.15, with --tta and with --no-tta"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
