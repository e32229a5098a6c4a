"""The randomised-appearance phantom: the classic anatomy and scanner with every factor of ``appearance.py`` drawn.

The main random stream (``default_rng(seed)``) draws the anatomy, the probe and the speckle exactly as the classic
generator does, in the same order whatever the factors are; the factors come from their own streams and then
change the spacing, the probe, the pose, the scene and the acoustics. The truth stays exact: the head mask is
painted from the analytic head, whatever the appearance, and the truth record's ``appearance`` holds every factor.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.measure.quality import touches_border
from FetalHeadSegLib.phantom.anatomy import (
    Scene,
    draw_head_size,
    draw_scene,
    draw_walls,
    paint_tissues,
    random_rotation,
)
from FetalHeadSegLib.phantom.appearance import SPACING_LIMITS_MM, draw_factors, factor_rng, finish_image
from FetalHeadSegLib.phantom.fit import head_fit
from FetalHeadSegLib.phantom.generator import Phantom, PhantomConfig, draw_probe, head_labels, truth_record
from FetalHeadSegLib.phantom.scanner import Acoustics, Probe, beam_sample_count, simulate_scan
from FetalHeadSegLib.phantom.shapes import Capsule, Ellipsoid, Sphere
from FetalHeadSegLib.phantom.tissues import ATTENUATION_DB_CM_MHZ, ECHOGENICITY, SPECULAR, Tissue

SHADOW_ATTENUATION_DB_CM_MHZ = 30.0
"""Extra attenuation of the shadow-casting part of the skull: about 40 dB lost behind 2 mm of bone at 3.5 MHz."""
CLASSIC_MEAN_RADIUS_MM = 47.5
MAX_BEAM_SAMPLES = 8_000_000
"""Cost cap of one case: about the largest classic 128^3 case (5-8 million samples; a few seconds on 2 cores)."""
_AXES = {"lateral": 0, "depth": 1, "elevation": 2}


def generate_randomised(config: PhantomConfig, seed: int) -> Phantom:
    """One randomised-appearance volume (see :class:`PhantomConfig`); deterministic for a config and seed."""
    rng = np.random.default_rng(seed)
    factors = draw_factors(seed, config.factors)
    ga = config.ga_weeks if config.ga_weeks is not None else float(rng.uniform(*config.ga_weeks_range))
    size = np.array(config.size)
    head_size = draw_head_size(rng, ga)
    walls = draw_walls(rng)
    spacing = randomised_spacing(config, factors, 2.0 * float(head_size.semi_axes[0]))
    extent = spacing * (size - 1)
    grid = Image(np.zeros(tuple(size), dtype=np.uint8), make_ijk_to_ras(spacing, [-extent[0] / 2, 0.0, -extent[2] / 2]))
    probe, psf_widening = within_budget(
        scanner_settings(draw_probe(rng, True, extent, spacing), factors, grid, seed), grid
    )

    rotation = random_rotation(rng, math.radians(35.0), math.pi)
    if factors["orientation"] == "any":
        rotation = uniform_rotation(factor_rng(seed, "orientation", 1))
    head_axes = probe.axes @ rotation
    depth_axis = probe.axes[:, 1]
    support = Ellipsoid(np.zeros(3), head_axes, head_size.semi_axes).support_distance(depth_axis)
    shallowest = walls.total_mm + rng.uniform(6.0, 25.0) + support
    deepest = max(shallowest, float(extent[1] - probe.skin_center[1]) - support - 4.0)
    depth = float(np.clip(rng.uniform(0.45, 0.62) * extent[1], shallowest, deepest))
    # A shallow grid squeezes the maternal walls rather than push the head's centre out of the volume.
    depth = min(depth, 0.65 * float(extent[1] - probe.skin_center[1]))
    lateral = (rng.uniform(-0.08, 0.08) + factors["head_offset"]) * extent[0]
    elevation = rng.uniform(-0.05, 0.05) * extent[2]
    head_center = probe.skin_center + depth * depth_axis + lateral * probe.axes[:, 0] + elevation * probe.axes[:, 2]
    scene = draw_scene(rng, ga, head_size, walls, head_center, head_axes, probe.skin_center, depth_axis)
    scene = arrange_contacts(scene, factors, seed, probe.skin_center, depth_axis)
    tissues = grid.with_array(paint_tissues(scene, grid, probe.skin_depth))
    acoustics, acoustic_record = randomised_acoustics(factors, scene.head, probe, seed)
    image, field_of_view = simulate_scan(
        tissues, probe, scene.head, scene.head.axes[:, 1], walls.fat_mm + walls.muscle_mm, rng, acoustics
    )
    image, field_of_view, crop_record = finish_image(image, field_of_view, spacing, factors, seed)

    head_mask, labels = head_labels(tissues.array)
    truth = truth_record(config, seed, ga, scene, probe, grid)
    truth["head_touches_border"] = touches_border(head_mask, is_2d=False)
    truth.update(head_fit(grid.with_array(head_mask), field_of_view, truth, is_2d=False))
    truth["appearance"] = {
        "mode": "randomised",
        "factors": factors,
        "psf_widened_for_time_budget": round(psf_widening, 4),
        **acoustic_record,
        **crop_record,
    }
    fov = grid.with_array(field_of_view.astype(np.uint8))
    return Phantom(grid.with_array(image), grid.with_array(head_mask), grid.with_array(labels), tissues, truth, fov)


def randomised_spacing(config: PhantomConfig, factors: dict[str, Any], ofd_mm: float) -> np.ndarray:
    """The configured spacing, else: one axis ``anisotropy`` times coarser than the others, the finest voxel size
    ``spacing_mm`` or the one at which the OFD fills ``head_fill`` of the grid's smallest extent, everything kept
    within :data:`SPACING_LIMITS_MM` (the fill wins over the anisotropy when a limit bites)."""
    if config.spacing_mm is not None:
        return np.array(config.spacing_mm, dtype=np.float64)
    low, high = SPACING_LIMITS_MM
    ratios = np.ones(3)
    ratios[_AXES[factors["anisotropy_axis"]]] = float(factors["anisotropy"])
    smallest_extent = float(np.min((np.asarray(config.size) - 1) * ratios))
    spacing = ratios * (factors["spacing_mm"] or ofd_mm / (float(factors["head_fill"]) * smallest_extent))
    return np.asarray(np.clip(spacing, low, high))


def scanner_settings(probe: Probe, factors: dict[str, Any], grid: Image, seed: int) -> Probe:
    """The drawn probe with the factors' scanner settings and field-of-view shape.

    ``cone``: the drawn opening scaled by ``fov_angle_scale``. ``fan``: the apex 150-250 mm away, the elevation
    opened to cover the whole grid, the lateral opening 0.65 x ``fov_angle_scale`` of the grid's width (the fan's
    sides cut the volume). ``box``: a nearly linear probe (apex 600-1000 mm away) whose beams cover the whole grid.
    """
    scale = float(factors["speckle_size"])
    probe = replace(
        probe,
        axial_sigma_mm=probe.axial_sigma_mm * scale,
        lateral_sigma_rad=probe.lateral_sigma_rad * scale,
        elevation_sigma_rad=probe.elevation_sigma_rad * scale,
        gain_db=float(factors["gain_db"]),
        dynamic_range_db=float(factors["dynamic_range_db"]),
        tgc_error_db_per_cm=float(factors["tgc_error_db_per_cm"]),
        noise_db=float(factors["noise_db"]),
        reverberation_db=float(factors["reverberation_db"]),
        texture_sigma=float(factors["texture_sigma"]),
        half_angle_lateral_rad=min(probe.half_angle_lateral_rad * factors["fov_angle_scale"], math.radians(70.0)),
        half_angle_elevation_rad=min(probe.half_angle_elevation_rad * factors["fov_angle_scale"], math.radians(70.0)),
    )
    shape = factors["fov_shape"]
    if shape == "cone":
        return probe
    # Far apexes: the beams that cover the whole grid then cost little more than a cone's (time budget).
    radius = float(factor_rng(seed, "fov_shape", 1).uniform(*((600.0, 1000.0) if shape == "box" else (150.0, 250.0))))
    # Same lateral and elevation resolution in mm at the focus (about the middle of the volume), farther apex.
    depth_extent = float(grid.spacing_mm[1]) * (grid.shape[1] - 1)
    narrower = (probe.radius_mm + 0.55 * depth_extent) / (radius + 0.55 * depth_extent)
    probe = replace(
        probe,
        apex=probe.skin_center - radius * probe.axes[:, 1],
        radius_mm=radius,
        lateral_sigma_rad=probe.lateral_sigma_rad * narrower,
        elevation_sigma_rad=probe.elevation_sigma_rad * narrower,
    )
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * (np.array(grid.shape) - 1)
    local = (grid.ijk_to_ras_points(corners.astype(np.float64)) - probe.apex) @ probe.axes
    margin = math.radians(0.5)
    theta = float(np.max(np.abs(np.arctan2(local[:, 0], local[:, 1])))) + margin
    phi = float(np.max(np.abs(np.arctan2(local[:, 2], local[:, 1])))) + margin
    nearest = np.clip(grid.ras_to_ijk()[:3, :3] @ probe.apex + grid.ras_to_ijk()[:3, 3], 0, np.array(grid.shape) - 1)
    closest_mm = float(np.linalg.norm(grid.ijk_to_ras_points(nearest[None])[0] - probe.apex))
    radius = min(probe.radius_mm, closest_mm - 0.5)
    # The skin line moves up to the top of the grid; the apex stays, so the beams' directions do not change.
    probe = replace(probe, radius_mm=radius, half_angle_elevation_rad=phi)
    if shape == "fan":
        return replace(probe, half_angle_lateral_rad=min(theta, 0.65 * float(factors["fov_angle_scale"]) * theta))
    return replace(probe, half_angle_lateral_rad=theta)


def within_budget(probe: Probe, grid: Image) -> tuple[Probe, float]:
    """The probe with its point-spread function widened just enough that the scan draws at most
    :data:`MAX_BEAM_SAMPLES` beam samples (the cost of a case), and the factor applied (1 when within budget)."""
    count = beam_sample_count(grid, probe)
    if count <= MAX_BEAM_SAMPLES:
        return probe, 1.0
    scale = 1.02 * (count / MAX_BEAM_SAMPLES) ** (1.0 / 3.0)
    widened = replace(
        probe,
        axial_sigma_mm=probe.axial_sigma_mm * scale,
        lateral_sigma_rad=probe.lateral_sigma_rad * scale,
        elevation_sigma_rad=probe.elevation_sigma_rad * scale,
    )
    return widened, scale


def uniform_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix drawn uniformly (Haar measure), from the QR decomposition of a Gaussian matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return np.asarray(q)


def arrange_contacts(
    scene: Scene, factors: dict[str, Any], seed: int, skin_center: np.ndarray, depth_axis: np.ndarray
) -> Scene:
    """``contact``: the uterine wall (the cavity moved down) or a placenta pressed on the head, no fluid between
    (they overlap the head by 1-6 mm, and the head, painted last, keeps its exact shape); ``limbs_touching``: that
    many limbs lying against the head, tangent to its surface."""
    head = scene.head
    head_top = float((head.center - skin_center) @ depth_axis) - head.support_distance(depth_axis)
    overlap = float(factor_rng(seed, "contact", 1).uniform(1.0, 6.0))
    if factors["contact"] == "wall":
        cavity = scene.cavity
        cavity_top = float((cavity.center - skin_center) @ depth_axis) - float(cavity.semi_axes[1])
        shift = head_top + overlap - cavity_top
        scene = replace(scene, cavity=replace(cavity, center=cavity.center + depth_axis * shift), placenta=None)
    elif factors["contact"] == "placenta":
        # A sphere on the head's shallowest point (both tangent planes there are across the beam), pressed in.
        radius = float(factor_rng(seed, "contact", 2).uniform(60.0, 100.0))
        shape = head.axes @ np.diag(head.semi_axes**2) @ head.axes.T
        top_point = head.center - shape @ depth_axis / head.support_distance(depth_axis)
        scene = replace(scene, placenta=Sphere(top_point - depth_axis * (radius - overlap), radius))
    rng = factor_rng(seed, "limbs_touching", 1)
    limbs = list(scene.limbs)
    for _ in range(int(factors["limbs_touching"])):
        direction = rng.normal(0.0, 1.0, size=3)
        direction /= np.linalg.norm(direction)
        surface = head.center + direction / float(np.linalg.norm(head.local(head.center + direction[None])[0]))
        normal = head.outward_normals(surface[None])[0]
        along = np.cross(normal, rng.normal(0.0, 1.0, size=3))
        along /= np.linalg.norm(along)
        radius = float(rng.uniform(0.08, 0.14)) * float(head.semi_axes[1])
        length = float(rng.uniform(0.5, 1.2)) * float(head.semi_axes[0])
        anchor = surface + normal * radius
        limbs.append(Capsule(anchor - along * length / 2, anchor + along * length / 2, radius))
    return replace(scene, limbs=limbs)


def randomised_acoustics(
    factors: dict[str, Any], head: Ellipsoid, probe: Probe, seed: int
) -> tuple[Acoustics, dict[str, Any]]:
    """Tissue tables from the echogenicity factors, the shadowing skull cap and the dropout bands."""
    echo, specular = ECHOGENICITY.copy(), SPECULAR.copy()
    echo[[Tissue.AMNIOTIC_FLUID, Tissue.CSF]] = factors["fluid_echo"]
    brain = float(np.clip(factors["fluid_echo"] * 10.0 ** (factors["brain_vs_fluid_db"] / 20.0), 1e-3, 0.6))
    for tissue in (Tissue.BRAIN, Tissue.THALAMUS, Tissue.CEREBELLUM):
        echo[tissue] = ECHOGENICITY[tissue] * brain / ECHOGENICITY[Tissue.BRAIN]
    groups = {
        "skull_db": (Tissue.SKULL, Tissue.FETAL_BONE),
        "placenta_db": (Tissue.PLACENTA,),
        "uterus_db": (Tissue.UTERUS,),
        "body_db": (Tissue.FETAL_BODY,),
        "maternal_db": (Tissue.MATERNAL, Tissue.FAT, Tissue.MUSCLE),
    }
    for name, tissues in groups.items():
        gain = np.float32(10.0 ** (factors[name] / 20.0))
        echo[list(tissues)] *= gain
        specular[list(tissues)] *= gain
    record: dict[str, Any] = {"echogenicity": {t.name.lower(): round(float(echo[t]), 6) for t in Tissue}}

    shadow: Any = None
    if factors["shadow_fraction"] > 0:
        cap = factor_rng(seed, "shadow_fraction", 1).normal(0.0, 1.0, size=3)
        cap /= np.linalg.norm(cap)
        cos_limit = 1.0 - 2.0 * float(factors["shadow_fraction"])
        record["shadow_cap_direction_head_frame"] = np.round(cap, 6).tolist()
        record["shadow_cap_cos_limit"] = round(cos_limit, 6)

        def shadow_caster(points: np.ndarray, codes: np.ndarray) -> np.ndarray:
            extra = np.zeros(len(codes), dtype=np.float32)
            skull = codes == Tissue.SKULL
            if skull.any():
                local = head.local(points[skull])
                local /= np.maximum(np.linalg.norm(local, axis=1, keepdims=True), 1e-9)
                extra[skull] = np.where(local @ cap >= cos_limit, SHADOW_ATTENUATION_DB_CM_MHZ, 0.0)
            return extra

        shadow = shadow_caster

    dropout: Any = None
    if factors["dropout_fraction"] > 0:
        rng = factor_rng(seed, "dropout_fraction", 1)
        widths = 2.0 * factors["dropout_fraction"] * rng.dirichlet(np.ones(int(rng.integers(1, 4))))
        centres = [float(rng.uniform(-1.0 + w / 2, 1.0 - w / 2)) for w in widths]
        bands = [[round(c - w / 2, 6), round(c + w / 2, 6)] for c, w in zip(centres, widths, strict=True)]
        record["dropout_bands_normalised_lateral"] = bands
        loss = np.float32(10.0 ** (-factors["dropout_db"] / 20.0))

        def beam_gain(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
            u = theta / probe.half_angle_lateral_rad
            lost = np.zeros(len(theta), dtype=bool)
            for low, high in bands:
                lost |= (u >= low) & (u <= high)
            return np.repeat(np.where(lost, loss, np.float32(1.0))[:, None], len(phi), axis=1)

        dropout = beam_gain

    # The time-gain compensation starts where it does for a classic probe (apex 35-60 mm, mean 47.5 mm, above the
    # skin), whatever this probe's apex distance.
    tgc_origin = probe.radius_mm - CLASSIC_MEAN_RADIUS_MM
    acoustics = Acoustics(
        echo, specular, ATTENUATION_DB_CM_MHZ, float(factors["display_smoothing"]), shadow, dropout, tgc_origin
    )
    return acoustics, record
