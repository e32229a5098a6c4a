"""Phantoms: determinism, masks against the analytic truth, imaging physics checked against its own theory."""

from __future__ import annotations

import math

import numpy as np
import pytest

from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.measure.biometry import measure_biometry
from FetalHeadSegLib.measure.growth import intergrowth_2014_median_sd
from FetalHeadSegLib.phantom import PhantomConfig, generate_phantom
from FetalHeadSegLib.phantom.anatomy import head_semi_axes
from FetalHeadSegLib.phantom.scanner import Probe, beam_envelope
from FetalHeadSegLib.phantom.shapes import Ellipsoid
from FetalHeadSegLib.phantom.tissues import ATTENUATION_DB_CM_MHZ, Tissue

SMALL_2D = PhantomConfig(dimension=2, size=(240, 160))
SMALL_3D = PhantomConfig(dimension=3, size=(64, 64, 64))


def test_same_seed_same_case_other_seed_other_case() -> None:
    first, again, other = (generate_phantom(SMALL_2D, seed) for seed in (11, 11, 12))
    np.testing.assert_array_equal(first.image.array, again.image.array)
    np.testing.assert_array_equal(first.head_mask.array, again.head_mask.array)
    assert first.truth == again.truth
    assert not np.array_equal(first.image.array, other.image.array)
    assert first.truth["hc_mm"] != other.truth["hc_mm"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_2d_mask_biometry_matches_the_analytic_section(seed: int) -> None:
    case = generate_phantom(PhantomConfig(dimension=2, size=(400, 270)), seed)
    truth = case.truth
    measured = measure_biometry(case.head_mask)
    for key in ("hc_mm", "bpd_mm", "ofd_mm"):
        assert getattr(measured, key) == pytest.approx(truth[key], rel=0.01), key
    assert abs(truth["plane_tilt_from_transthalamic_deg"]) < 12.0


@pytest.mark.parametrize("seed", [0, 5])
def test_3d_mask_biometry_matches_the_analytic_head(seed: int) -> None:
    case = generate_phantom(PhantomConfig(dimension=3, size=(80, 80, 80)), seed)
    truth = case.truth
    assert not truth["head_touches_border"]
    measured = measure_biometry(case.head_mask, left_right_axis_ras=truth["head_left_right_axis_ras"])
    for key in ("hc_mm", "bpd_mm", "ofd_mm"):
        assert getattr(measured, key) == pytest.approx(truth[key], rel=0.02), key
    assert measured.head_volume_ml == pytest.approx(truth["head_volume_ml"], rel=0.02)
    # Without the anatomical cue the two longest principal axes give the same plane (the head is flatter
    # cranio-caudally than left-right).
    unaided = measure_biometry(case.head_mask)
    assert unaided.hc_mm == pytest.approx(truth["hc_mm"], rel=0.02)


def test_labels_are_skull_and_intracranial_inside_the_head_mask() -> None:
    case = generate_phantom(SMALL_3D, 4)
    labels, head = case.labels.array, case.head_mask.array
    assert set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_array_equal(labels > 0, head > 0)
    tissues = case.tissues.array
    assert (tissues == Tissue.SUTURE).any()  # sutures and fontanelles leave gaps in the bone
    assert (tissues == Tissue.FALX).any() and (tissues == Tissue.THALAMUS).any()


def test_head_size_follows_intergrowth() -> None:
    for weeks in (16.0, 24.0, 36.0):
        semi = head_semi_axes(weeks, 0.0, 0.0, 0.85)
        assert 2 * semi[1] == pytest.approx(intergrowth_2014_median_sd("bpd", weeks)[0])
        assert 2 * semi[0] == pytest.approx(intergrowth_2014_median_sd("ofd", weeks)[0])
    bpds = [
        generate_phantom(PhantomConfig(dimension=2, size=(120, 80), ga_weeks=20.0), s).truth["scene"] for s in range(3)
    ]
    median, sd = intergrowth_2014_median_sd("bpd", 20.0)
    for scene in bpds:
        assert abs(2 * scene["head"]["semi_axes"][1] - median) <= 2.5 * sd + 1e-6


@pytest.mark.parametrize("config", [SMALL_2D, SMALL_3D], ids=["fan", "cone"])
def test_nothing_outside_the_field_of_view(config: PhantomConfig) -> None:
    case = generate_phantom(config, 2)
    probe = case.truth["probe"]
    apex, axes = np.asarray(probe["apex"]), np.asarray(probe["axes_columns"]).T
    ijk = np.argwhere(np.ones(case.image.shape, dtype=bool))
    local = (case.image.ijk_to_ras_points(ijk) - apex) @ axes
    theta = np.arctan2(local[:, 0], local[:, 1])
    phi = np.arctan2(local[:, 2], local[:, 1])
    r = np.linalg.norm(local, axis=1)
    outside = (np.abs(theta) > probe["half_angle_lateral_rad"]) | (r < probe["radius_mm"]) | (local[:, 1] <= 0)
    if config.dimension == 3:
        outside |= np.abs(phi) > probe["half_angle_elevation_rad"]
    values = case.image.array.reshape(-1)
    assert outside.any() and (values[outside] == 0).all()
    assert (values[~outside] > 0).mean() > 0.5
    # The case's own field-of-view mask is that region (up to the probe record's rounding at its edge).
    field_of_view = case.field_of_view.array.reshape(-1) != 0
    assert (values[~field_of_view] == 0).all()
    assert (field_of_view == ~outside).mean() > 0.999


def _probe(texture: float = 0.0) -> Probe:
    return Probe(
        apex=np.array([0.0, -40.0, 0.0]),
        axes=np.eye(3),
        radius_mm=40.0,
        half_angle_lateral_rad=math.radians(30),
        half_angle_elevation_rad=0.0,
        frequency_mhz=3.5,
        axial_sigma_mm=0.3,
        lateral_sigma_rad=0.01,
        elevation_sigma_rad=0.0,
        gain_db=0.0,
        dynamic_range_db=50.0,
        tgc_error_db_per_cm=0.0,
        noise_db=-200.0,
        reverberation_db=-200.0,
        texture_sigma=texture,
    )


def _homogeneous_frame(extent_mm: float = 60.0, spacing_mm: float = 0.2) -> Image:
    n = int(extent_mm / spacing_mm)
    affine = make_ijk_to_ras((spacing_mm, spacing_mm, 1.0), (-extent_mm / 2, 0.0, 0.0))
    return Image(np.full((n, n, 1), Tissue.MATERNAL, dtype=np.uint8), affine)


FAR_HEAD = Ellipsoid(np.array([0.0, -1e4, 0.0]), np.eye(3), np.array([1e4, 1e4, 1e4]))


def test_speckle_envelope_is_rayleigh_in_homogeneous_tissue() -> None:
    from scipy import stats

    envelope = beam_envelope(
        _homogeneous_frame(), _probe(), FAR_HEAD, np.array([1.0, 0, 0]), 0.0, np.random.default_rng(0)
    )
    band = (envelope.r_mm > 55) & (envelope.r_mm < 80)
    rows = envelope.values[band][:, 5:-5, 0]  # away from the edges of the fan
    normalised = (rows / np.sqrt(np.mean(rows**2, axis=1, keepdims=True))).ravel()
    snr = normalised.mean() / normalised.std()
    assert snr == pytest.approx(math.sqrt(math.pi / (4 - math.pi)), rel=0.03)  # 1.913 for a Rayleigh amplitude
    assert normalised.mean() ** 2 == pytest.approx(math.pi / 4, rel=0.02)  # E[x]^2 / E[x^2] of a Rayleigh
    scale = math.sqrt(np.mean(normalised**2) / 2.0)
    assert stats.kstest(normalised, "rayleigh", args=(0, scale)).statistic < 0.02
    textured = beam_envelope(
        _homogeneous_frame(), _probe(texture=0.3), FAR_HEAD, np.array([1.0, 0, 0]), 0.0, np.random.default_rng(0)
    ).values[band][:, 5:-5, 0]
    textured = (textured / np.sqrt(np.mean(textured**2, axis=1, keepdims=True))).ravel()
    assert textured.mean() / textured.std() < snr  # tissue texture makes the speckle less regular


def test_skull_shadows_what_lies_behind_it_along_the_beam() -> None:
    """A 3 mm bone slab in the middle of the fan: behind it the echo drops by the two-way attenuation."""
    frame = _homogeneous_frame()
    y = frame.ijk_to_ras_points(np.argwhere(np.ones(frame.shape, bool)))[:, 1].reshape(frame.shape)
    x = frame.ijk_to_ras_points(np.argwhere(np.ones(frame.shape, bool)))[:, 0].reshape(frame.shape)
    slab = (y >= 20.0) & (y < 23.0) & (np.abs(x) < 6.0)
    tissues = frame.with_array(np.where(slab, Tissue.SKULL, Tissue.MATERNAL).astype(np.uint8))
    probe = _probe()

    def mean_db(image: Image, rows: tuple[float, float], shadowed: bool) -> float:
        envelope = beam_envelope(image, probe, FAR_HEAD, np.array([1.0, 0, 0]), 0.0, np.random.default_rng(3))
        band = (envelope.r_mm > 40 + rows[0]) & (envelope.r_mm < 40 + rows[1])
        central = np.abs(envelope.theta_rad) < math.radians(3.0)
        side = (np.abs(envelope.theta_rad) > math.radians(12.0)) & (np.abs(envelope.theta_rad) < math.radians(25))
        values = envelope.values[band][:, central if shadowed else side, 0]
        return 10 * math.log10(float(np.mean(values**2)))

    expected_loss_db = (
        2 * probe.frequency_mhz * (ATTENUATION_DB_CM_MHZ[Tissue.SKULL] - ATTENUATION_DB_CM_MHZ[Tissue.MATERNAL]) * 0.3
    )
    behind = mean_db(tissues, (30.0, 45.0), True) - mean_db(tissues, (30.0, 45.0), False)
    in_front = mean_db(tissues, (5.0, 15.0), True) - mean_db(tissues, (5.0, 15.0), False)
    assert behind == pytest.approx(-expected_loss_db, abs=1.5)
    assert abs(in_front) < 1.0


def test_config_validation_and_round_trip() -> None:
    config = PhantomConfig(dimension=3, size=(64, 72, 80), spacing_mm=(0.5, 0.5, 1.0), ga_weeks_range=(20, 30))
    assert PhantomConfig.from_dict(config.to_dict()) == config
    assert PhantomConfig.from_dict({"dimension": 3, "size": [64, 64, 64]}) == PhantomConfig(size=(64, 64, 64))
    for bad in (
        dict(dimension=4),
        dict(size=(10, 10, 10)),
        dict(ga_weeks=45.0),
        dict(spacing_mm=(0.5, -1, 1)),
        dict(head_fill_range=(0.6, 0.4)),
        dict(elevation_ratio_range=(0.1, 1.0)),
    ):
        with pytest.raises(ValueError):
            PhantomConfig(**bad)


@pytest.mark.parametrize("fill", [(0.2, 0.25), (0.3, 0.4)])
def test_head_fills_the_drawn_fraction_of_the_lateral_field_of_view(fill: tuple[float, float]) -> None:
    config = PhantomConfig(dimension=2, size=(160, 160), ga_weeks_range=(20.0, 40.0), head_fill_range=fill)
    for seed in range(6):
        truth = generate_phantom(config, seed).truth
        lateral_extent_mm = truth["spacing_mm"][0] * (config.size[0] - 1)
        assert fill[0] - 1e-9 <= truth["ofd_mm"] / lateral_extent_mm <= fill[1] + 1e-9


@pytest.mark.parametrize("seed", [1, 4])
def test_a_grid_too_shallow_for_walls_and_head_keeps_the_head_in_view(seed: int) -> None:
    """A 50 mm deep grid at 16 weeks: the maternal walls (20-35 mm) and the head (OFD 47 mm) do not both fit in
    depth. The walls give way, and nearly all of the head is imaged (before, the head's centre was drawn below the
    volume and none of it was imaged with these seeds); the mask stays the exact analytic head."""
    from FetalHeadSegLib.phantom.fit import head_fit

    config = PhantomConfig(dimension=3, size=(100, 100, 35), spacing_mm=(0.5, 0.5, 1.5), ga_weeks=16.0)
    case = generate_phantom(config, seed)
    fit = head_fit(case.head_mask, case.field_of_view.array != 0, case.truth, is_2d=False)
    assert fit["head_imaged_fraction"] > 0.95
    voxel_ml = 0.5 * 0.5 * 1.5 / 1000.0
    assert int((case.head_mask.array != 0).sum()) * voxel_ml == pytest.approx(case.truth["head_volume_ml"], rel=0.03)


def test_elevation_voxels_follow_the_drawn_ratio() -> None:
    config = PhantomConfig(dimension=3, size=(64, 64, 96), elevation_ratio_range=(1.6, 1.7))
    spacing = generate_phantom(config, 3).truth["spacing_mm"]
    assert spacing[0] == spacing[1] and 1.6 <= spacing[2] / spacing[0] <= 1.7


def test_truth_record_has_the_biometry_keys_and_every_draw() -> None:
    truth = generate_phantom(SMALL_3D, 9).truth
    for key in (
        "hc_mm",
        "bpd_mm",
        "ofd_mm",
        "cephalic_index",
        "head_volume_ml",
        "plane",
        "landmarks",
        "gestational_age_weeks",
        "probe",
        "scene",
        "seed",
        "config",
    ):
        assert key in truth
    assert truth["probe"]["frequency_mhz"] > 0 and len(truth["scene"]["limbs"]) <= 3
    a, b, c = truth["scene"]["head"]["semi_axes"]
    assert truth["head_volume_ml"] == pytest.approx(4 / 3 * math.pi * a * b * c / 1000, rel=1e-4)


def test_relative_errors_compare_each_measurement_with_the_truth_record() -> None:
    """|measured - true| / true by hand; NaN where nothing was measured or the truth has no value."""
    from types import SimpleNamespace

    from FetalHeadSegLib.phantom.generator import relative_errors

    truth = {"hc_mm": 200.0, "bpd_mm": 50.0, "ofd_mm": 64.0, "head_volume_ml": None}
    measured = SimpleNamespace(hc_mm=190.0, bpd_mm=55.0, ofd_mm=64.0, head_volume_ml=120.0)
    errors = relative_errors(measured, truth)
    assert errors["hc"] == pytest.approx(0.05) and errors["bpd"] == pytest.approx(0.1) and errors["ofd"] == 0.0
    assert math.isnan(errors["volume"])  # a 2D truth has no volume
    assert all(math.isnan(error) for error in relative_errors(None, truth).values())
