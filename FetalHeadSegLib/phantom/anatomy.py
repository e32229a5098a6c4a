"""The phantom's anatomy: a fetal head sized by gestational age inside its surroundings, painted as tissue codes.

Head frame (columns of ``head.axes``): x = occipito-frontal (+x frontal), y = left-right, z = cranio-caudal
(+z vertex). The outer ellipsoid is the outer skull surface, whose semi-axes are OFD/2, BPD/2 and a cranio-caudal
semi-axis drawn shorter than BPD/2, so the transthalamic plane (z = 0) holds the two longest axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from FetalHeadSegLib.core.image import Image
from FetalHeadSegLib.measure.growth import intergrowth_2014_median_sd
from FetalHeadSegLib.phantom.shapes import Capsule, Ellipsoid, Sphere
from FetalHeadSegLib.phantom.tissues import Tissue

Solid = Ellipsoid | Capsule | Sphere


@dataclass(frozen=True)
class Scene:
    """Every drawn anatomical parameter (mm, RAS). ``to_dict()`` records them in the truth file."""

    ga_weeks: float
    bpd_z: float
    ofd_z: float
    head: Ellipsoid
    skull_thickness_mm: float
    suture_width_mm: float
    fontanelle_radius_mm: float
    cavity: Ellipsoid
    uterine_wall_mm: float
    placenta: Sphere | None
    fat_mm: float
    muscle_mm: float
    body: Ellipsoid
    spine: Capsule
    limbs: list[Capsule] = field(default_factory=list)

    @property
    def inner_skull(self) -> Ellipsoid:
        return self.head.scaled(self.head.semi_axes - self.skull_thickness_mm)

    def to_dict(self) -> dict[str, Any]:
        def solid(shape: Solid | None) -> dict[str, Any] | None:
            if shape is None:
                return None
            if isinstance(shape, Ellipsoid):
                return {"center": _r(shape.center), "axes_columns": _r(shape.axes.T), "semi_axes": _r(shape.semi_axes)}
            if isinstance(shape, Capsule):
                return {"start": _r(shape.start), "end": _r(shape.end), "radius": round(shape.radius, 4)}
            return {"center": _r(shape.center), "radius": round(shape.radius, 4)}

        return {
            "ga_weeks": round(self.ga_weeks, 4),
            "bpd_z": round(self.bpd_z, 4),
            "ofd_z": round(self.ofd_z, 4),
            "head": solid(self.head),
            "skull_thickness_mm": round(self.skull_thickness_mm, 4),
            "suture_width_mm": round(self.suture_width_mm, 4),
            "fontanelle_radius_mm": round(self.fontanelle_radius_mm, 4),
            "amniotic_cavity": solid(self.cavity),
            "uterine_wall_mm": round(self.uterine_wall_mm, 4),
            "placenta": solid(self.placenta),
            "abdominal_fat_mm": round(self.fat_mm, 4),
            "abdominal_muscle_mm": round(self.muscle_mm, 4),
            "body": solid(self.body),
            "spine": solid(self.spine),
            "limbs": [solid(limb) for limb in self.limbs],
        }


def _r(values: np.ndarray) -> Any:
    return np.round(np.asarray(values, dtype=np.float64), 4).tolist()


def random_rotation(rng: np.random.Generator, max_tilt_rad: float, yaw_range_rad: float) -> np.ndarray:
    """Rotation: yaw about z uniform in +-yaw_range, then tilts about x and y, normal with SD max_tilt / 2."""
    yaw = rng.uniform(-yaw_range_rad, yaw_range_rad)
    tilt_x, tilt_y = np.clip(rng.normal(0.0, max_tilt_rad / 2.0, size=2), -max_tilt_rad, max_tilt_rad)
    return _rotation_z(yaw) @ _rotation_x(tilt_x) @ _rotation_y(tilt_y)


def _rotation_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rotation_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def head_semi_axes(ga_weeks: float, bpd_z: float, ofd_z: float, height_ratio: float) -> np.ndarray:
    """Outer-skull semi-axes (OFD/2, BPD/2, cranio-caudal) from the INTERGROWTH-21st medians and SDs."""
    bpd_median, bpd_sd = intergrowth_2014_median_sd("bpd", ga_weeks)
    ofd_median, ofd_sd = intergrowth_2014_median_sd("ofd", ga_weeks)
    half_bpd = 0.5 * (bpd_median + bpd_z * bpd_sd)
    half_ofd = 0.5 * (ofd_median + ofd_z * ofd_sd)
    return np.array([half_ofd, half_bpd, height_ratio * half_bpd])


@dataclass(frozen=True)
class HeadSize:
    """The drawn size of the head: outer-skull semi-axes (mm), their z-scores, skull and suture sizes."""

    semi_axes: np.ndarray
    bpd_z: float
    ofd_z: float
    skull_thickness_mm: float
    suture_width_mm: float
    fontanelle_radius_mm: float


@dataclass(frozen=True)
class Walls:
    """Thicknesses (mm) of what lies between the probe's skin line and the amniotic cavity."""

    fat_mm: float
    muscle_mm: float
    uterine_mm: float

    @property
    def total_mm(self) -> float:
        return self.fat_mm + self.muscle_mm + self.uterine_mm


def draw_head_size(rng: np.random.Generator, ga_weeks: float) -> HeadSize:
    """Head size at ``ga_weeks``: BPD and OFD drawn from the INTERGROWTH-21st spread (z within +-2.5)."""
    # BPD and OFD are correlated (rho = 0.7), which keeps the cephalic index in its usual range.
    normal = rng.normal(0.0, 1.0, size=2)
    bpd_z = float(np.clip(normal[0], -2.5, 2.5))
    ofd_z = float(np.clip(0.7 * normal[0] + math.sqrt(1.0 - 0.7**2) * normal[1], -2.5, 2.5))
    semi = head_semi_axes(ga_weeks, bpd_z, ofd_z, rng.uniform(0.80, 0.92))
    maturity = (ga_weeks - 14.0) / 26.0  # 0 at 14 weeks, 1 at 40 weeks
    return HeadSize(
        semi_axes=semi,
        bpd_z=bpd_z,
        ofd_z=ofd_z,
        skull_thickness_mm=(0.8 + 1.7 * maturity) * rng.uniform(0.85, 1.15),
        suture_width_mm=(3.0 - 1.8 * maturity) * rng.uniform(0.8, 1.2),
        fontanelle_radius_mm=(0.22 - 0.10 * maturity) * float(semi[1]) * rng.uniform(0.8, 1.2),
    )


def draw_walls(rng: np.random.Generator) -> Walls:
    """Maternal abdominal fat and muscle, and the uterine wall."""
    return Walls(rng.uniform(4.0, 18.0), rng.uniform(5.0, 12.0), rng.uniform(5.0, 12.0))


def draw_scene(
    rng: np.random.Generator,
    ga_weeks: float,
    size: HeadSize,
    walls: Walls,
    head_center: np.ndarray,
    head_axes: np.ndarray,
    skin_center: np.ndarray,
    depth_axis: np.ndarray,
) -> Scene:
    """Draw every structure around a head of the given size placed at ``head_center``.

    ``skin_center`` is where the central beam enters the skin and ``depth_axis`` (unit) its direction; the
    amniotic cavity starts below the walls and contains the head.
    """
    semi = size.semi_axes
    head = Ellipsoid(np.asarray(head_center, dtype=np.float64), head_axes, semi)
    head_top = float((head.center - skin_center) @ depth_axis) - head.support_distance(depth_axis)
    cavity_top = min(head_top - 4.0, max(walls.total_mm + 1.0, head_top - rng.uniform(6.0, 30.0)))
    # The amniotic cavity hugs the fetus: from its top, below the walls, to beyond the head on every side.
    cavity_frame = _frame_with_y(depth_axis)
    head_depth = float((head.center - skin_center) @ depth_axis)
    margin = float(semi.max()) + rng.uniform(4.0, 30.0, size=2)
    cavity_semi = np.array([margin[0], head_depth - cavity_top + rng.uniform(0.0, 30.0), margin[1]])
    lateral_shift = cavity_frame @ np.array([rng.uniform(-10.0, 10.0), 0.0, rng.uniform(-10.0, 10.0)])
    cavity_center = skin_center + depth_axis * (cavity_top + cavity_semi[1]) + lateral_shift
    cavity = Ellipsoid(cavity_center, cavity_frame, cavity_semi)

    placenta = None
    if rng.uniform() < 0.75:
        # Anterior (between probe and fetus) half of the time, else somewhere on the far or side walls.
        if rng.uniform() < 0.5:
            direction = -depth_axis + rng.normal(0.0, 0.25, size=3)
        else:
            direction = rng.normal(0.0, 1.0, size=3)
            direction -= min(0.0, float(direction @ -depth_axis)) * -depth_axis
        direction /= np.linalg.norm(direction)
        wall_point = cavity.center + direction * cavity.support_distance(direction)
        radius = rng.uniform(60.0, 100.0)
        thickness = rng.uniform(15.0, 35.0)
        placenta = Sphere(wall_point + direction * (radius - thickness), radius)

    flexion = rng.uniform(-0.45, 0.45)
    body_axes = head_axes @ _rotation_y(flexion)
    body_semi = np.array([0.95 * semi[1], 1.05 * semi[1], 1.5 * semi[2]])
    body_center = (
        head.center
        + head_axes @ np.array([-0.3 * semi[0], 0.0, 0.0])
        - body_axes[:, 2] * (0.85 * semi[2] + 0.95 * body_semi[2])
    )
    body = Ellipsoid(body_center, body_axes, body_semi)
    back = body_center - body_axes[:, 0] * 0.78 * body_semi[0]
    spine = Capsule(
        back + body_axes[:, 2] * 0.9 * body_semi[2], back - body_axes[:, 2] * 0.9 * body_semi[2], 0.09 * semi[1]
    )

    limbs = []
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.25, 0.35, 0.25, 0.15]))):
        direction = rng.normal(0.0, 1.0, size=3)
        direction /= np.linalg.norm(direction)
        surface = head.center + direction * head.support_distance(direction)
        anchor = surface + direction * rng.uniform(2.0, 12.0)
        along = np.cross(direction, rng.normal(0.0, 1.0, size=3))
        along /= np.linalg.norm(along)
        length = rng.uniform(0.5, 1.2) * semi[0]
        limbs.append(
            Capsule(anchor - along * length / 2, anchor + along * length / 2, rng.uniform(0.08, 0.14) * semi[1])
        )
    return Scene(
        ga_weeks,
        size.bpd_z,
        size.ofd_z,
        head,
        size.skull_thickness_mm,
        size.suture_width_mm,
        size.fontanelle_radius_mm,
        cavity,
        walls.uterine_mm,
        placenta,
        walls.fat_mm,
        walls.muscle_mm,
        body,
        spine,
        limbs,
    )


def _frame_with_y(direction: np.ndarray) -> np.ndarray:
    """An orthonormal frame whose second column is ``direction``."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(direction[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(direction, helper)
    x /= np.linalg.norm(x)
    return np.stack([x, direction, np.cross(x, direction)], axis=1)


class _Canvas:
    """A tissue map on an image grid, painted solid by solid within each solid's bounding box."""

    def __init__(self, grid: Image) -> None:
        self.grid = grid
        self.labels = np.full(grid.shape, Tissue.MATERNAL, dtype=np.uint8)
        self._ras_to_ijk = grid.ras_to_ijk()

    def region(self, center: np.ndarray, radius: float) -> tuple[tuple[slice, ...], np.ndarray] | None:
        """The index box around a sphere and the RAS points (N, 3) of its voxels, or None if off the grid."""
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * radius + center
        ijk = corners @ self._ras_to_ijk[:3, :3].T + self._ras_to_ijk[:3, 3]
        low = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
        high = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, self.grid.shape)
        if np.any(high <= low):
            return None
        box = tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high, strict=True))
        i, j, k = np.meshgrid(*(np.arange(s.start, s.stop, dtype=np.float32) for s in box), indexing="ij")
        affine = self.grid.ijk_to_ras.astype(np.float32)
        points = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1) @ affine[:3, :3].T + affine[:3, 3]
        return box, points.astype(np.float64)

    def paint(self, solid: Solid, tissue: Tissue, over: tuple[Tissue, ...] | None = None, extra: Any = None) -> None:
        """Set ``tissue`` inside ``solid`` (and where ``extra(points)`` holds), only over ``over`` tissues."""
        found = self.region(solid.center, solid.bounding_radius)
        if found is None:
            return
        box, points = found
        inside = solid.contains(points)
        if extra is not None:
            inside &= extra(points)
        view = self.labels[box]
        current = view.reshape(-1)
        if over is not None:
            inside &= np.isin(current, np.asarray(over, dtype=np.uint8))
        current[inside] = tissue
        self.labels[box] = current.reshape(view.shape)


def paint_tissues(scene: Scene, grid: Image, skin_depth: Any) -> np.ndarray:
    """The tissue map (uint8 :class:`Tissue` codes) of the scene on ``grid``.

    ``skin_depth(points)`` gives the depth (mm) of (N, 3) RAS points below the probe's skin line, along which the
    abdominal fat and muscle are layered.
    """
    canvas = _Canvas(grid)
    everything = Sphere(grid.ijk_to_ras_points(np.asarray(grid.shape) / 2.0)[0], 1e6)
    fat_end, muscle_end = scene.fat_mm, scene.fat_mm + scene.muscle_mm
    canvas.paint(everything, Tissue.FAT, extra=lambda p: skin_depth(p) < fat_end)
    canvas.paint(everything, Tissue.MUSCLE, extra=lambda p: (skin_depth(p) >= fat_end) & (skin_depth(p) < muscle_end))
    uterus = scene.cavity.scaled(scene.cavity.semi_axes + scene.uterine_wall_mm)
    canvas.paint(uterus, Tissue.UTERUS, over=(Tissue.MATERNAL,))
    canvas.paint(scene.cavity, Tissue.AMNIOTIC_FLUID, over=(Tissue.UTERUS,))
    if scene.placenta is not None:
        canvas.paint(scene.placenta, Tissue.PLACENTA, over=(Tissue.AMNIOTIC_FLUID,))
    canvas.paint(scene.body, Tissue.FETAL_BODY, over=(Tissue.AMNIOTIC_FLUID, Tissue.PLACENTA))
    canvas.paint(scene.spine, Tissue.FETAL_BONE, over=(Tissue.FETAL_BODY,))
    for limb in scene.limbs:
        canvas.paint(limb, Tissue.FETAL_BODY, over=(Tissue.AMNIOTIC_FLUID,))
        bone = Capsule(limb.start, limb.end, 0.35 * limb.radius)
        canvas.paint(bone, Tissue.FETAL_BONE, over=(Tissue.FETAL_BODY,))
    _paint_head(canvas, scene)
    return canvas.labels


def _paint_head(canvas: _Canvas, scene: Scene) -> None:
    head, inner = scene.head, scene.inner_skull
    a, b, c = head.semi_axes
    canvas.paint(head, Tissue.SKULL)

    def sutures(points: np.ndarray) -> np.ndarray:
        x, y, z = ((points - head.center) @ head.axes).T
        half = scene.suture_width_mm / 2.0
        sagittal = (np.abs(y) < half) & (z > 0.25 * c)
        coronal = (np.abs(x - 0.3 * a) < half) & (z > 0.35 * c)
        lambdoid = (np.abs(x + 0.55 * a) < half) & (z > 0.15 * c)
        anterior = np.linalg.norm(np.stack([x - 0.3 * a, y, z - c], 1), axis=1) < scene.fontanelle_radius_mm
        posterior = np.linalg.norm(np.stack([x + 0.55 * a, y, z - 0.8 * c], 1), axis=1) < (
            0.4 * scene.fontanelle_radius_mm
        )
        return np.asarray(sagittal | coronal | lambdoid | anterior | posterior)

    canvas.paint(head, Tissue.SUTURE, over=(Tissue.SKULL,), extra=sutures)
    canvas.paint(inner, Tissue.BRAIN)
    ai, bi, ci = inner.semi_axes

    def part(center: tuple[float, float, float], semi: tuple[float, float, float]) -> Ellipsoid:
        offset = head.axes @ (np.asarray(center) * inner.semi_axes)
        return Ellipsoid(head.center + offset, head.axes, np.asarray(semi) * inner.semi_axes)

    brain = (Tissue.BRAIN,)
    canvas.paint(part((-0.55, 0.0, -0.42), (0.16, 0.30, 0.15)), Tissue.CEREBELLUM, over=brain)
    for side in (-1.0, 1.0):
        canvas.paint(part((-0.02, side * 0.11, -0.08), (0.15, 0.10, 0.13)), Tissue.THALAMUS, over=brain)

    falx_half = max(0.6, 0.5 * min(canvas.grid.spacing_mm[:2]))

    def midline(points: np.ndarray) -> np.ndarray:
        x, y, z = ((points - head.center) @ head.axes).T
        return np.asarray((np.abs(y) < falx_half) & (z > -0.25 * ci))

    canvas.paint(inner, Tissue.FALX, over=brain, extra=midline)
    for side in (-1.0, 1.0):
        canvas.paint(part((0.0, side * 0.2, 0.22), (0.42, 0.07, 0.10)), Tissue.CSF)
        canvas.paint(part((-0.22, side * 0.2, 0.2), (0.14, 0.055, 0.07)), Tissue.CHOROID_PLEXUS, over=(Tissue.CSF,))
    canvas.paint(part((0.3, 0.0, 0.02), (0.09, 0.045, 0.07)), Tissue.CSF)  # cavum septi pellucidi
