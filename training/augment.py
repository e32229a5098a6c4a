"""Training augmentations. Each samples its parameters with an explicit ``numpy.random.Generator`` and then
applies a deterministic transform, so a seed reproduces an augmented sample exactly.

Arrays: image (C, X, Y, Z) float32 in [0, 1] (channel 0 the ultrasound image, channel 1 a cascade context map
when present), label (X, Y, Z) integer. 2D frames have Z = 1; Y is the depth (beam) axis.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of every augmentation (the defaults follow ``method.md`` §1.6 and §2.3)."""

    erasing_p: float = 0.5
    erasing_area: tuple[float, float] = (0.02, 0.4)
    erasing_ratio: float = 0.3
    erasing_context_p: float = 0.25
    flip_p: float = 0.5
    flip_axes: tuple[int, ...] = (0, 1, 2)
    """Axes a flip may mirror (2D frames never flip Z). A training config takes its task's ``mirror_axes`` unless
    it sets this: intrapartum frames mirror only the lateral axis X, so the probe stays at the top."""
    rotate_p: float = 0.5
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    gamma_p: float = 0.5
    gamma: tuple[float, float] = (0.7, 1.5)
    gain_p: float = 0.5
    gain: float = 0.1
    speckle_p: float = 0.3
    speckle_sigma: float = 0.15
    shadow_p: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all (validation, tests)."""
        return cls(erasing_p=0, flip_p=0, rotate_p=0, gamma_p=0, gain_p=0, speckle_p=0, shadow_p=0, erasing_context_p=0)


# ----------------------------------------------------------------------------------------------- random erasing
@dataclass(frozen=True)
class Box:
    """An axis-aligned box: start index and size per axis (X, Y, Z)."""

    start: tuple[int, int, int]
    size: tuple[int, int, int]

    def slices(self) -> tuple[slice, slice, slice]:
        s0, s1, s2 = (slice(a, a + n) for a, n in zip(self.start, self.size, strict=True))
        return s0, s1, s2


def sample_erasing_box(
    rng: np.random.Generator, shape: tuple[int, int, int], area: tuple[float, float], ratio: float, attempts: int = 100
) -> Box | None:
    """A cuboid (rectangle in 2D) of volume fraction s ~ U(area), edge ratios within [ratio, 1/ratio], fully
    inside; None if none fits after ``attempts`` tries (``method.md`` §1.6)."""
    is_2d = shape[2] == 1
    axes = 2 if is_2d else 3
    total = float(np.prod(shape[:axes]))
    log_range = (math.log(math.sqrt(ratio)), math.log(1.0 / math.sqrt(ratio)))
    for _ in range(attempts):
        fraction = rng.uniform(*area)
        edge = (fraction * total) ** (1.0 / axes)
        rho = np.exp(rng.uniform(*log_range, size=axes - 1))
        if is_2d:
            sizes = [edge * rho[0], edge / rho[0], 1.0]
        else:
            sizes = [edge * rho[0], edge * rho[1], edge / (rho[0] * rho[1])]
            # The third edge can differ from the others by up to ratio^-1.5: redraw to keep every pairwise
            # ratio within [ratio, 1/ratio] as the method states.
            if max(sizes) / min(sizes) > 1.0 / ratio:
                continue
        size = tuple(max(1, int(round(s))) for s in sizes)
        if any(n > limit for n, limit in zip(size, shape, strict=True)):
            continue
        start = tuple(int(rng.integers(0, limit - n + 1)) for n, limit in zip(size, shape, strict=True))
        return Box((start[0], start[1], start[2]), (size[0], size[1], size[2]))
    return None


def erase(channel: np.ndarray, box: Box, noise: bool, noise_seed: int) -> np.ndarray:
    """A copy of one (X, Y, Z) channel with the box filled with U(0, 1) noise or zeros."""
    out = channel.copy()
    region = box.slices()
    if noise:
        out[region] = np.random.default_rng(noise_seed).random(box.size, dtype=np.float32)
    else:
        out[region] = 0.0
    return out


# ------------------------------------------------------------------------------------------------------ shadows
def shadow_mask_2d(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """SABR-Net's free-form hole mask (1 = keep, 0 = hole) for a (width, height) plane, scaled from s = 256:
    up to 2 rectangles with side <= s/2, up to 2 with side <= s, up to 3 brush strokes (4-18 vertices, segment
    length ~ N(r, r/2) with r = sqrt(w^2 + h^2)/8, turning 2pi/5 +- 2pi/15, width 12-48 px at s = 256)."""
    from skimage.draw import disk, line

    mask = np.ones((width, height), dtype=np.float32)
    scale = min(width, height) / 256.0
    for limit, count in ((0.5, int(rng.integers(0, 3))), (1.0, int(rng.integers(0, 3)))):
        for _ in range(count):
            w = int(rng.integers(1, max(2, int(limit * width))))
            h = int(rng.integers(1, max(2, int(limit * height))))
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            mask[left : left + w, top : top + h] = 0.0
    mean_length = math.hypot(width, height) / 8.0
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        brush = max(1.0, rng.uniform(12, 48) * scale / 2.0)
        angle = rng.uniform(0, 2 * math.pi)
        for vertex in range(int(rng.integers(4, 19))):
            turn = rng.uniform(2 * math.pi / 5 - 2 * math.pi / 15, 2 * math.pi / 5 + 2 * math.pi / 15)
            angle += turn if vertex % 2 == 0 else -turn
            length = max(1.0, rng.normal(mean_length, mean_length / 2))
            nx = float(np.clip(x + length * math.cos(angle), 0, width - 1))
            ny = float(np.clip(y + length * math.sin(angle), 0, height - 1))
            rows, cols = line(int(x), int(y), int(nx), int(ny))
            for r, c in zip(rows[:: max(1, int(brush // 2))], cols[:: max(1, int(brush // 2))], strict=True):
                rr, cc = disk((r, c), brush, shape=mask.shape)
                mask[rr, cc] = 0.0
            x, y = nx, ny
    if rng.uniform() < 0.5:
        mask = mask[::-1]
    if rng.uniform() < 0.5:
        mask = mask[:, ::-1]
    return np.ascontiguousarray(mask)


def shadow_mask(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """A keep-mask (X, Y, Z): SABR-Net holes in-plane for 2D frames; for volumes a 2D mask over lateral x
    elevation, extruded along the beam (Y) from a random depth to the far end, like a real acoustic shadow."""
    if shape[2] == 1:
        return shadow_mask_2d(rng, shape[0], shape[1])[:, :, np.newaxis]
    plane = shadow_mask_2d(rng, shape[0], shape[2])
    start = int(rng.integers(0, shape[1]))
    mask = np.ones(shape, dtype=np.float32)
    mask[:, start:, :] = plane[:, np.newaxis, :]
    return mask


# ------------------------------------------------------------------------------------------------ the pipeline
@dataclass(frozen=True)
class AugmentParams:
    """Everything drawn for one sample; ``apply`` reproduces the augmentation from it."""

    erase_box: Box | None = None
    erase_noise: bool = False
    erase_context_box: Box | None = None
    noise_seed: int = 0
    flips: tuple[bool, bool, bool] = (False, False, False)
    rotation_rad: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    gamma: float = 1.0
    gain: float = 0.0
    speckle_sigma: float = 0.0
    shadow_seed: int | None = None


def sample_params(
    rng: np.random.Generator, config: AugmentConfig, shape: tuple[int, int, int], channels: int
) -> AugmentParams:
    """Draw every augmentation's parameters for a sample of this (X, Y, Z) shape, in a fixed order."""
    is_2d = shape[2] == 1
    draws = rng.uniform(size=8)
    box = (
        sample_erasing_box(rng, shape, config.erasing_area, config.erasing_ratio)
        if draws[0] < config.erasing_p
        else None
    )
    context_box = None
    if channels > 1 and draws[1] < config.erasing_context_p:
        context_box = sample_erasing_box(rng, shape, config.erasing_area, config.erasing_ratio)
    flip_draws = rng.uniform(size=3) < config.flip_p
    allowed = (0 in config.flip_axes, 1 in config.flip_axes, 2 in config.flip_axes and not is_2d)
    flips = (
        bool(flip_draws[0] and allowed[0]),
        bool(flip_draws[1] and allowed[1]),
        bool(flip_draws[2] and allowed[2]),
    )
    rotation = (0.0, 0.0, 0.0)
    scale = 1.0
    if draws[2] < config.rotate_p:
        limit = math.radians(config.rotate_deg)
        angles = rng.uniform(-limit, limit, size=3)
        rotation = (0.0, 0.0, float(angles[2])) if is_2d else (float(angles[0]), float(angles[1]), float(angles[2]))
        scale = float(rng.uniform(*config.scale))
    gamma = (
        float(math.exp(rng.uniform(math.log(config.gamma[0]), math.log(config.gamma[1]))))
        if draws[3] < config.gamma_p
        else 1.0
    )
    gain = float(rng.uniform(-config.gain, config.gain)) if draws[4] < config.gain_p else 0.0
    speckle = float(rng.uniform(0.0, config.speckle_sigma)) if draws[5] < config.speckle_p else 0.0
    shadow_seed = int(rng.integers(2**31)) if draws[6] < config.shadow_p else None
    return AugmentParams(
        box,
        bool(draws[7] < 0.5),
        context_box,
        int(rng.integers(2**31)),
        flips,
        rotation,
        scale,
        gamma,
        gain,
        speckle,
        shadow_seed,
    )


def _rotation(angles: tuple[float, float, float]) -> np.ndarray:
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rotate_scale(array: np.ndarray, rotation: tuple[float, float, float], scale: float, order: int) -> np.ndarray:
    """Rotate and scale an (X, Y, Z) array about its centre (scipy; ``order`` 1 for images, 0 for labels)."""
    from scipy.ndimage import affine_transform

    matrix = _rotation(rotation) / scale  # output -> input coordinates
    centre = (np.asarray(array.shape, dtype=np.float64) - 1.0) / 2.0
    offset = centre - matrix @ centre
    if array.shape[2] == 1:
        out = affine_transform(array[:, :, 0], matrix[:2, :2], offset[:2], order=order, mode="constant", cval=0.0)
        return np.asarray(out)[:, :, np.newaxis]
    return np.asarray(affine_transform(array, matrix, offset, order=order, mode="constant", cval=0.0))


def apply(params: AugmentParams, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply drawn augmentations: geometry to image and label alike; intensity, shadows and erasing to the
    image only (the label stays untouched: the network must see the head through the occlusion)."""
    from scipy.ndimage import gaussian_filter

    image, label = image.astype(np.float32, copy=True), label.copy()
    for axis, flip in enumerate(params.flips):
        if flip:
            image, label = np.flip(image, axis + 1), np.flip(label, axis)
    if params.scale != 1.0 or any(params.rotation_rad):
        image = np.stack([rotate_scale(c, params.rotation_rad, params.scale, 1) for c in image])
        label = rotate_scale(label, params.rotation_rad, params.scale, 0)
    ultrasound = image[0]
    if params.gamma != 1.0:
        ultrasound = np.clip(ultrasound, 0.0, 1.0) ** params.gamma
    if params.speckle_sigma > 0:
        field = np.random.default_rng(params.noise_seed + 1).standard_normal(ultrasound.shape).astype(np.float32)
        field = gaussian_filter(field, (1.0, 1.0, 1.0 if ultrasound.shape[2] > 1 else 0.0))
        ultrasound = ultrasound * np.exp(params.speckle_sigma * field / max(float(field.std()), 1e-6))
    if params.gain:
        ultrasound = ultrasound + params.gain
    if params.shadow_seed is not None:
        ultrasound = ultrasound * shadow_mask(np.random.default_rng(params.shadow_seed), ultrasound.shape)
    if params.erase_box is not None:
        ultrasound = erase(ultrasound, params.erase_box, params.erase_noise, params.noise_seed)
    image[0] = np.clip(ultrasound, 0.0, 1.0)
    if params.erase_context_box is not None and image.shape[0] > 1:
        image[1] = erase(image[1], params.erase_context_box, params.erase_noise, params.noise_seed + 2)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)
