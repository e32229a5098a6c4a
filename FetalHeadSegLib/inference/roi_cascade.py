"""The coarse-to-fine cascade (``CascadeMode.ROI``): level 1 on the whole image at a coarse grid, every later
level on the head's region at its own finer grid, with the previous level's probability as context, pasted back.
With ``convex_context``, level 1's head is completed to its convex hull first (a fetal head is convex).

Each level may average flipped predictions (test-time augmentation); the last level's flips give the uncertainty
map. When level 1 finds no head the finer levels are skipped and level 1's answer stands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from FetalHeadSegLib.core.image import Image
from FetalHeadSegLib.core.tasks import task_spec
from FetalHeadSegLib.inference.preprocessing import Prepared, prepare, quantise_unit, resample_like
from FetalHeadSegLib.inference.roi import crop, foreground_box, paste
from FetalHeadSegLib.measure.metrics import dice
from FetalHeadSegLib.measure.quality import Flag

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from FetalHeadSegLib.inference.engine import InferenceRun
    from FetalHeadSegLib.models.bundle import ModelBundle

LEVEL_AGREEMENT_MIN_DICE = 0.8
"""Below this Dice between level 1's head and the final head, the levels disagree: the result needs review."""

CONVEX_CONTEXT_PROBABILITY = 0.7
"""Head probability given to the voxels that the convex hull adds to level 1's head (``convex_context``): above
the 0.5 decision threshold, so they count as head for the finer level's region and the levels' agreement, and short
of certainty, so the finer level still weighs the image there."""


@dataclass(frozen=True)
class CascadeOutput:
    """What a cascade returns on the input image's grid.

    Attributes:
        class_probabilities: (K, X, Y, Z) softmax probabilities.
        disagreement: with TTA, the share of flipped predictions that disagree with the majority (0-0.5), (X, Y, Z).
        votes: with TTA, (passes, ...) boolean head votes of the last level on its own grid (for the TTA flag).
        flags: what the cascade itself noticed (levels disagreeing, finer levels skipped).
        cascade_dice: Dice between the coarse level's head and the final one (coarse-to-fine cascades).
        pass_probabilities: with TTA or the mirror check on a 2D frame, returns each flipped pass's (K, X, Y, 1)
            probabilities on the input's grid, flipped back (to measure each pass alone); computed once,
            when first called.
    """

    class_probabilities: np.ndarray
    disagreement: np.ndarray | None
    votes: np.ndarray | None
    flags: list[Flag]
    cascade_dice: float | None = None
    pass_probabilities: Callable[[], Iterable[np.ndarray]] | None = None


def coarse_region(probabilities: np.ndarray) -> np.ndarray:
    """Where the finer level should look: for each foreground class, the connected region holding the most of the
    coarse level's probability for it (argmax of (K, X, Y, Z) probabilities). A false blob far from the head would
    otherwise stretch the region to the whole volume, where the finer level, trained on the head's region, goes
    wrong."""
    from FetalHeadSegLib.inference.postprocessing import keep_largest_component

    winner = np.argmax(probabilities, axis=0)
    region = np.zeros(winner.shape, dtype=bool)
    for value in range(1, probabilities.shape[0]):
        region |= keep_largest_component(winner == value, probabilities[value])
    return region


def convex_head(
    probabilities: np.ndarray,
    head_class: int,
    spacing_mm: tuple[float, float, float],
    detach_fraction: float | None,
) -> np.ndarray:
    """(K, X, Y, Z) class probabilities whose head (the component of the head class holding the most probability)
    is completed to its convex hull: where the hull adds a voxel whose head probability is below
    :data:`CONVEX_CONTEXT_PROBABILITY`, the head gets that probability and the other classes share the rest in
    their former proportions. With ``detach_fraction`` (the bundle's postprocessing), tissue stuck to the head is
    cut away first, as the final label map cuts it, so that a limb or the uterine wall against the head does not
    stretch the hull; the cut tissue keeps the probability it had."""
    from FetalHeadSegLib.inference.postprocessing import convex_hull, detach_attached_tissue, keep_largest_component

    head = keep_largest_component(np.argmax(probabilities, axis=0) == head_class, probabilities[head_class])
    core = head if detach_fraction is None else detach_attached_tissue(head, spacing_mm, detach_fraction)
    added = convex_hull(core) & ~head & (probabilities[head_class] < CONVEX_CONTEXT_PROBABILITY)
    if not added.any():
        return probabilities
    completed = probabilities.copy()
    others = 1.0 - probabilities[head_class][added]
    completed[:, added] *= (1.0 - CONVEX_CONTEXT_PROBABILITY) / np.maximum(others, 1e-12)
    completed[head_class][added] = CONVEX_CONTEXT_PROBABILITY
    return completed


def level_passes(run: InferenceRun, level: int, inputs: np.ndarray, dims: int, tta: bool) -> list[np.ndarray]:
    """One level's class probabilities for (C, X', Y', Z') padded inputs, and with TTA for each axis the task may
    mirror (each flipped back)."""
    flips = task_spec(run.segmenter.bundle.task).flip_passes(dims) if tta else [()]
    passes = []
    for number, axes in enumerate(flips):
        flipped = np.ascontiguousarray(np.flip(inputs, axes)) if axes else inputs
        probabilities = run.predict(level, flipped, number, len(flips))
        passes.append(np.flip(probabilities, axes) if axes else probabilities)
    return passes


def predict_roi_cascade(
    run: InferenceRun, image: Image, bundle: ModelBundle, size_multiple: int, tta: bool
) -> CascadeOutput:
    """Run a ``roi`` bundle's cascade on ``image`` (see the module docstring)."""
    cascade = bundle.cascade
    dims = 2 if image.is_2d else 3
    first = prepare(image, cascade.level_preprocessing[0], size_multiple)
    passes = level_passes(run, 0, first.values[np.newaxis], dims, tta)
    coarse = np.mean(passes, axis=0)
    if cascade.convex_context:
        detach = bundle.postprocessing.detach_fraction
        coarse = convex_head(coarse, task_spec(bundle.task).head_label, first.working.spacing_mm, detach)
    probabilities = first.restore(coarse)
    coarse_head = probabilities[0] < 0.5
    flags: list[Flag] = []
    disagreement: np.ndarray | None = None
    votes: np.ndarray | None = None
    if tta and bundle.levels == 1:
        votes, disagreement = flip_disagreement(passes, first)
    for level in range(1, bundle.levels):
        foreground = (1.0 - probabilities[0]).astype(np.float32)
        box = foreground_box(image.with_array(coarse_region(probabilities).astype(np.uint8)), cascade.roi_margin_mm)
        if box is None:
            flags.append(Flag("no_head_found", f"cascade level {level} found no head: the finer levels were skipped"))
            break
        region = crop(image, box)
        prepared = prepare(region, cascade.level_preprocessing[level], size_multiple)
        context = quantise_unit(resample_like(crop(image.with_array(foreground), box), prepared.working).array)
        inputs = np.stack([prepared.values, prepared.padding.pad(context)])
        passes = level_passes(run, level, inputs, dims, tta)
        probabilities = paste(probabilities, box, prepared.restore(np.mean(passes, axis=0)))
        if tta and level == bundle.levels - 1:
            votes, region_share = flip_disagreement(passes, prepared)
            disagreement = paste(np.zeros(image.shape, np.float32), box, region_share)
    agreement: float | None = None
    if bundle.levels > 1 and coarse_head.any():
        agreement = dice(coarse_head, probabilities[0] < 0.5)
        if agreement < LEVEL_AGREEMENT_MIN_DICE:
            flags.append(
                Flag(
                    "cascade_disagreement",
                    f"the coarse and fine cascade levels disagree on the head (Dice {agreement:.2f}): check it",
                )
            )
    return CascadeOutput(probabilities, disagreement, votes, flags, agreement)


def flip_disagreement(passes: list[np.ndarray], prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """The head votes of flipped passes (passes, ...) on the working grid, and per voxel of ``prepared.image``'s
    grid the share of passes on the minority side (0 unanimous, 0.5 evenly split)."""
    votes = np.stack([prepared.padding.crop(p)[0] < 0.5 for p in passes])
    share = votes.mean(axis=0)
    minority = np.minimum(share, 1.0 - share).astype(np.float32)
    return votes, prepared.restore(prepared.padding.pad(minority)[np.newaxis])[0]
