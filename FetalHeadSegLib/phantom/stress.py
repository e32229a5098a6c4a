"""The 3D stress rows: every randomisation factor at its nominal (classic-looking) value except the ones a row
names, which are set to an extreme; the last row draws every factor at once.

``benchmarks/stress_3d.py`` scores a model on them with seeds from 9,000,000. ``python -m training.evaluate
--phantoms N --appearance stress`` draws them with the seeds it is given, so that the review flag can be calibrated
on failures that look like the suite's (an under-segmented head behind a faint skull or a shadow) without
touching the suite's own cases.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from FetalHeadSegLib.phantom.generator import PhantomConfig


class StressRow(NamedTuple):
    """A row of the stress suite: its name, the factor family it varies (None for the nominal baseline, "all" for
    everything drawn) and its overrides of the nominal factors (None: every factor drawn)."""

    name: str
    family: str | None
    overrides: dict[str, Any] | None


STRESS_ROWS: tuple[StressRow, ...] = (
    StressRow("nominal", None, {}),
    StressRow("brain-darker-than-fluid", "echogenicity", {"brain_vs_fluid_db": -14.0, "fluid_echo": 0.05}),
    StressRow("echogenic-fluid", "echogenicity", {"fluid_echo": 0.12, "brain_vs_fluid_db": 6.0}),
    StressRow("faint-skull", "echogenicity", {"skull_db": -20.0}),
    StressRow("bright-surroundings", "echogenicity", {"placenta_db": 10.0, "uterus_db": 10.0, "body_db": 10.0}),
    StressRow("coarse-speckle", "speckle", {"speckle_size": 2.5, "texture_sigma": 0.9}),
    StressRow("blur", "blur", {"display_smoothing": 2.5, "blur_mm": 1.5}),
    StressRow(
        "low-gain", "gain", {"gain_db": -8.0, "tgc_error_db_per_cm": -1.2, "dynamic_range_db": 40.0, "gamma": 1.7}
    ),
    StressRow(
        "high-gain", "gain", {"gain_db": 10.0, "tgc_error_db_per_cm": 1.2, "dynamic_range_db": 72.0, "gamma": 0.6}
    ),
    StressRow("noise", "noise", {"noise_db": -25.0, "reverberation_db": -6.0}),
    StressRow("shadows-60%", "shadows", {"shadow_fraction": 0.6}),
    StressRow("dropout", "dropout", {"dropout_fraction": 0.35, "dropout_db": 30.0}),
    StressRow("narrow-fan", "field_of_view", {"fov_shape": "fan", "fov_angle_scale": 0.65}),
    StressRow("box-crop", "field_of_view", {"fov_shape": "box", "crop_fraction": 0.55}),
    StressRow("small-head", "head_fill", {"head_fill": 0.2}),
    StressRow("large-offset-head", "head_fill", {"head_fill": 1.0, "head_offset": 0.3}),
    StressRow("on-uterine-wall", "contact", {"contact": "wall"}),
    StressRow("on-placenta", "contact", {"contact": "placenta"}),
    StressRow("limbs-on-head", "limbs", {"limbs_touching": 4}),
    StressRow("any-orientation", "orientation", {"orientation": "any"}),
    StressRow("anisotropic-3x", "spacing", {"anisotropy": 3.0, "anisotropy_axis": "depth"}),
    StressRow("all-at-once", "all", None),
)


def stress_config(row: StressRow, size: tuple[int, int, int] = (96, 96, 96)) -> PhantomConfig:
    """The phantom config of a row: the nominal factors plus the row's overrides, or every factor drawn."""
    from FetalHeadSegLib.phantom.appearance import nominal_factors

    factors = {} if row.overrides is None else {**nominal_factors(), **row.overrides}
    return PhantomConfig(size=size, appearance="randomised", factors=factors)
