"""Phantom generation: draw a case from a seed, paint its anatomy, simulate the scan, record the exact truth.

Everything random is drawn from ``numpy.random.default_rng(seed)`` in a fixed order, so a seed and a config
reproduce a case byte for byte; every drawn parameter is written to the truth record.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from FetalHeadSegLib._version import __version__
from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.measure.ellipse import Ellipse
from FetalHeadSegLib.measure.quality import touches_border
from FetalHeadSegLib.phantom.anatomy import (
    Scene,
    Walls,
    draw_head_size,
    draw_scene,
    draw_walls,
    paint_tissues,
    random_rotation,
)
from FetalHeadSegLib.phantom.appearance import Appearance, check_factors
from FetalHeadSegLib.phantom.scanner import Probe, simulate_scan
from FetalHeadSegLib.phantom.shapes import Ellipsoid
from FetalHeadSegLib.phantom.tissues import Tissue

HEAD_TISSUES = (
    Tissue.SKULL,
    Tissue.SUTURE,
    Tissue.BRAIN,
    Tissue.CSF,
    Tissue.CHOROID_PLEXUS,
    Tissue.THALAMUS,
    Tissue.FALX,
    Tissue.CEREBELLUM,
)
SKULL_TISSUES = (Tissue.SKULL, Tissue.SUTURE)
LABEL_SKULL = 1
LABEL_INTRACRANIAL = 2
SPEED_OF_SOUND_MM_PER_US = 1.54


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate.

    Attributes:
        dimension: 3 (volume, cone-shaped field of view) or 2 (frame, fan).
        size: grid size (X, Y[, Z]); Y is depth, away from the probe. 2D sizes have two values.
        spacing_mm: voxel size; None chooses one from the drawn gestational age so the head fills about half the
            field of view (isotropic in-plane, coarser in elevation for volumes).
        ga_weeks: fixed gestational age, or None to draw it uniformly from ``ga_weeks_range``.
        ga_weeks_range: range of the drawn gestational age (INTERGROWTH-21st standards: 14 to 40 weeks).
        head_fill_range: with automatic spacing, the fraction of the lateral field of view the occipito-frontal
            diameter fills, drawn uniformly from this range (above 1 the head is cut by the field of view).
        elevation_ratio_range: with automatic spacing of volumes, how much coarser the elevation voxel size is
            than the in-plane one, drawn uniformly from this range.
        appearance: ``classic`` (the one appearance of the bundled samples, default) or ``randomised`` (volumes
            only): every factor of :data:`FetalHeadSegLib.phantom.appearance.FACTORS` is drawn per case (tissue
            echogenicities, speckle, blur, gain/TGC/dynamic range/gamma, noise, shadows, dropout, field-of-view
            shape and crop, head fill and offset, contact with the wall or placenta, limbs against the head,
            orientation, spacing and anisotropy). ``head_fill_range`` and ``elevation_ratio_range`` then do not
            apply: ``head_fill`` and ``anisotropy`` are factors.
        factors: randomised mode only: a factor name to a fixed value, or to a ``[low, high]`` range (a list of
            choices for categorical factors) narrowing its draw; ``appearance.nominal_factors(family)`` fixes a
            family at its classic values.
    """

    dimension: int = 3
    size: tuple[int, ...] = (160, 160, 160)
    spacing_mm: tuple[float, ...] | None = None
    ga_weeks: float | None = None
    ga_weeks_range: tuple[float, float] = (14.0, 40.0)
    head_fill_range: tuple[float, float] = (0.45, 0.65)
    elevation_ratio_range: tuple[float, float] = (1.0, 1.4)
    appearance: str = Appearance.CLASSIC
    factors: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dimension not in (2, 3):
            raise ValueError(f"dimension must be 2 or 3, got {self.dimension}")
        if len(self.size) != self.dimension or min(self.size) < 16:
            raise ValueError(f"size needs {self.dimension} values of at least 16, got {self.size}")
        if self.spacing_mm is not None and (
            len(self.spacing_mm) != self.dimension or not all(math.isfinite(s) and s > 0 for s in self.spacing_mm)
        ):
            raise ValueError(f"spacing_mm needs {self.dimension} positive values, got {self.spacing_mm}")
        low, high = self.ga_weeks_range
        if not 14.0 <= low <= high <= 40.0:
            raise ValueError(f"ga_weeks_range must lie within 14-40 weeks, got {self.ga_weeks_range}")
        if self.ga_weeks is not None and not 14.0 <= self.ga_weeks <= 40.0:
            raise ValueError(f"ga_weeks must lie within 14-40 weeks, got {self.ga_weeks}")
        low, high = self.head_fill_range
        if not 0.1 <= low <= high <= 1.5:
            raise ValueError(f"head_fill_range must lie within 0.1-1.5, got {self.head_fill_range}")
        low, high = self.elevation_ratio_range
        if not 0.5 <= low <= high <= 4.0:
            raise ValueError(f"elevation_ratio_range must lie within 0.5-4, got {self.elevation_ratio_range}")
        if self.appearance not in tuple(Appearance):
            raise ValueError(f"appearance must be one of {[str(a) for a in Appearance]}, got {self.appearance!r}")
        object.__setattr__(self, "appearance", Appearance(self.appearance))
        if self.appearance == Appearance.RANDOMISED and self.dimension != 3:
            raise ValueError("appearance 'randomised' is implemented for volumes (dimension 3) only")
        if self.factors and self.appearance != Appearance.RANDOMISED:
            raise ValueError("factors apply to appearance 'randomised' only")
        check_factors(self.factors)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values; the classic appearance omits the randomisation keys, so records of
        classic cases are those written before the keys existed."""
        record = asdict(self)
        record["appearance"] = str(self.appearance)
        if self.appearance == Appearance.CLASSIC:
            del record["appearance"], record["factors"]
        return record

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhantomConfig:
        """The config saved by :meth:`to_dict`; keys missing from older records keep their defaults."""
        defaults = cls()
        spacing = data.get("spacing_mm")
        return cls(
            dimension=int(data["dimension"]),
            size=tuple(int(v) for v in data["size"]),
            spacing_mm=None if spacing is None else tuple(float(v) for v in spacing),
            ga_weeks=None if data.get("ga_weeks") is None else float(data["ga_weeks"]),
            ga_weeks_range=_pair(data.get("ga_weeks_range"), defaults.ga_weeks_range),
            head_fill_range=_pair(data.get("head_fill_range"), defaults.head_fill_range),
            elevation_ratio_range=_pair(data.get("elevation_ratio_range"), defaults.elevation_ratio_range),
            appearance=str(data.get("appearance", defaults.appearance)),
            factors=dict(data.get("factors") or {}),
        )


def _pair(values: Any, default: tuple[float, float]) -> tuple[float, float]:
    return default if values is None else (float(values[0]), float(values[1]))


@dataclass(frozen=True)
class Phantom:
    """A generated case: the B-mode image, the head mask (the segmentation target), skull/brain labels, truth,
    and the imaged field of view (uint8 mask: 1 where the scanner sees)."""

    image: Image
    head_mask: Image
    labels: Image
    tissues: Image
    truth: dict[str, Any]
    field_of_view: Image | None = None


def generate_phantom(config: PhantomConfig, seed: int) -> Phantom:
    """Generate one phantom case, deterministically for a given ``config`` and ``seed``.

    Example:
        >>> case = generate_phantom(PhantomConfig(dimension=2, size=(400, 270)), seed=7)  # doctest: +SKIP
        >>> case.truth["hc_mm"], case.image.array.dtype  # doctest: +SKIP
    """
    if config.appearance == Appearance.RANDOMISED:
        from FetalHeadSegLib.phantom.randomised import generate_randomised

        return generate_randomised(config, seed)
    rng = np.random.default_rng(seed)
    ga = config.ga_weeks if config.ga_weeks is not None else float(rng.uniform(*config.ga_weeks_range))
    volume = config.dimension == 3
    size = np.array(config.size if volume else [*config.size, 1])
    head_size = draw_head_size(rng, ga)
    walls = draw_walls(rng)
    spacing = _spacing(config, rng, float(head_size.semi_axes[0]), walls, size)
    extent = spacing * (size - 1)
    origin = np.array([-extent[0] / 2.0, 0.0, -extent[2] / 2.0])
    grid = Image(np.zeros(tuple(size), dtype=np.uint8), make_ijk_to_ras(spacing, origin))
    probe = draw_probe(rng, volume, extent, spacing)

    # Head pose: transthalamic plane roughly across the beam (occipito-frontal axis lateral, left-right axis
    # along depth), rotated freely in-plane and tilted out of plane (much less for 2D standard planes).
    tilt = math.radians(35.0) if volume else math.radians(6.0)
    head_axes = probe.axes @ random_rotation(rng, tilt, math.pi)
    depth_axis = probe.axes[:, 1]
    support = Ellipsoid(np.zeros(3), head_axes, head_size.semi_axes).support_distance(depth_axis)
    shallowest = walls.total_mm + rng.uniform(6.0, 25.0) + support
    deepest = max(shallowest, extent[1] - support - 4.0)
    depth = float(np.clip(rng.uniform(0.45, 0.62) * extent[1], shallowest, deepest))
    room = float(extent[1] - probe.skin_center[1])
    if depth > room:
        # A grid too shallow for the maternal walls and the head: the head's centre would lie below the volume.
        # Squeeze the walls instead (the head, painted last, keeps its shape), as the randomised generator does;
        # a grid with room keeps its draw.
        depth = 0.65 * room
    lateral = rng.uniform(-0.08, 0.08) * extent[0]
    elevation = rng.uniform(-0.05, 0.05) * extent[2] if volume else rng.normal(0.0, 1.0)
    head_center = probe.skin_center + depth * depth_axis + lateral * probe.axes[:, 0] + elevation * probe.axes[:, 2]
    scene = draw_scene(rng, ga, head_size, walls, head_center, head_axes, probe.skin_center, depth_axis)
    tissues = grid.with_array(paint_tissues(scene, grid, probe.skin_depth))
    image, field_of_view = simulate_scan(
        tissues, probe, scene.head, scene.head.axes[:, 1], walls.fat_mm + walls.muscle_mm, rng
    )

    head_mask, labels = head_labels(tissues.array)
    truth = truth_record(config, seed, ga, scene, probe, grid)
    truth["head_touches_border"] = touches_border(head_mask, is_2d=not volume)
    return Phantom(
        grid.with_array(image),
        grid.with_array(head_mask),
        grid.with_array(labels),
        tissues,
        truth,
        grid.with_array(field_of_view.astype(np.uint8)),
    )


def head_labels(tissues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The head mask and the skull/intracranial label map (uint8) of a tissue map."""
    head_mask = np.isin(tissues, np.asarray(HEAD_TISSUES, dtype=np.uint8)).astype(np.uint8)
    labels = np.where(
        np.isin(tissues, np.asarray(SKULL_TISSUES, dtype=np.uint8)), LABEL_SKULL, LABEL_INTRACRANIAL * head_mask
    ).astype(np.uint8)
    return head_mask, labels


def _spacing(
    config: PhantomConfig, rng: np.random.Generator, semi_major: float, walls: Walls, size: np.ndarray
) -> np.ndarray:
    """The configured spacing, or one that fits the walls and the head with its occipito-frontal diameter
    filling a drawn fraction of the width (isotropic in-plane; elevation a drawn factor coarser for volumes)."""
    if config.spacing_mm is not None:
        values = list(config.spacing_mm)
        return np.array(values + [1.0] if config.dimension == 2 else values, dtype=np.float64)
    lateral = 2.0 * semi_major / (rng.uniform(*config.head_fill_range) * (size[0] - 1))
    depth = (walls.total_mm + 25.0 + 2.0 * semi_major + 10.0) / (size[1] - 1)
    in_plane = max(lateral, depth)
    if config.dimension == 2:
        return np.array([in_plane, in_plane, 1.0])
    elevation = max(in_plane * rng.uniform(*config.elevation_ratio_range), (2.0 * semi_major + 16.0) / (size[2] - 1))
    return np.array([in_plane, in_plane, elevation])


def draw_probe(rng: np.random.Generator, volume: bool, extent: np.ndarray, spacing: np.ndarray) -> Probe:
    """A curvilinear probe on the top face of the grid, steered and shifted a little."""
    steer = rng.uniform(-math.radians(8.0), math.radians(8.0))
    c, s = math.cos(steer), math.sin(steer)
    axes = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # columns: lateral, depth, elevation
    if volume:
        tilt = rng.uniform(-math.radians(6.0), math.radians(6.0))
        ct, st = math.cos(tilt), math.sin(tilt)
        axes = axes @ np.array([[1.0, 0.0, 0.0], [0.0, ct, -st], [0.0, st, ct]])
    radius = rng.uniform(35.0, 60.0)
    skin = np.array([rng.uniform(-0.1, 0.1) * extent[0], rng.uniform(0.0, 3.0), 0.0])
    frequency = rng.uniform(2.5, 5.0)
    wavelength = SPEED_OF_SOUND_MM_PER_US / frequency
    # Resolution of the scanner, coarsened to the output grid: speckle grains span a few voxels, as in exports.
    axial_sigma = max(0.35 * wavelength, 0.5 * float(spacing[1]))
    lateral_sigma_mm = max(1.3 * wavelength, 0.9 * float(spacing[0]))
    elevation_sigma_mm = max(1.6 * wavelength, 0.9 * float(spacing[2])) if volume else 0.0
    focus_mm = radius + 0.55 * extent[1]
    return Probe(
        apex=skin - radius * axes[:, 1],
        axes=axes,
        radius_mm=radius,
        half_angle_lateral_rad=rng.uniform(math.radians(30.0), math.radians(38.0)),
        half_angle_elevation_rad=rng.uniform(math.radians(24.0), math.radians(32.0)) if volume else 0.0,
        frequency_mhz=frequency,
        axial_sigma_mm=axial_sigma,
        lateral_sigma_rad=lateral_sigma_mm / focus_mm,
        elevation_sigma_rad=elevation_sigma_mm / focus_mm,
        gain_db=rng.uniform(-4.0, 4.0),
        dynamic_range_db=rng.uniform(48.0, 58.0),
        tgc_error_db_per_cm=rng.uniform(-0.4, 0.4),
        noise_db=rng.uniform(-72.0, -60.0),
        reverberation_db=rng.uniform(-26.0, -16.0),
        texture_sigma=0.3,
    )


def truth_record(
    config: PhantomConfig, seed: int, ga: float, scene: Scene, probe: Probe, grid: Image
) -> dict[str, Any]:
    """The exact biometry of the head under the biometry JSON's keys, plus every drawn parameter."""
    head = scene.head
    of_axis, lr_axis, cc_axis = head.axes[:, 0], head.axes[:, 1], head.axes[:, 2]
    record: dict[str, Any] = {
        "generator": "FetalHeadSegLib.phantom",
        "generator_version": __version__,
        "seed": seed,
        "config": config.to_dict(),
        "dimension": config.dimension,
        "shape": list(grid.shape),
        "spacing_mm": list(grid.spacing_mm),
        "gestational_age_weeks": round(ga, 4),
    }
    if config.dimension == 3:
        ellipse = Ellipse((0.0, 0.0), float(head.semi_axes[0]), float(head.semi_axes[1]), 0.0)
        origin, u, v = head.center, of_axis, lr_axis
        record["head_volume_ml"] = round(head.volume_mm3 / 1000.0, 4)
        plane_note = "transthalamic plane of the analytic head: occipito-frontal and left-right axes"
    else:
        direction = grid.direction_ras
        origin, u, v = grid.origin_ras, direction[:, 0], direction[:, 1]
        section = head.section(origin, u, v)
        if section is None:
            raise RuntimeError("the image plane misses the head")  # cannot happen: the head is centred on it
        ellipse = section
        record["head_volume_ml"] = None
        tilt = math.degrees(math.acos(min(1.0, abs(float(cc_axis @ direction[:, 2])))))
        record["plane_tilt_from_transthalamic_deg"] = round(tilt, 3)
        plane_note = "section of the analytic head by the image plane"
    to_ras = lambda st: origin + np.outer(st[:, 0], u) + np.outer(st[:, 1], v)  # noqa: E731
    center = to_ras(np.asarray([ellipse.center]))[0]
    major = ellipse.major_direction[0] * u + ellipse.major_direction[1] * v
    minor = ellipse.minor_direction[0] * u + ellipse.minor_direction[1] * v
    record.update(
        {
            "hc_mm": round(ellipse.perimeter, 4),
            "bpd_mm": round(2.0 * ellipse.semi_minor, 4),
            "ofd_mm": round(2.0 * ellipse.semi_major, 4),
            "bpd_convention": "outer-outer",
            "cephalic_index": round(100.0 * ellipse.semi_minor / ellipse.semi_major, 4),
            "plane": {
                "origin_ras": np.round(center, 4).tolist(),
                "normal_ras": np.round(np.cross(u, v) if config.dimension == 2 else cc_axis, 6).tolist(),
                "ofd_axis_ras": np.round(major, 6).tolist(),
                "lr_axis_ras": np.round(minor, 6).tolist(),
                "method": "analytic",
                "note": plane_note,
            },
            "landmarks": {
                "coordinate_system": "RAS",
                "units": "mm",
                "bpd": np.round(to_ras(ellipse.minor_axis_endpoints()), 4).tolist(),
                "ofd": np.round(to_ras(ellipse.major_axis_endpoints()), 4).tolist(),
                "hc_ellipse": np.round(to_ras(ellipse.points(64)), 4).tolist(),
            },
            "head_left_right_axis_ras": np.round(lr_axis, 6).tolist(),
            "labels": {
                "0": "background",
                str(LABEL_SKULL): "skull (incl. sutures)",
                str(LABEL_INTRACRANIAL): "intracranial",
            },
            "probe": probe.to_dict(),
            "scene": scene.to_dict(),
        }
    )
    return record


TRUTH_MEASUREMENTS = {"hc": "hc_mm", "bpd": "bpd_mm", "ofd": "ofd_mm", "volume": "head_volume_ml"}
"""The measurements a truth record holds, by short name, under the biometry JSON's keys."""


def relative_errors(measured: Any, truth: dict[str, Any]) -> dict[str, float]:
    """|measured - true| / true of HC, BPD, OFD and head volume (keyed as :data:`TRUTH_MEASUREMENTS`), for a
    :class:`~FetalHeadSegLib.measure.biometry.Biometry` (or anything with its attributes) against a truth record;
    NaN where nothing was measured or the truth has no value (2D frames have no volume).

    Example:
        >>> from types import SimpleNamespace
        >>> measured = SimpleNamespace(hc_mm=103.0, bpd_mm=25.0, ofd_mm=40.0, head_volume_ml=None)
        >>> relative_errors(measured, {"hc_mm": 100.0, "bpd_mm": 25.0, "ofd_mm": 32.0, "head_volume_ml": 50.0})
        {'hc': 0.03, 'bpd': 0.0, 'ofd': 0.25, 'volume': nan}
    """
    errors = {}
    for name, key in TRUTH_MEASUREMENTS.items():
        value = None if measured is None else getattr(measured, key)
        reference = truth.get(key)
        errors[name] = math.nan if value is None or not reference else abs(float(value) - reference) / reference
    return errors
