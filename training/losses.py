"""The deep-supervision loss of the seed (``method.md`` §1.3): cross-entropy on the main and auxiliary heads
against down-sampled labels, with optional soft Dice on the main head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean foreground soft Dice over the non-background classes."""
    probabilities = torch.softmax(logits.float(), dim=1)
    one_hot = nn.functional.one_hot(target, logits.shape[1]).movedim(-1, 1).float()
    dims = tuple(range(2, logits.ndim))
    intersection = (probabilities * one_hot).sum(dims)
    total = probabilities.sum(dims) + one_hot.sum(dims)
    dice = (2 * intersection + 1e-5) / (total + 1e-5)
    return 1.0 - dice[:, 1:].mean()


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of cross-entropies of every output (coarse to fine) against its target.

    Args:
        weights: one weight per output, coarse to fine, the main output last; none negative, not all zero.
        dice_weight: weight of soft Dice on the main output.

    Raises:
        ValueError: invalid weights, or a number of outputs that does not match them (never a silent fallback).
    """

    def __init__(self, weights: Sequence[float], dice_weight: float = 0.0) -> None:
        super().__init__()
        if not weights or any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise ValueError(f"deep-supervision weights must be non-negative and not all zero, got {list(weights)}")
        self.weights = [float(w) for w in weights]
        self.dice_weight = float(dice_weight)

    def forward(self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(outputs) != len(self.weights) or len(targets) != len(self.weights):
            raise ValueError(f"{len(self.weights)} weights but {len(outputs)} outputs and {len(targets)} targets")
        total = outputs[-1].new_zeros((), dtype=torch.float32)
        for weight, output, target in zip(self.weights, outputs, targets, strict=True):
            if output.shape[2:] != target.shape[1:]:
                raise ValueError(f"output {tuple(output.shape[2:])} and target {tuple(target.shape[1:])} differ")
            if weight:
                total = total + weight * nn.functional.cross_entropy(output.float(), target)
        if self.dice_weight:
            total = total + self.dice_weight * soft_dice_loss(outputs[-1], targets[-1])
        return total
