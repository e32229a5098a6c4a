"""A second 3D phantom generator, label-first and in image space, sharing no simulation code with the beam-space
scanner (``scanner.py``).

A model trained on one simulator learns that simulator. This generator draws volumes the other way round, the
way label-first image-space simulators (SynthSeg and its kind) do, so that a model can be checked on, or trained
with, a second family of looks:

- anatomy: an egg-shaped head (the two short semi-axes grow along the long one, so no ellipsoid fits it) with a
  skull shell 1.5-3.5 mm thick, brain, two ventricles and a midline echo; a uterine cavity of fluid around it,
  its wall 4-9 mm thick and sometimes pressed against the head; the fetal trunk below the head; a placenta; a limb
  beside the head in some cases;
- appearance: every tissue's mean echo level drawn on its own in dB (brain brighter or darker than fluid, the skull
  from faint to the brightest echo), a smooth multiplicative bias field, speckle made in image space (complex
  Gaussian noise smoothed along the image axes, Rayleigh envelope) rather than along beams, Gaussian blur,
  attenuation along one image axis with shadows cast straight along it behind bone, noise, log compression with a
  random dynamic range and gain;
- field of view: a cone with its apex beyond the volume along the depth axis (70 %), or the whole box;
- grid: 80-112 voxels per axis unless given, spacing set so that the field of view is 1.4-2.2 times the head's
  length, slices up to 1.6 times thicker than the in-plane voxels.

The truth is exact: the head mask holds the voxel centres inside the analytic egg (outer skull border and all
inside it), and :func:`egg_volume_mm3` gives its volume in closed form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.phantom.randomised import uniform_rotation
from FetalHeadSegLib.phantom.shapes import Ellipsoid

TISSUES = ("maternal", "fluid", "wall", "placenta", "trunk", "limb", "brain", "ventricle", "midline", "skull")
"""The tissues whose echo levels are drawn (``levels_db`` keys)."""

LEVEL_RANGES_DB: dict[str, tuple[float, float]] = {
    "maternal": (-24.0, -10.0),
    "fluid": (-50.0, -30.0),
    "wall": (-22.0, -6.0),
    "placenta": (-22.0, -8.0),
    "trunk": (-28.0, -12.0),
    "limb": (-20.0, -6.0),
    "brain": (-36.0, -14.0),
    "ventricle": (-50.0, -30.0),
    "midline": (-20.0, -6.0),
    "skull": (-14.0, 0.0),
}
"""Mean echo level of each tissue in dB against a strong specular echo (0 dB), drawn uniformly per case."""


@dataclass(frozen=True)
class ImageSpaceCase:
    """One volume: the 8-bit image, the exact head mask, the imaged field of view (uint8 images on one grid) and
    what was drawn."""

    image: Image
    head_mask: Image
    field_of_view: Image
    settings: dict[str, Any]


def egg_level(local_mm: np.ndarray, semi_mm: np.ndarray, taper: float) -> np.ndarray:
    """At most 1 inside the egg, for points (..., 3) in the egg's own frame: an ellipsoid of semi-axes ``semi_mm``
    whose second and third semi-axes are scaled by ``1 + taper * x / semi_mm[0]`` along the first."""
    widen = 1.0 + taper * np.clip(local_mm[..., 0] / semi_mm[0], -1.0, 1.0)
    return (
        (local_mm[..., 0] / semi_mm[0]) ** 2
        + (local_mm[..., 1] / (semi_mm[1] * widen)) ** 2
        + (local_mm[..., 2] / (semi_mm[2] * widen)) ** 2
    )


def egg_volume_mm3(semi_mm: np.ndarray, taper: float) -> float:
    """The egg's volume: the integral over x of its elliptical sections, pi b c (1 + k t)^2 (1 - t^2) a dt, is
    pi a b c (4/3 + 4 k^2 / 15) (k = taper).

    Example:
        >>> round(egg_volume_mm3(np.array([1.0, 1.0, 1.0]), 0.0), 6) == round(4.0 / 3.0 * math.pi, 6)
        True
    """
    a, b, c = (float(v) for v in semi_mm)
    return math.pi * a * b * c * (4.0 / 3.0 + 4.0 * taper**2 / 15.0)


def _inside(points: np.ndarray, center: np.ndarray, rotation: np.ndarray, semi_mm: np.ndarray) -> np.ndarray:
    """Which of the grid's (X, Y, Z, 3) points lie in the ellipsoid (columns of ``rotation`` are its axes)."""
    solid = Ellipsoid(np.asarray(center, dtype=np.float64), rotation, np.asarray(semi_mm, dtype=np.float64))
    return solid.contains(points.reshape(-1, 3)).reshape(points.shape[:-1])


def generate_image_space(
    seed: int, size: tuple[int, int, int] | None = None, levels_db: dict[str, float] | None = None
) -> ImageSpaceCase:
    """Draw one volume (deterministic given ``seed``, ``size`` and ``levels_db``).

    Args:
        seed: the case's seed.
        size: the grid in voxels; drawn (80-112 per axis) when None. Everything else is drawn the same either way.
        levels_db: echo levels (dB, see :data:`LEVEL_RANGES_DB`) replacing the drawn ones of the tissues named.

    Raises:
        ValueError: an unknown tissue in ``levels_db``.
    """
    unknown = sorted(set(levels_db or {}) - set(TISSUES))
    if unknown:
        raise ValueError(f"unknown tissues {unknown}; known: {', '.join(TISSUES)}")
    rng = np.random.default_rng(seed)
    drawn_shape = tuple(int(n) for n in rng.integers(80, 113, size=3))
    shape = drawn_shape if size is None else tuple(int(n) for n in size)
    semi = np.array([rng.uniform(28.0, 55.0), 0.0, 0.0])  # half the OFD
    semi[1] = semi[0] * rng.uniform(0.74, 0.86)  # half the BPD
    semi[2] = semi[0] * rng.uniform(0.78, 0.92)  # half the head's height
    taper = float(rng.uniform(0.04, 0.14))
    in_plane_mm = float(rng.uniform(1.4, 2.2)) * 2.0 * semi[0] / max(shape[0], shape[1])
    spacing = np.array([in_plane_mm, in_plane_mm, in_plane_mm * float(rng.uniform(1.0, 1.6))])
    extent = np.array(shape) * spacing
    center = extent / 2.0 + rng.uniform(-0.12, 0.12, size=3) * extent
    rotation = uniform_rotation(rng)

    axes = [np.arange(n) * s for n, s in zip(shape, spacing, strict=True)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    local = (points - center) @ rotation
    skull_mm = float(rng.uniform(1.5, 3.5))
    head = egg_level(local, semi, taper) <= 1.0
    brain = egg_level(local, semi - skull_mm, taper) <= 1.0
    skull = head & ~brain

    tissue, scene = _surroundings(rng, points, center, rotation, semi)
    drawn = {name: float(rng.uniform(*LEVEL_RANGES_DB[name])) for name in TISSUES}
    drawn.update(levels_db or {})
    level = {name: 10.0 ** (value / 20.0) for name, value in drawn.items()}
    amplitude = np.choose(tissue, [level[name] for name in TISSUES[:6]]).astype(np.float32)
    amplitude[brain] = level["brain"]
    for side in (-1.0, 1.0):
        offset = rotation @ np.array([0.1 * semi[0], side * 0.22 * semi[1], 0.1 * semi[2]])
        ventricle = _inside(points, center + offset, rotation, semi * np.array([0.4, 0.12, 0.2]))
        amplitude[brain & ventricle] = level["ventricle"]
    amplitude[brain & (np.abs(local[..., 1]) < 0.8)] = level["midline"]
    amplitude[skull] = level["skull"]

    signal, scan = _scan(rng, amplitude, skull, points, spacing, extent)
    image = np.clip(
        (20.0 * np.log10(np.maximum(signal, 1e-9)) + scan["gain_db"]) / scan["dynamic_range_db"] + 1.0, 0, 1
    )
    imaged, cone = _field_of_view(rng, points, center, extent, scan["depth_axis"], scan["probe_at_far_end"])
    image[~imaged] = 0.0

    grid = Image(np.zeros(shape, np.uint8), make_ijk_to_ras(tuple(spacing), tuple(rng.uniform(-100.0, 100.0, 3))))
    settings = {
        "generator": "FetalHeadSegLib.phantom.image_space",
        "seed": seed,
        "shape": list(shape),
        "spacing_mm": [round(float(s), 4) for s in spacing],
        "head_semi_axes_mm": [round(float(s), 3) for s in semi],
        "taper": round(taper, 4),
        "head_volume_ml": round(egg_volume_mm3(semi, taper) / 1000.0, 4),
        "skull_mm": round(skull_mm, 3),
        **scene,
        "levels_db": {name: round(value, 2) for name, value in drawn.items()},
        **{key: value for key, value in scan.items() if key != "probe_at_far_end"},
        "cone": cone,
        "head_imaged_fraction": round(float(imaged[head].mean()), 4) if head.any() else 0.0,
    }
    return ImageSpaceCase(
        grid.with_array(np.rint(image * 255.0).astype(np.uint8)),
        grid.with_array(head.astype(np.uint8)),
        grid.with_array(imaged.astype(np.uint8)),
        settings,
    )


def _surroundings(
    rng: np.random.Generator, points: np.ndarray, center: np.ndarray, rotation: np.ndarray, semi: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """Tissue codes (indices into :data:`TISSUES`'s first six) of everything around the head, and what was drawn."""
    tissue = np.zeros(points.shape[:3], np.uint8)
    cavity_semi = semi * rng.uniform(1.15, 1.9, size=3) + np.array([semi[0] * 0.6, 0.0, 0.0])
    cavity_center = center + rotation @ rng.uniform(-0.25, 0.25, size=3) * (cavity_semi - semi)
    aligned = bool(rng.random() >= 0.5)
    cavity_rotation = rotation if aligned else rotation @ uniform_rotation(rng)
    wall_mm = float(rng.uniform(4.0, 9.0))
    tissue[_inside(points, cavity_center, cavity_rotation, cavity_semi)] = 2
    tissue[_inside(points, cavity_center, cavity_rotation, cavity_semi - wall_mm)] = 1
    against = bool(rng.random() < 0.35)
    if against:  # the wall drawn through the fluid on one side of the head: no fluid gap there
        side = rotation @ np.array([0.0, rng.choice([-1.0, 1.0]) * semi[1], 0.0])
        pressed = _inside(points, center + side * 1.6, rotation, semi * np.array([1.2, 0.7, 1.2]))
        tissue[pressed & (tissue == 1)] = 2
    normal = uniform_rotation(rng)[:, 0]
    offset = (points - cavity_center) @ normal
    fluid = tissue == 1
    placenta_from = float(np.percentile(offset[fluid], rng.uniform(75.0, 95.0))) if fluid.any() else 0.0
    tissue[(offset > placenta_from) & fluid] = 3
    trunk_semi = semi * np.array([1.3, 1.1, 1.2])
    trunk_center = center + rotation @ np.array([0.0, 0.0, -(semi[2] + trunk_semi[2] * 0.85)])
    tissue[_inside(points, trunk_center, rotation, trunk_semi)] = 4
    limb = bool(rng.random() < 0.4)
    if limb:
        limb_rotation = uniform_rotation(rng)
        limb_center = center + rotation @ (np.array([rng.uniform(-0.5, 0.5), 1.0, 0.0]) * (semi + 6.0))
        tissue[_inside(points, limb_center, limb_rotation, np.array([semi[0] * 0.8, 7.0, 7.0]))] = 5
    scene = {
        "cavity_over_head": [round(float(v), 3) for v in cavity_semi / semi],
        "cavity_aligned_with_head": aligned,
        "wall_mm": round(wall_mm, 2),
        "wall_against_head": against,
        "limb": limb,
    }
    return tissue, scene


def _scan(
    rng: np.random.Generator,
    amplitude: np.ndarray,
    skull: np.ndarray,
    points: np.ndarray,
    spacing: np.ndarray,
    extent: np.ndarray,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Bias field, image-space speckle, blur, attenuation and shadows along one image axis, noise: the echo
    amplitude before log compression, and the settings drawn."""
    from scipy import ndimage

    shape = amplitude.shape
    bias = ndimage.gaussian_filter(rng.normal(size=shape), sigma=rng.uniform(6.0, 14.0))
    amplitude = amplitude * np.exp(rng.uniform(0.1, 0.5) * bias / max(float(bias.std()), 1e-6)).astype(np.float32)
    correlation_voxels = rng.uniform(0.4, 1.4, size=3) / spacing
    field = ndimage.gaussian_filter(rng.normal(size=shape), correlation_voxels) + 1j * ndimage.gaussian_filter(
        rng.normal(size=shape), correlation_voxels
    )
    envelope = np.abs(field)
    signal = ndimage.gaussian_filter(amplitude, rng.uniform(0.3, 1.0) / spacing) * (envelope / envelope.mean())

    depth_axis = int(rng.integers(0, 3))
    far_end = bool(rng.random() < 0.5)  # the probe beyond the last slice of the depth axis instead of the first

    def from_probe(values: np.ndarray) -> np.ndarray:
        return np.flip(values, depth_axis) if far_end else values

    bone_mm = from_probe(skull.astype(np.float32) * float(spacing[depth_axis]))
    behind_bone_mm = from_probe(np.cumsum(bone_mm, axis=depth_axis) - bone_mm)
    shadow_db_per_mm = float(rng.uniform(0.5, 2.5))
    depth_mm = extent[depth_axis] - points[..., depth_axis] if far_end else points[..., depth_axis]
    net_db_per_mm = float(rng.uniform(0.0, 0.08))
    loss_db = net_db_per_mm * depth_mm + shadow_db_per_mm * np.minimum(behind_bone_mm, 12.0)
    noise = 10.0 ** (rng.uniform(-60.0, -40.0) / 20.0) * np.abs(rng.normal(size=shape) + 1j * rng.normal(size=shape))
    signal = signal * 10.0 ** (-loss_db / 20.0) + noise
    scan = {
        "depth_axis": depth_axis,
        "probe_at_far_end": far_end,
        "shadow_db_per_mm_of_bone": round(shadow_db_per_mm, 3),
        "attenuation_db_per_mm": round(net_db_per_mm, 4),
        "dynamic_range_db": round(float(rng.uniform(40.0, 65.0)), 2),
        "gain_db": round(float(rng.uniform(-6.0, 6.0)), 2),
    }
    return signal, scan


def _field_of_view(
    rng: np.random.Generator, points: np.ndarray, center: np.ndarray, extent: np.ndarray, depth_axis: int, far_end: bool
) -> tuple[np.ndarray, bool]:
    """The imaged voxels: a cone of half-angle 30-50 degrees from an apex 10-40 mm beyond the probe's face of the
    grid (70 % of cases), else the whole box."""
    if rng.random() >= 0.7:
        return np.ones(points.shape[:3], dtype=bool), False
    apex = center.copy()
    beyond = rng.uniform(10.0, 40.0)
    apex[depth_axis] = extent[depth_axis] + beyond if far_end else -beyond
    ray = points - apex
    along = np.abs(ray[..., depth_axis])
    across = np.sqrt(np.maximum(np.sum(ray**2, axis=-1) - along**2, 0.0))
    return np.arctan2(across, along) <= rng.uniform(math.radians(30.0), math.radians(50.0)), True
