"""The stream of augmented training samples, keyed by (step, slot): deterministic, resumable, shardable.

Step s of a run with global batch B draws B case indices from a generator seeded by (seed, s); slot b of it is
augmented with a generator seeded by (seed, s, b). Rank r of a world of W processes takes slots r, r + W, ...
So a resumed run sees exactly the samples the uninterrupted run would have seen, and W processes together see
the same global batches as one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from training.augment import AugmentConfig, apply, sample_params
from training.data import CaseArrays, fit_to, padded_shape


class StepSampler(Sampler[tuple[int, int]]):
    """Yields this rank's (step, slot) keys for steps ``start`` .. ``stop`` - 1."""

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise ValueError(f"the batch size {batch_size} must be a multiple of the number of processes {world_size}")
        self.start, self.stop, self.batch_size, self.rank, self.world_size = start, stop, batch_size, rank, world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for step in range(self.start, self.stop):
            for slot in range(self.rank, self.batch_size, self.world_size):
                yield step, slot

    def __len__(self) -> int:
        return (self.stop - self.start) * (self.batch_size // self.world_size)


def downsample_label(label: np.ndarray, factor: int, is_2d: bool) -> np.ndarray:
    """Nearest-neighbour down-sampling by ``factor`` (the centre voxel of each block)."""
    if factor == 1:
        return label
    start = factor // 2
    return label[start::factor, start::factor] if is_2d else label[start::factor, start::factor, start::factor]


class AugmentedCases(Dataset[tuple[torch.Tensor, list[torch.Tensor]]]):
    """Training samples: (image tensor (C, *spatial), targets coarse to fine as int64 tensors).

    Args:
        arrays: the preprocessed cases to draw from.
        context: per case, the previous cascade level's foreground probability (uint8, value / 255), or None.
        augment: augmentation settings.
        seed: the run's seed.
        batch_size: the global batch size (sample indices are drawn per global batch).
        target_factors: down-sampling factor of each output, coarse to fine (e.g. 8, 4, 2, 1).
        multiple: spatial sizes are padded to a multiple of this.
        patch_size: crop or pad every sample to this spatial size; None pads each case to the multiple.
        context_draw: ``context_draw(index, rng)`` gives a fresh context for each sample (uint8, value / 255),
            replacing ``context``'s fixed one; its generator is keyed by (seed, step, slot) like the augmentation.
    """

    def __init__(
        self,
        arrays: CaseArrays,
        context: list[np.ndarray] | None,
        augment: AugmentConfig,
        seed: int,
        batch_size: int,
        target_factors: list[int],
        multiple: int,
        patch_size: tuple[int, ...] | None = None,
        context_draw: Callable[[int, np.random.Generator], np.ndarray] | None = None,
    ) -> None:
        self.arrays, self.context, self.augment, self.seed = arrays, context, augment, seed
        self.context_draw = context_draw
        self.batch_size, self.target_factors, self.multiple, self.patch_size = (
            batch_size,
            target_factors,
            multiple,
            patch_size,
        )

    def __len__(self) -> int:
        return len(self.arrays)

    def case_index(self, step: int, slot: int) -> int:
        picks = np.random.default_rng([self.seed, step]).integers(0, len(self.arrays), size=self.batch_size)
        return int(picks[slot])

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        step, slot = key
        index = self.case_index(step, slot)
        rng = np.random.default_rng([self.seed, step, slot, 1])
        channels = [self.arrays.image_float(index)]
        if self.context_draw is not None:
            drawn = self.context_draw(index, np.random.default_rng([self.seed, step, slot, 2]))
            channels.append(drawn.astype(np.float32) / 255.0)
        elif self.context is not None:
            channels.append(np.asarray(self.context[index], dtype=np.float32) / 255.0)
        image, label = np.stack(channels), self.arrays.labels[index]
        is_2d = label.shape[2] == 1
        if self.patch_size is not None:
            shape = (*self.patch_size, 1) if is_2d else tuple(self.patch_size)
        else:
            shape = padded_shape(label.shape, self.multiple, is_2d)
        offset = tuple(int(rng.integers(0, max(0, n - s) + 1)) for n, s in zip(label.shape, shape, strict=True))
        image, label = fit_to(image, shape, offset), fit_to(label, shape, offset)
        image, label = apply(sample_params(rng, self.augment, label.shape, image.shape[0]), image, label)
        if is_2d:
            image, label = image[..., 0], label[..., 0]
        targets = [
            torch.from_numpy(np.ascontiguousarray(downsample_label(label, f, is_2d)).astype(np.int64))
            for f in self.target_factors
        ]
        return torch.from_numpy(image), targets
