"""The inference engine: from an image to a label map, probabilities and biometry, on any device.

Pipeline (``method.md`` §1.7): check the image; resample to the model's grid; normalise; pad to a multiple of
the network's size; run every cascade level on the whole volume (level n > 0 sees the image and level n - 1's
foreground probability); on a GPU out-of-memory error retry in overlapping tiles, then on the CPU; optional
flip test-time augmentation whose disagreement is an uncertainty map; crop; resample the class probabilities
back onto the input grid; keep each label's largest component with holes filled; measure.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from FetalHeadSegLib.bundle import ModelBundle, load_networks
from FetalHeadSegLib.errors import Cancelled, InputImageError
from FetalHeadSegLib.image import Image
from FetalHeadSegLib.postprocessing import clean_label_map
from FetalHeadSegLib.preprocessing import check_image, normalise, pad_to_multiple, resample, resample_like
from FetalHeadSegLib.quality import Flag
from FetalHeadSegLib.tiling import sliding_window

if TYPE_CHECKING:
    import torch
    from torch import nn

    from FetalHeadSegLib.biometry import Biometry

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, float, str], None]
"""``progress(stage, fraction, message)``: stage is load, stage1, stage2, ..., postprocess or biometry."""

TTA_DISAGREEMENT_LIMIT = 0.05
"""Flag a result when flipped predictions disagree on more than this share of the predicted head."""


@dataclass(frozen=True)
class InferenceOptions:
    """How to run a model.

    Attributes:
        tta: also predict the axis-flipped image(s) and average; adds an uncertainty map and a flag.
        tile_size: always predict in tiles of this size (a multiple of 8); None predicts whole volumes and tiles
            only after an out-of-memory error.
        overlap: tile overlap.
        biometry: measure the head (and the angle of progression for intrapartum models).
        ga_weeks: known gestational age for z-scores and centiles.
    """

    tta: bool = False
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

    def provenance(self) -> dict[str, Any]:
        from FetalHeadSegLib._version import __version__

        return {
            "fetalheadseg_version": __version__,
            "model_id": self.model.id,
            "model_version": self.model.version,
            "model_sha256": self.model.fingerprint,
            "device": self.device,
            "seconds": round(self.seconds, 3),
            "timings_s": {key: round(value, 3) for key, value in self.timings.items()},
        }


class Segmenter:
    """A model loaded on a device, ready to segment any number of images."""

    def __init__(self, bundle: ModelBundle, device: str | torch.device = "auto") -> None:
        from FetalHeadSegLib.device import resolve_device

        self.bundle = bundle
        self.device = resolve_device(device)
        self.networks = load_networks(bundle, self.device)
        multiples = [bundle.preprocessing.pad_multiple] + [n.size_multiple for n in bundle.networks]
        self.size_multiple = math.lcm(*multiples)

    def segment(
        self,
        image: Image,
        options: InferenceOptions | None = None,
        progress: ProgressCallback | None = None,
        cancel: Callable[[], bool] | None = None,
        source: str = "the image",
    ) -> Segmentation:
        """Segment ``image`` and measure the head.

        Raises:
            InputImageError: the image cannot be segmented (constant, NaN, absurd spacing, wrong dimension).
            Cancelled: ``cancel()`` returned True between two steps.
        """
        options = options or InferenceOptions()
        run = _Run(self, options, progress, cancel)
        start = time.perf_counter()
        check_image(image, source)
        if image.is_2d != (self.bundle.dimension == 2):
            kind = "a 2D frame" if image.is_2d else "a 3D volume"
            raise InputImageError(f"{source}: is {kind}, but model {self.bundle.id} is {self.bundle.dimension}D")
        run.report("load", 0.0, "preparing the image")
        from FetalHeadSegLib.preprocessing import working_spacing

        spacing = working_spacing(image, self.bundle.preprocessing)
        working = resample(image, spacing) if spacing is not None else image
        values = normalise(working.array, self.bundle.preprocessing.clip_percentiles)
        padded, padding = pad_to_multiple(values, self.size_multiple, image.is_2d)
        run.lap("preprocess")

        flips = [()] + ([(axis,) for axis in range(1, 3 if image.is_2d else 4)] if options.tta else [])
        passes = []
        for number, axes in enumerate(flips):
            flipped = np.flip(padded[np.newaxis], axes) if axes else padded[np.newaxis]
            probabilities = run.cascade(np.ascontiguousarray(flipped), number, len(flips))
            passes.append(np.flip(probabilities, axes) if axes else probabilities)
        run.lap("networks")
        run.report("postprocess", 0.0, "building the label map")
        mean = np.mean(passes, axis=0)
        class_probabilities = padding.crop(mean)
        if spacing is not None:
            class_probabilities = np.stack(
                [resample_like(working.with_array(channel), image).array for channel in class_probabilities]
            )
        values_present = [label.value for label in self.bundle.labels]
        labels = clean_label_map(np.argmax(class_probabilities, axis=0).astype(np.uint8), values_present)
        foreground = 1.0 - class_probabilities[0]
        uncertainty = None
        if len(passes) > 1:
            votes = np.stack([padding.crop(p)[0] < 0.5 for p in passes])
            disagreement = np.minimum(votes.mean(axis=0), 1.0 - votes.mean(axis=0))  # 0 = unanimous, 0.5 = split
            if spacing is not None:
                disagreement = resample_like(working.with_array(disagreement.astype(np.float32)), image).array
            uncertainty = image.with_array(disagreement.astype(np.float32))
            run.flags += _tta_flags(votes)
        run.lap("postprocess")
        biometry = None
        if options.biometry:
            run.report("biometry", 0.0, "measuring")
            biometry = _measure(self.bundle, image.with_array(labels), options.ga_weeks, run.flags)
            run.lap("biometry")
        return Segmentation(
            labels=image.with_array(labels),
            probability=image.with_array(foreground.astype(np.float32)),
            uncertainty=uncertainty,
            biometry=biometry,
            flags=run.flags,
            device=str(run.device_used),
            seconds=time.perf_counter() - start,
            model=self.bundle,
            timings=run.timings,
        )


class _Run:
    """State of one segmentation: progress, cancellation, device fallbacks and their flags, timings."""

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

    def cascade(self, image: np.ndarray, pass_number: int, passes: int) -> np.ndarray:
        """Class probabilities (K, *spatial) of the last level for a (1, *spatial) normalised image."""
        networks = self.segmenter.networks
        context: np.ndarray | None = None
        probabilities = np.empty(0)
        for level, network in enumerate(networks):
            stage = f"stage{level + 1}"
            self.report(stage, pass_number / passes, f"cascade level {level + 1} of {len(networks)}")
            inputs = image if context is None else np.concatenate([image, context[np.newaxis]], axis=0)
            dims = self.segmenter.bundle.networks[level].spatial_dims
            probabilities = self.predict(network, dims, inputs, stage, pass_number, passes)
            context = 1.0 - probabilities[0]
        return probabilities

    def predict(
        self, network: nn.Module, dims: int, inputs: np.ndarray, stage: str, pass_number: int, passes: int
    ) -> np.ndarray:
        """Softmax probabilities of one level: whole volume, then tiles, then CPU on out-of-memory errors."""
        import torch

        def on_tile(done: int, total: int) -> None:
            self.report(stage, (pass_number + done / total) / passes, f"tile {done} of {total}")

        if self.options.tile_size is not None:
            return self._tiled(network, dims, inputs, on_tile)
        try:
            return self._forward(network, dims, inputs)
        except torch.cuda.OutOfMemoryError:
            self._out_of_memory("whole-volume inference ran out of GPU memory; retrying in tiles")
        try:
            return self._tiled(network, dims, inputs, on_tile)
        except torch.cuda.OutOfMemoryError:
            self._out_of_memory("tiled inference ran out of GPU memory; retrying on the CPU")
        cpu = torch.device("cpu")
        self.device_used = cpu
        for index, candidate in enumerate(self.segmenter.networks):
            self.segmenter.networks[index] = candidate.to(cpu)
        return self._forward(network.to(cpu), dims, inputs)

    def _out_of_memory(self, message: str) -> None:
        import torch

        logger.warning(message)
        self.flags.append(Flag("oom_fallback", message))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _tiled(
        self, network: nn.Module, dims: int, inputs: np.ndarray, on_tile: Callable[[int, int], None]
    ) -> np.ndarray:
        tile = self.segmenter.bundle.tile_size if self.options.tile_size is None else self.options.tile_size
        tile = max(self.segmenter.size_multiple, tile // self.segmenter.size_multiple * self.segmenter.size_multiple)
        window = (tile,) * dims + ((1,) if dims == 2 else ())
        return sliding_window(
            lambda part: self._forward(network, dims, part), inputs, window, self.options.overlap, on_tile
        )

    def _forward(self, network: nn.Module, dims: int, inputs: np.ndarray) -> np.ndarray:
        """One forward pass: (C, X, Y, Z) numpy in, (K, X, Y, Z) softmax probabilities out (float32)."""
        import contextlib

        import torch

        device = next(network.parameters()).device
        two_d = dims == 2
        tensor = torch.from_numpy(np.ascontiguousarray(inputs[..., 0] if two_d else inputs))[None].to(device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            logits = network(tensor)
        probabilities = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
        return probabilities[..., np.newaxis] if two_d else probabilities


def _tta_flags(votes: np.ndarray) -> list[Flag]:
    union, intersection = votes.any(axis=0), votes.all(axis=0)
    share = float((union & ~intersection).sum()) / max(int(union.sum()), 1)
    if share > TTA_DISAGREEMENT_LIMIT:
        return [
            Flag(
                "tta_disagreement_high",
                f"flipped predictions disagree on {100 * share:.1f} % of the head: "
                "the segmentation is uncertain, check it",
            )
        ]
    return []


def _measure(bundle: ModelBundle, labels: Image, ga_weeks: float | None, flags: list[Flag]) -> Biometry | None:
    """Biometry of the predicted head (and AoP for intrapartum models); None with a flag if nothing to measure."""
    from FetalHeadSegLib.aop import angle_of_progression
    from FetalHeadSegLib.biometry import measure_biometry
    from FetalHeadSegLib.errors import FetalHeadSegError

    head_value = next((label.value for label in bundle.labels if label.name == "Head"), bundle.labels[0].value)
    head = (labels.array == head_value).astype(np.uint8)
    if not head.any():
        flags.append(Flag("no_head_found", "the model found no head in this image: nothing was measured"))
        return None
    try:
        biometry = measure_biometry(labels.with_array(head), ga_weeks=ga_weeks)
        if bundle.task == "intrapartum":
            biometry = biometry.with_aop(angle_of_progression(labels))
    except FetalHeadSegError as err:
        flags.append(Flag("biometry_failed", f"the head could not be measured: {err}"))
        return None
    return biometry.with_flags(flags)


def load_model(model: str | Any, device: str | torch.device = "auto") -> Segmenter:
    """Load a model by bundle folder, ``id`` or ``id@version`` onto ``device`` (checksums verified).

    Raises:
        BundleError, ChecksumError: unknown model, invalid bundle, damaged weights.
        DeviceError: the device is not available.
    """
    from FetalHeadSegLib.catalog import find_model

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
    from FetalHeadSegLib.io import read_image

    source = str(image) if not isinstance(image, Image) else "the image"
    loaded = image if isinstance(image, Image) else read_image(image)
    return load_model(model, device).segment(loaded, options, progress, cancel, source)
