"""Context maps for cascade level n > 0: the previous level's foreground probability on the training cases.

- ``kfold`` (recommended, ``method.md`` §1.5): K networks of level n - 1, each trained on the other folds'
  subjects, predict their held-out fold, so level n learns from realistic, imperfect context.
- ``resubstitution`` (the seed): the final level n - 1 network predicts its own training cases.
- ``perturbed`` (cheap alternative): resubstitution maps blurred and scaled per case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from training.config import TrainConfig
from training.data import CaseArrays
from training.distributed import DistInfo
from training.engine import Log, level_network_config, train_level
from training.validation import cascade_multiple, predict_context


def subject_folds(subjects: list[str], folds: int, seed: int) -> list[list[int]]:
    """Case indices of ``folds`` folds; all cases of a subject in the same fold."""
    unique = sorted(set(subjects))
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[i]: rank % folds for rank, i in enumerate(order)}
    return [[i for i, s in enumerate(subjects) if fold_of[s] == fold] for fold in range(folds)]


def context_maps(
    config: TrainConfig,
    level: int,
    arrays: CaseArrays,
    previous_context: list[np.ndarray] | None,
    previous_network: nn.Module,
    dist: DistInfo,
    run_dir: Path,
    log: Log,
) -> list[np.ndarray]:
    """Context maps (uint8, value / 255) of every training case for cascade level ``level``."""
    previous_config = level_network_config(config, level - 1)
    if config.context in ("resubstitution", "perturbed"):
        maps = predict_context(previous_network, previous_config, arrays, previous_context, cascade_multiple(config))
        if config.context == "perturbed":
            maps = [_perturb(m, np.random.default_rng([config.seed, level, i])) for i, m in enumerate(maps)]
        return maps
    folds = subject_folds(arrays.subjects, config.folds, config.seed + level)
    out_of_fold: list[np.ndarray | None] = [None] * len(arrays)
    for fold, held_out in enumerate(folds):
        if not held_out:
            continue
        kept = [i for i in range(len(arrays)) if i not in set(held_out)]
        log(f"context for level {level}: fold {fold + 1}/{len(folds)} ({len(kept)} training, {len(held_out)} held out)")
        subset_context = None if previous_context is None else [previous_context[i] for i in kept]
        network = train_level(
            config, level - 1, arrays.subset(kept), subset_context, dist, run_dir, f"level{level - 1}_fold{fold}", log
        )
        held_context = None if previous_context is None else [previous_context[i] for i in held_out]
        predicted = predict_context(
            network, previous_config, arrays.subset(held_out), held_context, cascade_multiple(config)
        )
        for index, value in zip(held_out, predicted, strict=True):
            out_of_fold[index] = value
    return [m for m in out_of_fold if m is not None]


def _perturb(context: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sigma = rng.uniform(0.5, 2.0)
    values = gaussian_filter(context.astype(np.float32), (sigma, sigma, sigma if context.shape[2] > 1 else 0.0))
    values = values * rng.uniform(0.7, 1.0)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
