"""``python -m training.train CONFIG [key=value ...]`` (or under ``torchrun --nproc-per-node N -m training.train``).

Trains every cascade level of the config into its run folder: ``config.json``, ``splits.json``, checkpoints
(resumed automatically), ``metrics_<level>.csv`` (training) and ``validation_<level>.csv`` logs, ``level<n>.pt``
weights and ``metrics.json`` (validation scores). Export the result with ``python -m training.export RUN_DIR OUT``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from FetalHeadSegLib.core.errors import FetalHeadSegError
from FetalHeadSegLib.inference.cascade import CascadeMode
from training import distributed
from training.config import TrainConfig, read_config
from training.context import context_maps
from training.data import CaseArrays, build_arrays, split_by_subject
from training.engine import build_level, level_network_config, train_level
from training.roi_data import ContextRedraw, build_level_arrays, select
from training.validation import cascade_multiple, evaluate, predict_context


def check_labels(config: TrainConfig, labels: list[np.ndarray], case_ids: list[str]) -> None:
    """Refuse label values the network cannot predict, before any GPU time is spent."""
    from FetalHeadSegLib.core.errors import ConfigError

    for case_id, label in zip(case_ids, labels, strict=True):
        largest = int(label.max())
        if largest >= config.classes:
            raise ConfigError(
                f"case {case_id}: label value {largest} but the network predicts {config.classes} "
                "classes (set data.head_labels or network.out_channels)"
            )
        if largest == 0:
            raise ConfigError(f"case {case_id}: the label map is empty")


def check_batch_shapes(config: TrainConfig, labels: list[np.ndarray]) -> None:
    """Batches of several cases need one shape: refuse differing shapes without patch_size before training."""
    from FetalHeadSegLib.core.errors import ConfigError
    from training.data import padded_shape

    if config.batch_size == 1 or config.patch_size is not None:
        return
    multiple = config.network.size_multiple
    shapes = {padded_shape(label.shape, multiple, label.shape[2] == 1) for label in labels}
    if len(shapes) > 1:
        raise ConfigError(
            f"batch_size {config.batch_size} needs cases of one shape, but the padded shapes differ "
            f"({sorted(shapes)[:3]} ...): set patch_size"
        )


def run(config: TrainConfig) -> dict[str, dict[str, float]]:
    """Train all levels; returns the validation scores per level (on the main process)."""
    dist = distributed.setup(config.device)
    torch.manual_seed(config.seed + dist.rank)
    if dist.device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    run_dir = Path(config.run_dir)

    def log(message: str) -> None:
        if dist.is_main:
            print(message, flush=True)

    try:
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        roi = config.cascade.mode is CascadeMode.ROI
        if dist.is_main or not config.data.cache:
            level_data = _build(config, roi, log)
        distributed.barrier()
        if not dist.is_main and config.data.cache:
            level_data = _build(config, roi, log)
        arrays = level_data[0][0]
        check_labels(config, arrays.labels, arrays.case_ids)
        check_batch_shapes(config, arrays.labels)
        train, validation = _split(config, arrays, run_dir if dist.is_main else None, log)
        scores: dict[str, dict[str, float]] = {}
        train_context = val_context = None
        context_draw = None
        network = None
        for level in range(config.levels):
            if level > 0 and roi:  # the finer levels' own crops, split like level 1's cases
                level_arrays, level_contexts = level_data[0][level], level_data[1][level]
                coarse = train
                train, train_context = select(level_arrays, level_contexts, train.case_ids)
                validation, val_context = select(level_arrays, level_contexts, validation.case_ids)
                if config.roi_context.redraw and not config.reused(level):
                    context_draw = ContextRedraw(train, coarse, config.roi_context, config.data.workers)
            elif level > 0:
                assert network is not None
                train_context = context_maps(config, level, train, train_context, network, dist, run_dir, log)
                val_context = predict_context(
                    network, level_network_config(config, level - 1), validation, val_context, cascade_multiple(config)
                )
            if config.reused(level):  # taken as it is from finetune_from
                log(f"level {level + 1}: reused from {config.finetune_from}")
                network = build_level(config, level).to(dist.device)
            else:
                network = train_level(
                    config,
                    level,
                    train,
                    train_context,
                    dist,
                    run_dir,
                    f"level{level}",
                    log,
                    (validation, val_context),
                    context_draw,
                )
            if dist.is_main:
                torch.save({k: v.cpu() for k, v in network.state_dict().items()}, run_dir / f"level{level}.pt")
                scores[f"level{level}"] = evaluate(
                    network,
                    level_network_config(config, level),
                    validation,
                    val_context,
                    config.task,
                    cascade_multiple(config),
                )
                log(f"level {level + 1} validation: {scores[f'level{level}']}")
        if dist.is_main:
            (run_dir / "metrics.json").write_text(json.dumps(scores, indent=2) + "\n")
        return scores
    finally:
        distributed.teardown()


def prepare(config: TrainConfig) -> None:
    """Build the data caches (``data.cache``) and stop: a run that starts later, on this machine or with the caches
    copied to another, reads them instead of preparing the cases again."""
    if not config.data.cache:
        from FetalHeadSegLib.core.errors import ConfigError

        raise ConfigError("--prepare-only writes the data caches: set data.cache")
    level_data = _build(config, config.cascade.mode is CascadeMode.ROI, print)
    print(f"prepared {[len(arrays) for arrays in level_data[0]]} cases per level")


def _split(
    config: TrainConfig, arrays: CaseArrays, run_dir: Path | None, log: Callable[[str], None]
) -> tuple[CaseArrays, CaseArrays]:
    """The training and validation cases, split by subject; the split is recorded in ``run_dir``/splits.json (the
    main process passes its run folder, the others None)."""
    train_ids, val_ids = split_by_subject(arrays.subjects, config.data.validation_fraction, config.data.split_seed)
    train, validation = arrays.subset(train_ids), arrays.subset(val_ids)
    if run_dir is not None:
        splits = {
            "train": train.case_ids,
            "validation": validation.case_ids,
            "train_subjects": sorted(set(train.subjects)),
            "validation_subjects": sorted(set(validation.subjects)),
        }
        (run_dir / "splits.json").write_text(json.dumps(splits, indent=2) + "\n")
    log(
        f"{len(train)} training and {len(validation)} validation cases "
        f"({len(set(train.subjects))} and {len(set(validation.subjects))} subjects)"
    )
    return train, validation


def _build(config: TrainConfig, roi: bool, log: Callable[[str], None]) -> tuple[list[Any], list[Any]]:
    """Every level's arrays (one pass over the data) for a roi cascade; the whole-image arrays otherwise."""
    if roi:
        return build_level_arrays(config, log)
    return [build_arrays(config.data, config.preprocessing, log)], [[]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__)
    parser.add_argument("config", type=Path, help="training config (.json, or .yaml with PyYAML)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value settings that replace the config's")
    parser.add_argument(
        "--prepare-only", action="store_true", help="build the data caches (data.cache) and stop, without training"
    )
    args = parser.parse_intermixed_args(argv)
    try:
        config = read_config(args.config, args.overrides)
        if args.prepare_only:
            prepare(config)
        else:
            run(config)
    except FetalHeadSegError as err:
        print(f"training: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
