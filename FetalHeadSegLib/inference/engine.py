"""The inference engine: from an image to a label map, probabilities and biometry, on any device.

Named stages (``method.md`` §1.7):

1. ``prepare`` (:mod:`FetalHeadSegLib.inference.preprocessing`): check the image; resample to the model's working
   grid; normalise; quantise to the 256 input levels; pad to the cascade's size multiple.
2. ``run_cascade`` (:mod:`FetalHeadSegLib.inference.cascade`): every level on the whole volume (level n > 0 sees the
   image and level n - 1's foreground probability); on a GPU out-of-memory error retry in overlapping tiles, then on
   CPU copies of the networks; optional flip test-time augmentation whose disagreement is an uncertainty map.
3. postprocess: crop; resample the class probabilities back onto the input grid; then
   (:mod:`FetalHeadSegLib.inference.outcome`) keep each label's largest component with holes filled.
4. measure through the task registry (:mod:`FetalHeadSegLib.core.tasks`), and decide whether the result should be
   reviewed (:mod:`FetalHeadSegLib.inference.outcome`).

Training's validation calls stages 1 and 2 (``to_working_grid``, ``predict_unpadded``), so what it measures is
what ``segment`` returns.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from FetalHeadSegLib.core.errors import Cancelled, InputImageError
from FetalHeadSegLib.core.image import Image
from FetalHeadSegLib.core.tasks import task_spec
from FetalHeadSegLib.inference.cascade import CascadeMode, forward_probabilities, run_cascade
from FetalHeadSegLib.inference.outcome import (
    FlipSpreads,
    disagreeing_share,
    flip_spreads,
    label_map,
    measure_labels,
    review_probability,
    review_result,
    tta_disagreement_limit,
    tta_flags,
)
from FetalHeadSegLib.inference.preprocessing import Padding, cascade_size_multiple, check_image, prepare
from FetalHeadSegLib.inference.roi_cascade import CascadeOutput, flip_disagreement, predict_roi_cascade
from FetalHeadSegLib.inference.tiling import sliding_window
from FetalHeadSegLib.measure.quality import Flag
from FetalHeadSegLib.models.bundle import ModelBundle, load_networks

if TYPE_CHECKING:
    import torch
    from torch import nn

    from FetalHeadSegLib.measure.biometry import Biometry
    from FetalHeadSegLib.measure.review import Review

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, float, str], None]
"""``progress(stage, fraction, message)``: stage is load, stage1, stage2, ..., postprocess or biometry."""


@dataclass(frozen=True)
class InferenceOptions:
    """How to run a model.

    Attributes:
        tta: also predict the axis-flipped image(s) and average; adds an uncertainty map and a flag. None: as the
            model recommends (``ModelBundle.tta_by_default``).
        mirror_check: without ``tta``, still predict a 2D frame's left-right mirror, never averaged into the result:
            how far its HC and angle of progression move from the frame's own is a review signal (the best found
            for HC18); costs one more network pass per frame. 3D volumes never take it.
        tile_size: always predict in tiles of this size (a multiple of 8); None predicts whole volumes and tiles
            only after an out-of-memory error.
        overlap: tile overlap.
        biometry: measure the head (and the angle of progression for intrapartum models).
        ga_weeks: known gestational age for z-scores and centiles.
    """

    tta: bool | None = None
    mirror_check: bool = True
    tile_size: int | None = None
    overlap: float = 0.5
    biometry: bool = True
    ga_weeks: float | None = None


@dataclass
class Segmentation:
    """The result of one image: everything on the input image's grid."""

    labels: Image
    probability: Image
    uncertainty: Image | None
    biometry: Biometry | None
    flags: list[Flag]
    device: str
    seconds: float
    model: ModelBundle
    timings: dict[str, float] = field(default_factory=dict)
    review: Review | None = None
    tta: bool = False
    """Whether flipped predictions were averaged into the result (asked for, or the model's default)."""

    def provenance(self) -> dict[str, Any]:
        from FetalHeadSegLib._version import __version__

        return {
            "fetalheadseg_version": __version__,
            "model_id": self.model.id,
            "model_version": self.model.version,
            "model_sha256": self.model.fingerprint,
            "device": self.device,
            "tta": self.tta,
            "seconds": round(self.seconds, 3),
            "timings_s": {key: round(value, 3) for key, value in self.timings.items()},
        }


class Segmenter:
    """A model loaded on a device, ready to segment any number of images.

    The networks it holds are never moved or changed by a segmentation: a run that falls back to the CPU after
    an out-of-memory error uses CPU copies for that image only, and says so in its provenance.
    """

    def __init__(self, bundle: ModelBundle, device: str | torch.device = "auto") -> None:
        from FetalHeadSegLib.models.device import resolve_device

        self.bundle = bundle
        self.device = resolve_device(device)
        self.networks = load_networks(bundle, self.device)
        pad_multiples = [bundle.preprocessing.pad_multiple] + [
            config.pad_multiple for config in bundle.cascade.level_preprocessing
        ]
        multiples = [n.size_multiple for level in range(bundle.levels) for n in bundle.level_networks(level)]
        self.size_multiple = cascade_size_multiple(math.lcm(*pad_multiples), multiples)

    def segment(
        self,
        image: Image,
        options: InferenceOptions | None = None,
        progress: ProgressCallback | None = None,
        cancel: Callable[[], bool] | None = None,
        source: str = "the image",
    ) -> Segmentation:
        """Segment ``image`` and measure the head: prepare, predict the cascade (with flips for TTA),
        postprocess, measure.

        Args:
            image: a 3D volume or a 2D frame (shape (X, Y, 1)) of the model's dimension, any spacing.
            options: TTA, tiling, biometry, GA; defaults when None.
            progress: ``progress(stage, fraction, message)`` callback.
            cancel: polled between steps; True stops with :class:`Cancelled`.
            source: the image's name in error messages.

        Returns:
            Labels, head probability and (TTA) uncertainty on the input's exact grid, biometry, flags, provenance.

        Raises:
            InputImageError: the image cannot be segmented (constant, NaN, absurd spacing, wrong dimension).
            Cancelled: ``cancel()`` returned True between two steps.
        """
        options = options or InferenceOptions()
        tta = self.bundle.uses_tta(options.tta)
        run = InferenceRun(self, options, progress, cancel)
        start = time.perf_counter()
        check_image(image, source)
        if image.is_2d != (self.bundle.dimension == 2):
            kind = "a 2D frame" if image.is_2d else "a 3D volume"
            raise InputImageError(f"{source}: is {kind}, but model {self.bundle.id} is {self.bundle.dimension}D")
        run.report("load", 0.0, "preparing the image")
        if self.bundle.cascade.mode is CascadeMode.ROI:
            output = predict_roi_cascade(run, image, self.bundle, self.size_multiple, tta)
        else:
            output = predict_same_grid(
                run, image, self.bundle, self.size_multiple, tta, options.mirror_check and image.is_2d
            )
        run.lap("networks")
        run.report("postprocess", 0.0, "building the label map")
        class_probabilities = output.class_probabilities
        labels = label_map(self.bundle, class_probabilities, image.spacing_mm)
        run.flags += output.flags
        uncertainty = None
        tta_share = None
        if output.disagreement is not None and output.votes is not None:
            uncertainty = image.with_array(output.disagreement.astype(np.float32))
            tta_share = disagreeing_share(output.votes)
            run.flags += tta_flags(tta_share, tta_disagreement_limit(self.bundle))
        run.lap("postprocess")
        biometry = None
        if options.biometry:
            run.report("biometry", 0.0, "measuring")
            biometry = measure_labels(self.bundle, image.with_array(labels), options.ga_weeks, run.flags)
            run.lap("biometry")
        head_label = self.bundle.head_label
        first_pass = None if tta else biometry  # without TTA the result is the unflipped pass
        spreads = flip_spreads(self.bundle, image, output, first_pass) if biometry is not None else FlipSpreads()
        review = review_result(
            self.bundle,
            image,
            review_probability(output, head_label, tta),
            labels == head_label,
            biometry,
            output,
            tta_share,
            spreads,
            tta,
        )
        return Segmentation(
            labels=image.with_array(labels),
            probability=image.with_array((1.0 - class_probabilities[0]).astype(np.float32)),
            uncertainty=uncertainty,
            biometry=biometry,
            flags=run.flags,
            device=str(run.device_used),
            seconds=time.perf_counter() - start,
            model=self.bundle,
            timings=run.timings,
            review=review,
            tta=tta,
        )


def predict_same_grid(
    run: InferenceRun, image: Image, bundle: ModelBundle, size_multiple: int, tta: bool, mirror_check: bool = False
) -> CascadeOutput:
    """The seed's cascade: every level on the whole image at one working grid, once, or once per flipped axis
    (TTA: the whole cascade runs on each image flipped along an axis the task may mirror, and the passes are
    averaged). ``mirror_check`` without TTA runs the flipped passes of a 2D frame too but keeps the unflipped one
    as the result; the passes are only measured, for the review."""
    prepared = prepare(image, bundle.preprocessing, size_multiple)
    run.lap("preprocess")
    dims = 2 if image.is_2d else 3
    flips = task_spec(bundle.task).flip_passes(dims) if tta or mirror_check else [()]
    passes = []
    for number, axes in enumerate(flips):
        values = prepared.values[np.newaxis]
        flipped = np.ascontiguousarray(np.flip(values, axes)) if axes else values
        padding = prepared.padding
        if axes:  # a flip swaps the padding before and after along the flipped axes
            before, after = list(padding.before), list(padding.after)
            for axis in axes:
                before[axis - 1], after[axis - 1] = after[axis - 1], before[axis - 1]
            padding = Padding((before[0], before[1], before[2]), (after[0], after[1], after[2]))

        def predict(level: int, inputs: np.ndarray, number: int = number) -> np.ndarray:
            return run.predict(level, inputs, number, len(flips))

        probabilities = run_cascade(predict, flipped, padding, len(run.networks))
        passes.append(np.flip(probabilities, axes) if axes else probabilities)
    # restored once, when first asked for, for the flip spreads and the review alike
    restore = functools.cache(lambda: [prepared.restore(probabilities) for probabilities in passes])
    each_pass = restore if dims == 2 else None
    if not tta:
        result = each_pass()[0] if each_pass is not None else prepared.restore(passes[0])
        return CascadeOutput(result, None, None, [], pass_probabilities=each_pass)
    class_probabilities = prepared.restore(np.mean(passes, axis=0))
    votes, disagreement = flip_disagreement(passes, prepared)
    return CascadeOutput(class_probabilities, disagreement, votes, [], pass_probabilities=each_pass)


class InferenceRun:
    """State of one segmentation: progress, cancellation, the device this image runs on (after out-of-memory
    fallbacks), its flags and timings. It never changes the :class:`Segmenter`'s networks."""

    def __init__(
        self,
        segmenter: Segmenter,
        options: InferenceOptions,
        progress: ProgressCallback | None,
        cancel: Callable[[], bool] | None,
    ) -> None:
        self.segmenter = segmenter
        self.options = options
        self.progress = progress
        self.cancel = cancel
        self.flags: list[Flag] = []
        self.device_used = segmenter.device
        self.networks: list[nn.Module] = list(segmenter.networks)
        self.timings: dict[str, float] = {}
        self._lap = time.perf_counter()

    def report(self, stage: str, fraction: float, message: str) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled")
        if self.progress is not None:
            self.progress(stage, float(min(max(fraction, 0.0), 1.0)), message)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._lap
        self._lap = now

    def predict(self, level: int, inputs: np.ndarray, pass_number: int, passes: int) -> np.ndarray:
        """Softmax probabilities of one level: whole volume, then tiles, then the CPU on out-of-memory errors."""
        import torch

        stage = f"stage{level + 1}"
        levels = len(self.networks)
        self.report(stage, pass_number / passes, f"cascade level {level + 1} of {levels}")
        dims = self.segmenter.bundle.networks[level].spatial_dims

        def on_tile(done: int, total: int) -> None:
            self.report(stage, (pass_number + done / total) / passes, f"tile {done} of {total}")

        if self.options.tile_size is not None:
            return self._tiled(level, dims, inputs, on_tile)
        try:
            return self._forward(level, dims, inputs)
        except torch.cuda.OutOfMemoryError:
            self._out_of_memory("whole-volume inference ran out of GPU memory; retrying in tiles")
        try:
            return self._tiled(level, dims, inputs, on_tile)
        except torch.cuda.OutOfMemoryError:
            self._out_of_memory("tiled inference ran out of GPU memory; retrying on the CPU")
        self._use_cpu()
        return self._forward(level, dims, inputs)

    def _use_cpu(self) -> None:
        """Run the rest of this image on CPU copies of the networks (the shared ones stay where they are)."""
        import copy

        import torch

        cpu = torch.device("cpu")
        if self.device_used != cpu:
            self.networks = [copy.deepcopy(network).to(cpu) for network in self.segmenter.networks]
            self.device_used = cpu

    def _out_of_memory(self, message: str) -> None:
        import torch

        logger.warning(message)
        self.flags.append(Flag("oom_fallback", message))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _tiled(self, level: int, dims: int, inputs: np.ndarray, on_tile: Callable[[int, int], None]) -> np.ndarray:
        multiple = self.segmenter.size_multiple
        tile = self.segmenter.bundle.tile_size if self.options.tile_size is None else self.options.tile_size
        tile = max(multiple, tile // multiple * multiple)
        window = (tile,) * dims + ((1,) if dims == 2 else ())
        return sliding_window(
            lambda part: self._forward(level, dims, part), inputs, window, self.options.overlap, on_tile
        )

    def _forward(self, level: int, dims: int, inputs: np.ndarray) -> np.ndarray:
        return forward_probabilities(self.networks[level], dims, inputs)


def load_model(model: str | Any, device: str | torch.device = "auto") -> Segmenter:
    """Load a model by bundle folder, ``id`` or ``id@version`` onto ``device`` (checksums verified).

    Raises:
        BundleError, ChecksumError: unknown model, invalid bundle, damaged weights.
        DeviceError: the device is not available.
    """
    from FetalHeadSegLib.models.catalog import find_model

    bundle = model if isinstance(model, ModelBundle) else find_model(model)
    return Segmenter(bundle, device)


def segment(
    image: Image | str | Any,
    model: str | Any,
    device: str | torch.device = "auto",
    options: InferenceOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Segmentation:
    """Segment one image (an :class:`Image` or a file path) with a model (id, folder or bundle).

    Loads the model for this call only; for many images use :func:`load_model` once and call
    ``Segmenter.segment`` for each.

    Example:
        >>> result = segment("scan.nii.gz", "fetal-head-3d-cascade", device="cpu")  # doctest: +SKIP
        >>> result.biometry.hc_mm, result.labels.shape  # doctest: +SKIP
    """
    from FetalHeadSegLib.core.io import read_image

    source = str(image) if not isinstance(image, Image) else "the image"
    loaded = image if isinstance(image, Image) else read_image(image)
    return load_model(model, device).segment(loaded, options, progress, cancel, source)
