"""What the networks see and return: one forward pass, and the cascade that feeds each level the previous one's
head probability (the seed's auto-context). The inference engine and training's validation both call these, so
the two can never disagree about a network's input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from FetalHeadSegLib.inference.preprocessing import Padding, PreprocessingConfig, pad_to_multiple, quantise_unit

if TYPE_CHECKING:
    from torch import nn


class CascadeMode(StrEnum):
    """How the levels of a cascade share the image."""

    SAME_GRID = "same_grid"
    """The seed's cascade: every level sees the whole image on one working grid, plus the previous level's
    probability (``method.md`` §1.6)."""
    ROI = "roi"
    """Coarse to fine: level 1 sees the whole image at a coarse grid; each later level sees the head's region
    (found by the level before, with a margin) at its own finer grid, plus the previous probability resampled
    onto it (nnU-Net's 3d_lowres -> cascade)."""


@dataclass(frozen=True)
class CascadeConfig:
    """How a bundle's levels are run.

    Attributes:
        mode: :class:`CascadeMode`.
        level_preprocessing: ``roi`` mode: one preprocessing per level (level 1's for the whole image, later
            ones for the head's region); ``same_grid`` uses the bundle's single preprocessing.
        roi_margin_mm: ``roi`` mode: space kept around the head found by the previous level, in mm.
        convex_context: ``roi`` mode: a fetal head is convex, so level 1's head (without tissue stuck to it, where
            the bundle's postprocessing cuts such tissue) is completed to its convex hull before it becomes the
            finer level's context and region (a faint or shadowed stretch of skull leaves a dent in level 1's head
            that the finer level would otherwise follow).
    """

    mode: CascadeMode = CascadeMode.SAME_GRID
    level_preprocessing: tuple[PreprocessingConfig, ...] = ()
    roi_margin_mm: float = 12.0
    convex_context: bool = False

    def __post_init__(self) -> None:
        if self.mode is CascadeMode.ROI and len(self.level_preprocessing) < 2:
            raise ValueError("a roi cascade needs a preprocessing for each of at least two levels")
        if self.roi_margin_mm < 0:
            raise ValueError(f"roi_margin_mm must not be negative, got {self.roi_margin_mm}")

    def preprocessing(self, level: int, default: PreprocessingConfig) -> PreprocessingConfig:
        """The preprocessing of ``level`` (the bundle's own in ``same_grid`` mode)."""
        return self.level_preprocessing[level] if self.mode is CascadeMode.ROI else default

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "level_preprocessing": [config.to_dict() for config in self.level_preprocessing],
            "roi_margin_mm": self.roi_margin_mm,
            "convex_context": self.convex_context,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CascadeConfig:
        if not data:
            return cls()
        return cls(
            CascadeMode(data.get("mode", CascadeMode.SAME_GRID.value)),
            tuple(PreprocessingConfig.from_dict(item) for item in data.get("level_preprocessing", [])),
            float(data.get("roi_margin_mm", 12.0)),
            bool(data.get("convex_context", False)),
        )


LevelPredictor = Callable[[int, np.ndarray], np.ndarray]
"""``predict(level, inputs)``: (C, X, Y, Z) padded inputs of a level -> (K, X, Y, Z) softmax probabilities."""


def forward_probabilities(network: nn.Module, spatial_dims: int, inputs: np.ndarray) -> np.ndarray:
    """One forward pass on the network's device: (C, X, Y, Z) float32 in, (K, X, Y, Z) softmax out (float32).

    2D networks take (C, X, Y, 1) arrays; bf16 autocast on CUDA.
    """
    import torch

    device = next(network.parameters()).device
    two_d = spatial_dims == 2
    tensor = torch.from_numpy(np.ascontiguousarray(inputs[..., 0] if two_d else inputs))[None].to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        logits = network(tensor)
    probabilities = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
    return probabilities[..., np.newaxis] if two_d else probabilities


def context_channel(probabilities: np.ndarray) -> np.ndarray:
    """The next level's context: the foreground probability (1 - background), in the 256 input levels."""
    return quantise_unit(1.0 - probabilities[0])


def run_cascade(predict: LevelPredictor, image: np.ndarray, padding: Padding, levels: int) -> np.ndarray:
    """The last level's class probabilities (K, X', Y', Z') for a padded (1, X', Y', Z') image.

    Level n > 0 sees the image and level n - 1's context channel computed on the unpadded grid and padded with
    zeros, exactly as training stores and pads its context maps.
    """
    probabilities = np.empty(0)
    context: np.ndarray | None = None
    for level in range(levels):
        inputs = image if context is None else np.concatenate([image, padding.pad(context)[np.newaxis]], axis=0)
        probabilities = predict(level, inputs)
        context = context_channel(padding.crop(probabilities))
    return probabilities


def predict_unpadded(
    network: nn.Module, spatial_dims: int, size_multiple: int, image: np.ndarray, context: np.ndarray | None
) -> np.ndarray:
    """One level on an unpadded (X, Y, Z) image (and context): padded as the engine pads, cropped back.

    Returns:
        (K, X, Y, Z) softmax probabilities.
    """
    is_2d = image.shape[2] == 1
    padded, padding = pad_to_multiple(image, size_multiple, is_2d)
    channels = [padded] + ([padding.pad(context)] if context is not None else [])
    inputs = np.stack(channels).astype(np.float32, copy=False)
    return np.asarray(padding.crop(forward_probabilities(network, spatial_dims, inputs)))
