"""Randomised-appearance phantoms: every factor is deterministic given a seed and changes what it says; the truth
stays exact; classic cases are unchanged; the phantom command warns exactly when the head is cut."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from FetalHeadSegLib.cli import main
from FetalHeadSegLib.measure.biometry import measure_biometry
from FetalHeadSegLib.phantom import Phantom, PhantomConfig, generate_phantom
from FetalHeadSegLib.phantom.appearance import (
    FACTORS,
    FACTORS_BY_NAME,
    FAMILIES,
    SPACING_LIMITS_MM,
    draw_factors,
    joint_family_factors,
    nominal_factors,
)
from FetalHeadSegLib.phantom.randomised import randomised_spacing
from FetalHeadSegLib.phantom.tissues import Tissue

SEED = 9_100_000
BASE = {**nominal_factors(), "fov_shape": "box"}
"""Every factor at its classic value and no black cone: a test changes one factor against this."""


@lru_cache(maxsize=32)
def _case(seed: int, size: int, ga: float, items: tuple[tuple[str, Any], ...]) -> Phantom:
    factors = {**BASE, **dict(items)}
    config = PhantomConfig(size=(size,) * 3, ga_weeks=ga, appearance="randomised", factors=factors)
    return generate_phantom(config, seed)


def case(seed: int = SEED, size: int = 48, ga: float = 15.0, **factors: Any) -> Phantom:
    """A 48^3 randomised volume at 15 weeks, with the given factors on top of :data:`BASE`."""
    return _case(seed, size, ga, tuple(sorted(factors.items())))


def region(phantom: Phantom, *tissues: Tissue) -> np.ndarray:
    """Imaged voxels of the tissues, eroded by one voxel (no partial volume with the neighbours)."""
    inside = np.isin(phantom.tissues.array, np.asarray(tissues, dtype=np.uint8))
    imaged = phantom.field_of_view.array != 0 if phantom.field_of_view is not None else True
    return np.asarray(ndimage.binary_erosion(inside) & imaged)


def mean_in(phantom: Phantom, mask: np.ndarray) -> float:
    assert mask.sum() > 20, "too few voxels to compare"
    return float(phantom.image.array[mask].mean())


# --- determinism and the factor table ---------------------------------------------------------------------------


def test_factor_draws_are_deterministic_and_independent() -> None:
    first, again, other = draw_factors(1), draw_factors(1), draw_factors(2)
    assert first == again and first != other
    assert set(first) == {f.name for f in FACTORS}
    for factor in FACTORS:
        forced = draw_factors(1, {factor.name: factor.nominal})
        assert forced[factor.name] == factor.nominal
        assert {k: v for k, v in forced.items() if k != factor.name} == {
            k: v for k, v in first.items() if k != factor.name
        }, f"fixing {factor.name} changed another factor"


def test_drawn_values_stay_in_their_ranges_and_narrowed_ranges_are_honoured() -> None:
    draws = [draw_factors(seed) for seed in range(40)]
    for factor in FACTORS:
        values = [d[factor.name] for d in draws]
        if factor.kind == "choice":
            assert set(values) <= set(factor.choices)
        else:
            assert min(values) >= factor.low and max(values) <= factor.high
    assert {d["fov_shape"] for d in draws} == {"cone", "fan", "box"}
    assert min(d["brain_vs_fluid_db"] for d in draws) < 0 < max(d["brain_vs_fluid_db"] for d in draws)
    narrowed = [draw_factors(seed, {"gamma": [0.9, 1.1], "fov_shape": ["fan"]}) for seed in range(10)]
    assert all(0.9 <= d["gamma"] <= 1.1 and d["fov_shape"] == "fan" for d in narrowed)


def test_nominal_factors_fix_a_family_and_reject_unknown_ones() -> None:
    fixed = nominal_factors("shadows", "dropout")
    assert set(fixed) == set(FAMILIES["shadows"]) | set(FAMILIES["dropout"])
    assert fixed["shadow_fraction"] == 0.0
    with pytest.raises(ValueError, match="unknown factor family"):
        nominal_factors("shadow")


def test_same_seed_same_case_other_seed_other_case() -> None:
    config = PhantomConfig(size=(40, 40, 40), ga_weeks=15.0, appearance="randomised")
    first, again, other = (generate_phantom(config, seed) for seed in (SEED, SEED, SEED + 1))
    for part in ("image", "head_mask", "labels", "field_of_view"):
        np.testing.assert_array_equal(getattr(first, part).array, getattr(again, part).array)
    assert first.truth == again.truth
    assert first.truth["appearance"]["factors"] != other.truth["appearance"]["factors"]
    assert not np.array_equal(first.image.array, other.image.array)
    json.dumps(first.truth)  # the record is plain JSON
    assert set(first.truth["appearance"]["factors"]) == set(FACTORS_BY_NAME)


# --- each factor changes what it says ---------------------------------------------------------------------------


@pytest.mark.parametrize("brain_db, fluid", [(30.0, 0.004), (-14.0, 0.1)], ids=["brain-brighter", "brain-darker"])
def test_brain_brighter_or_darker_than_fluid(brain_db: float, fluid: float) -> None:
    phantom = case(brain_vs_fluid_db=brain_db, fluid_echo=fluid)
    brain = mean_in(phantom, region(phantom, Tissue.BRAIN))
    fluid_mean = mean_in(phantom, region(phantom, Tissue.AMNIOTIC_FLUID))
    assert (brain > fluid_mean + 10) if brain_db > 0 else (brain < fluid_mean - 10)


def test_faint_skull_is_darker_than_a_bright_one() -> None:
    bright, faint = case(skull_db=3.0), case(skull_db=-20.0)
    skull = region(bright, Tissue.SKULL) | (bright.tissues.array == Tissue.SKULL)
    assert mean_in(faint, skull) < mean_in(bright, skull) - 20


def test_shadows_darken_what_lies_behind_the_skull_only() -> None:
    plain, shadowed = case(shadow_fraction=0.0), case(shadow_fraction=0.6)
    assert "shadow_cap_direction_head_frame" in shadowed.truth["appearance"]
    inside = region(plain, Tissue.BRAIN, Tissue.THALAMUS, Tissue.CEREBELLUM, Tissue.CSF, Tissue.FALX)
    assert mean_in(shadowed, inside) < 0.8 * mean_in(plain, inside)
    # In front of the head (above its shallowest voxel, minus the PSF's reach) nothing changes.
    top = int(np.argwhere(plain.head_mask.array)[:, 1].min())
    front = np.zeros(plain.image.shape, dtype=bool)
    front[:, : max(1, top - 3)] = True
    np.testing.assert_array_equal(plain.image.array[front], shadowed.image.array[front])


def test_dropout_darkens_the_lost_beams() -> None:
    plain, lost = case(dropout_fraction=0.0), case(dropout_fraction=0.35, dropout_db=30.0)
    bands = lost.truth["appearance"]["dropout_bands_normalised_lateral"]
    assert sum(high - low for low, high in bands) == pytest.approx(0.7)
    imaged = region(plain, *Tissue) & (plain.image.array > 0)
    assert mean_in(lost, imaged) < mean_in(plain, imaged) - 5


@pytest.mark.parametrize(
    "factor, low, high",
    [("gain_db", -8.0, 10.0), ("gamma", 1.7, 0.6), ("dynamic_range_db", 40.0, 72.0)],
)
def test_display_settings_brighten_the_volume(factor: str, low: float, high: float) -> None:
    imaged = region(case(), *Tissue)
    assert mean_in(case(**{factor: low}), imaged) < mean_in(case(**{factor: high}), imaged) - 5


def test_a_joint_draw_moves_a_family_together_along_its_axis() -> None:
    darkest, brightest = joint_family_factors("gain", 0.0), joint_family_factors("gain", 1.0)
    assert darkest == pytest.approx(
        {"gain_db": -8.0, "tgc_error_db_per_cm": -1.2, "dynamic_range_db": 40.0, "gamma": 1.7}
    )
    assert brightest == pytest.approx(
        {"gain_db": 10.0, "tgc_error_db_per_cm": 1.2, "dynamic_range_db": 72.0, "gamma": 0.6}
    )
    imaged = region(case(), *Tissue)
    assert mean_in(case(**darkest), imaged) < mean_in(case(**brightest), imaged) - 20
    narrowed = joint_family_factors("noise", 0.5, {"noise_db": [-75.0, -35.0]})
    assert narrowed == pytest.approx({"noise_db": -55.0, "reverberation_db": -19.0})
    assert set(joint_family_factors("field_of_view", 0.3, {"crop_fraction": 1.0})) == {"fov_angle_scale"}
    with pytest.raises(ValueError, match="unknown factor family"):
        joint_family_factors("gains", 0.2)
    with pytest.raises(ValueError, match="u must lie"):
        joint_family_factors("gain", 1.5)


def test_noise_fills_the_fluid() -> None:
    quiet, noisy = case(noise_db=-75.0, fluid_echo=0.002), case(noise_db=-25.0, fluid_echo=0.002)
    fluid = region(quiet, Tissue.AMNIOTIC_FLUID)
    assert mean_in(noisy, fluid) > mean_in(quiet, fluid) + 10


def _lateral_correlation(phantom: Phantom, mask: np.ndarray) -> float:
    values = phantom.image.array.astype(np.float64)
    pairs = mask[:-1] & mask[1:]
    a, b = values[:-1][pairs], values[1:][pairs]
    return float(np.corrcoef(a, b)[0, 1])


def test_speckle_size_and_blur_widen_the_grain() -> None:
    brain = region(case(), Tissue.BRAIN, Tissue.MATERNAL, Tissue.PLACENTA, Tissue.UTERUS)
    fine = _lateral_correlation(case(speckle_size=0.8, display_smoothing=0.0), brain)
    coarse = _lateral_correlation(case(speckle_size=2.5, display_smoothing=0.0), brain)
    blurred = _lateral_correlation(case(speckle_size=0.8, display_smoothing=0.0, blur_mm=1.5), brain)
    assert coarse > fine + 0.05 and blurred > fine + 0.05


def test_field_of_view_shapes_and_crop_zero_outside() -> None:
    cone, fan, box = (case(fov_shape=shape) for shape in ("cone", "fan", "box"))
    assert box.field_of_view.array.all()
    assert max(float(cone.field_of_view.array.mean()), float(fan.field_of_view.array.mean())) < 0.95
    for phantom in (cone, fan):
        assert (phantom.image.array[phantom.field_of_view.array == 0] == 0).all()
    cropped = case(fov_shape="box", crop_fraction=0.6)
    box_ijk = cropped.truth["appearance"]["crop_box_ijk"]
    window = tuple(slice(a, b) for a, b in box_ijk)
    outside = np.ones(cropped.image.shape, dtype=bool)
    outside[window] = False
    assert all(b - a == round(0.6 * 48) for a, b in box_ijk)
    assert (cropped.image.array[outside] == 0).all() and (cropped.field_of_view.array[outside] == 0).all()
    assert cropped.field_of_view.array[window].all()


def test_a_case_costs_at_most_the_beam_sample_budget() -> None:
    from dataclasses import replace

    from FetalHeadSegLib.phantom.randomised import MAX_BEAM_SAMPLES, within_budget
    from FetalHeadSegLib.phantom.scanner import beam_sample_count

    phantom = case(size=64)
    probe_record = phantom.truth["probe"]
    probe = _probe_from_record(probe_record)
    fine = replace(probe, axial_sigma_mm=0.05, lateral_sigma_rad=0.0005, elevation_sigma_rad=0.0005)
    assert beam_sample_count(phantom.tissues, fine) > MAX_BEAM_SAMPLES
    widened, scale = within_budget(fine, phantom.tissues)
    assert scale > 1.0 and beam_sample_count(phantom.tissues, widened) <= MAX_BEAM_SAMPLES
    assert within_budget(probe, phantom.tissues) == (probe, 1.0)
    assert phantom.truth["appearance"]["psf_widened_for_time_budget"] == 1.0


def _probe_from_record(record: dict[str, Any]) -> Any:
    from FetalHeadSegLib.phantom.scanner import Probe

    values = {k: v for k, v in record.items() if k not in ("apex", "axes_columns")}
    return Probe(apex=np.asarray(record["apex"]), axes=np.asarray(record["axes_columns"]).T, **values)


def test_spacing_and_anisotropy_are_in_the_affine() -> None:
    phantom = case(spacing_mm=0.4, anisotropy=2.5, anisotropy_axis="depth")
    np.testing.assert_allclose(phantom.image.spacing_mm, (0.4, 1.0, 0.4))
    np.testing.assert_allclose(np.linalg.norm(phantom.image.ijk_to_ras[:3, :3], axis=0), (0.4, 1.0, 0.4))
    for seed in range(30):
        factors = draw_factors(seed)
        config = PhantomConfig(size=(96, 96, 96), appearance="randomised")
        spacing = randomised_spacing(config, factors, ofd_mm=40.0 + 2.5 * seed)
        assert SPACING_LIMITS_MM[0] <= spacing.min() <= spacing.max() <= SPACING_LIMITS_MM[1]
        assert spacing.max() / spacing.min() <= 3.0 + 1e-9


@pytest.mark.parametrize("fill", [0.45, 0.8])
def test_head_fills_the_asked_fraction(fill: float) -> None:
    phantom = case(size=64, ga=14.0, head_fill=fill, anisotropy=1.6)
    assert phantom.truth["head_fill_fraction"] == pytest.approx(fill, abs=2e-4)
    config = PhantomConfig(size=(128, 128, 128), appearance="randomised", factors={"head_fill": [0.2, 1.0]})
    for seed in range(20):
        factors = draw_factors(seed, config.factors)
        spacing = randomised_spacing(config, factors, ofd_mm=60.0)
        smallest_extent = float(np.min(spacing * 127))
        assert 0.2 - 1e-9 <= 60.0 / smallest_extent <= 1.0 + 1e-9 or spacing.max() == SPACING_LIMITS_MM[1]


def test_contacts_and_limbs_touch_the_head() -> None:
    def touching(phantom: Phantom, tissue: Tissue) -> int:
        shell = ndimage.binary_dilation(phantom.head_mask.array != 0, iterations=1)
        return int((shell & (phantom.tissues.array == tissue)).sum())

    free = case(contact="none", limbs_touching=0)
    assert touching(free, Tissue.UTERUS) == 0 < touching(case(contact="wall"), Tissue.UTERUS)
    assert touching(case(contact="placenta"), Tissue.PLACENTA) > 20
    assert len(case(limbs_touching=4).truth["scene"]["limbs"]) == len(free.truth["scene"]["limbs"]) + 4
    assert touching(case(limbs_touching=4), Tissue.FETAL_BODY) > touching(free, Tissue.FETAL_BODY)


def test_any_orientation_turns_the_head() -> None:
    standard = np.asarray(case(orientation="standard").truth["scene"]["head"]["axes_columns"])
    turned = np.asarray(case(orientation="any").truth["scene"]["head"]["axes_columns"])
    assert not np.allclose(np.abs(standard), np.abs(turned), atol=0.05)


# --- exact truth ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factors",
    [{}, {"orientation": "any", "anisotropy": 2.0, "anisotropy_axis": "elevation", "shadow_fraction": 0.5}],
    ids=["nominal", "turned-anisotropic-shadowed"],
)
def test_mask_biometry_matches_the_analytic_head(factors: dict[str, Any]) -> None:
    phantom = case(size=64, ga=16.0, head_fill=0.55, **factors)
    truth = phantom.truth
    assert not truth["head_cut_by_field_of_view"]
    measured = measure_biometry(phantom.head_mask, left_right_axis_ras=truth["head_left_right_axis_ras"])
    for key in ("hc_mm", "bpd_mm", "ofd_mm"):
        assert getattr(measured, key) == pytest.approx(truth[key], rel=0.03), key
    assert measured.head_volume_ml == pytest.approx(truth["head_volume_ml"], rel=0.03)
    np.testing.assert_array_equal(phantom.labels.array > 0, phantom.head_mask.array > 0)


# --- classic mode and configuration ----------------------------------------------------------------------------


def test_classic_config_record_is_unchanged_and_randomised_round_trips() -> None:
    classic = PhantomConfig(size=(64, 64, 64)).to_dict()
    assert "appearance" not in classic and "factors" not in classic
    randomised = PhantomConfig(size=(64, 64, 64), appearance="randomised", factors={"gamma": [0.8, 1.2]})
    assert randomised.to_dict()["appearance"] == "randomised"
    assert PhantomConfig.from_dict(json.loads(json.dumps(randomised.to_dict()))) == randomised
    for bad in (
        dict(appearance="random"),
        dict(appearance="randomised", factors={"shadow_frac": 0.2}),
        dict(appearance="randomised", factors={"gamma": -1.0}),
        dict(appearance="randomised", factors={"fov_shape": "round"}),
        dict(appearance="randomised", factors={"spacing_mm": 3.0}),
        dict(factors={"gamma": 1.0}),
        dict(dimension=2, size=(64, 64), appearance="randomised"),
    ):
        with pytest.raises(ValueError):
            PhantomConfig(**bad)
    with pytest.raises(ValueError, match="did you mean 'shadow_fraction'"):
        PhantomConfig(appearance="randomised", factors={"shadow_frac": 0.2})


# --- the phantom command's warning ------------------------------------------------------------------------------


RANDOMISED = ["--size", "48", "48", "48", "--ga-weeks", "15", "--appearance", "randomised", "--factors"]
FITTING = '{"fov_shape": "box", "crop_fraction": 1.0, "head_offset": 0.0, "anisotropy": 1.0, "orientation": "standard"'


@pytest.mark.parametrize(
    "options, cut",
    [
        (["--size", "64", "64", "48", "--spacing", "0.6", "0.6", "1.0", "--ga-weeks", "24"], True),
        (["--size", "64", "64", "64", "--spacing", "1.5", "--ga-weeks", "14"], False),
        ([*RANDOMISED, FITTING + ', "head_fill": 1.3}'], True),
        ([*RANDOMISED, FITTING + ', "head_fill": 0.45}'], False),
    ],
    ids=["readme-example-shrunk", "fits", "randomised-too-big", "randomised-fits"],
)
def test_phantom_command_warns_exactly_when_the_head_is_cut(
    options: list[str], cut: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["phantom", str(tmp_path), "--seed", "3", *options]) == 0
    truth = json.loads(next(tmp_path.glob("*_truth.json")).read_text())
    warnings = [line for line in capsys.readouterr().err.splitlines() if "does not fit the field of view" in line]
    assert truth["head_cut_by_field_of_view"] is cut
    assert len(warnings) == (1 if cut else 0)
    assert 0.0 <= truth["head_imaged_fraction"] <= 1.0 and (cut or truth["head_imaged_fraction"] > 0.95)
    assert (truth["head_fill_fraction"] > 1.0) is cut


def test_stress_rows_vary_only_the_family_they_name() -> None:
    """Each one-factor row of the stress suite sets factors of its own family only, within their ranges; the
    nominal row sets none and the last row draws every factor."""
    from FetalHeadSegLib.phantom.stress import STRESS_ROWS, stress_config

    assert STRESS_ROWS[0].overrides == {} and STRESS_ROWS[-1].overrides is None
    assert stress_config(STRESS_ROWS[-1]).factors == {}
    for row in STRESS_ROWS[1:-1]:
        assert row.overrides and set(row.overrides) <= set(FAMILIES[row.family]), row.name
        for name, value in row.overrides.items():
            factor = FACTORS_BY_NAME[name]
            assert value in factor.choices if factor.kind == "choice" else factor.low <= value <= factor.high, name
        config = stress_config(row)
        assert config.factors == {**nominal_factors(), **row.overrides}
