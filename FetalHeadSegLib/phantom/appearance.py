"""Domain randomisation of the phantom: the factors the label does not fix, their nominal values and ranges.

SynthSeg's lesson: a network trained on one appearance learns the simulator, not the anatomy. With
``PhantomConfig(appearance="randomised")`` every factor below is drawn independently per case from the seed;
``PhantomConfig.factors`` fixes any of them (``{"shadow_fraction": 0.6}``) or narrows its range
(``{"gamma": [0.8, 1.2]}``, a list of choices for categorical factors).

Each factor is drawn from its own random stream, ``default_rng([seed, FACTOR_STREAM, crc32(name)])``, by
inverting one uniform number, so fixing one factor never changes the value drawn for another. Factors that need
more randomness (where a shadow falls, which beams drop out, where a crop box sits) draw it from a second stream of
their own (:func:`factor_rng`). The ``nominal`` values reproduce the classic look; :func:`nominal_factors` fixes a
whole family at them (a leave-one-family-out training run, or the baseline of the one-factor stress cases).

Independent draws seldom reach a family's corners: four gain settings each in the darkest tenth of their range
come together about once in ten thousand cases, yet a scanner set dark is set dark on every knob.
:func:`joint_family_factors` moves a family's numeric factors together along one axis instead (its ``axis_sign``
says which way each one goes), for a share of training cases.
"""

from __future__ import annotations

import difflib
import math
import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

FACTOR_STREAM = 0x0A77E
SPACING_LIMITS_MM = (0.2, 1.5)
"""Voxel sizes of randomised volumes are kept within these limits (mm)."""


class Appearance(StrEnum):
    """How the phantom looks: the one classic appearance, or every factor drawn per case."""

    CLASSIC = "classic"
    RANDOMISED = "randomised"


@dataclass(frozen=True)
class Factor:
    """One randomised factor: its family, nominal value and distribution.

    ``kind`` is ``uniform`` or ``loguniform`` over ``low``-``high``, or ``choice`` among ``choices``.
    ``axis_sign`` is the factor's direction along its family's shared axis in a joint draw
    (:func:`joint_family_factors`): +1 where a higher value goes with the family's other higher values, -1 where
    it goes against them (a higher display gamma darkens the image that a higher gain brightens).
    """

    name: str
    family: str
    nominal: Any
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()
    description: str = ""
    axis_sign: int = 1

    def value(self, u: float, override: Any = None) -> Any:
        """The factor's value for a uniform number ``u`` in [0, 1), within ``override`` when it is a range."""
        if self.kind == "choice":
            choices = tuple(override) if isinstance(override, list | tuple) else self.choices
            return choices[min(int(u * len(choices)), len(choices) - 1)]
        low, high = (
            (float(override[0]), float(override[1])) if isinstance(override, list | tuple) else (self.low, self.high)
        )
        if self.kind == "loguniform":
            return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
        return float(low + u * (high - low))


_NOMINAL_BRAIN_DB = 20.0 * math.log10(0.13 / 0.004)

FACTORS: tuple[Factor, ...] = (
    # echogenicity of every tissue class
    Factor("fluid_echo", "echogenicity", 0.004, "loguniform", 0.002, 0.12, description="amniotic fluid and CSF"),
    Factor(
        "brain_vs_fluid_db",
        "echogenicity",
        round(_NOMINAL_BRAIN_DB, 3),
        "uniform",
        -14.0,
        32.0,
        description="brain echo relative to fluid (dB); negative: brain darker than fluid",
    ),
    Factor("skull_db", "echogenicity", 0.0, "uniform", -20.0, 3.0, description="skull/bone echo, faint to bright"),
    Factor("placenta_db", "echogenicity", 0.0, "uniform", -10.0, 10.0),
    Factor("uterus_db", "echogenicity", 0.0, "uniform", -10.0, 10.0, description="uterine wall"),
    Factor("body_db", "echogenicity", 0.0, "uniform", -10.0, 10.0, description="fetal body and limbs"),
    Factor("maternal_db", "echogenicity", 0.0, "uniform", -10.0, 10.0, description="maternal fat, muscle, tissue"),
    # speckle and point-spread function
    Factor("speckle_size", "speckle", 1.0, "loguniform", 0.8, 2.5, description="PSF (speckle grain) scale"),
    Factor("texture_sigma", "speckle", 0.3, "uniform", 0.0, 0.9, description="tissue texture (log units)"),
    Factor("display_smoothing", "blur", 0.8, "uniform", 0.0, 2.5, description="speckle reduction (beam samples)"),
    Factor("blur_mm", "blur", 0.0, "uniform", 0.0, 1.5, description="extra Gaussian blur of the volume (mm)"),
    # scanner settings
    Factor("gain_db", "gain", 0.0, "uniform", -8.0, 10.0),
    Factor("tgc_error_db_per_cm", "gain", 0.0, "uniform", -1.2, 1.2),
    Factor("dynamic_range_db", "gain", 53.0, "uniform", 40.0, 72.0),
    Factor("gamma", "gain", 1.0, "loguniform", 0.6, 1.7, description="display gamma", axis_sign=-1),
    Factor("noise_db", "noise", -66.0, "uniform", -75.0, -25.0, description="electronic noise"),
    Factor("reverberation_db", "noise", -21.0, "uniform", -32.0, -6.0),
    # artefacts
    Factor("shadow_fraction", "shadows", 0.0, "uniform", 0.0, 0.6, description="share of the skull casting shadows"),
    Factor("dropout_fraction", "dropout", 0.0, "uniform", 0.0, 0.35, description="share of beams with poor contact"),
    Factor("dropout_db", "dropout", 20.0, "uniform", 6.0, 30.0, description="signal lost on those beams"),
    # field of view
    Factor("fov_shape", "field_of_view", "cone", "choice", choices=("cone", "fan", "box")),
    Factor("fov_angle_scale", "field_of_view", 1.0, "uniform", 0.65, 1.3, description="cone/fan opening"),
    Factor("crop_fraction", "field_of_view", 1.0, "uniform", 0.55, 1.0, description="share of each axis kept"),
    # geometry
    Factor("head_fill", "head_fill", 0.55, "uniform", 0.2, 1.0, description="OFD / lateral width of the volume"),
    Factor("head_offset", "head_fill", 0.0, "uniform", -0.3, 0.3, description="lateral offset / width"),
    Factor("contact", "contact", "none", "choice", choices=("none", "none", "wall", "placenta")),
    Factor("limbs_touching", "limbs", 0, "choice", choices=(0, 0, 1, 2, 3, 4), description="limbs against the head"),
    Factor("orientation", "orientation", "standard", "choice", choices=("standard", "any")),
    Factor("anisotropy", "spacing", 1.2, "loguniform", 1.0, 3.0, description="coarse / fine voxel size"),
    Factor("anisotropy_axis", "spacing", "elevation", "choice", choices=("elevation", "depth", "lateral")),
    Factor("spacing_mm", "spacing", None, "choice", choices=(None,), description="fixed finest voxel size (mm)"),
)
FACTORS_BY_NAME = {factor.name: factor for factor in FACTORS}
FAMILIES: dict[str, tuple[str, ...]] = {}
for _factor in FACTORS:
    FAMILIES[_factor.family] = (*FAMILIES.get(_factor.family, ()), _factor.name)


def check_factors(overrides: dict[str, Any]) -> None:
    """Raise ValueError for unknown factor names (with a "did you mean" hint) or impossible values."""
    for name, value in overrides.items():
        factor = FACTORS_BY_NAME.get(name)
        if factor is None:
            close = difflib.get_close_matches(name, FACTORS_BY_NAME, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known factors: {', '.join(FACTORS_BY_NAME)}"
            raise ValueError(f"unknown phantom factor {name!r}{hint}")
        if name == "spacing_mm":
            low, high = SPACING_LIMITS_MM
            if value is not None and not (isinstance(value, int | float) and low <= value <= high):
                raise ValueError(f"factor spacing_mm must be null or within {low}-{high} mm, got {value!r}")
        elif factor.kind == "choice":
            values = value if isinstance(value, list | tuple) else [value]
            if not values or any(v not in factor.choices for v in values):
                raise ValueError(f"factor {name} must be one of {sorted(set(factor.choices))}, got {value!r}")
        else:
            values = value if isinstance(value, list | tuple) else [value, value]
            if len(values) != 2 or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                raise ValueError(f"factor {name} must be a number or a [low, high] range, got {value!r}")
            if factor.kind == "loguniform" and min(values) <= 0:
                raise ValueError(f"factor {name} must be positive, got {value!r}")


def factor_rng(seed: int, name: str, stream: int = 0) -> np.random.Generator:
    """The random stream of one factor of one case (``stream`` 0 draws its value, 1 anything else it needs)."""
    return np.random.default_rng([seed, FACTOR_STREAM, zlib.crc32(name.encode()), stream])


def draw_factors(seed: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every factor's value for the case with ``seed``: drawn, or fixed/narrowed by ``overrides``.

    Example:
        >>> draw_factors(7, {"shadow_fraction": 0.5})["shadow_fraction"]
        0.5
    """
    overrides = overrides or {}
    values = {}
    for factor in FACTORS:
        u = float(factor_rng(seed, factor.name).random())
        override = overrides.get(factor.name)
        values[factor.name] = override if _is_fixed(overrides, factor.name) else factor.value(u, override)
    return values


def _is_fixed(overrides: dict[str, Any], name: str) -> bool:
    """Whether ``overrides`` fixes the factor at one value (a list or tuple narrows its draw instead)."""
    return name in overrides and not isinstance(overrides[name], list | tuple)


def joint_family_factors(family: str, u: float, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Overrides fixing every numeric factor of ``family`` at one point of the family's shared axis.

    ``u`` in [0, 1] places the point: each factor takes the value its own draw would give for ``u`` (for
    ``1 - u`` where its ``axis_sign`` is -1), within any range ``overrides`` narrows it to; factors that
    ``overrides`` fixes, and categorical ones, are left to the usual draw.

    Example:
        >>> darkest = joint_family_factors("gain", 0.0)  # every gain knob at its darkest at once
        >>> {name: round(value, 3) for name, value in darkest.items()}
        {'gain_db': -8.0, 'tgc_error_db_per_cm': -1.2, 'dynamic_range_db': 40.0, 'gamma': 1.7}

    Raises:
        ValueError: an unknown family, or ``u`` outside [0, 1].
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown factor family {family!r}; known families: {', '.join(FAMILIES)}")
    if not 0.0 <= u <= 1.0:
        raise ValueError(f"u must lie in [0, 1], got {u}")
    overrides = overrides or {}
    joint = {}
    for name in FAMILIES[family]:
        factor = FACTORS_BY_NAME[name]
        if factor.kind != "choice" and not _is_fixed(overrides, name):
            joint[name] = factor.value(u if factor.axis_sign > 0 else 1.0 - u, overrides.get(name))
    return joint


def nominal_factors(*families: str) -> dict[str, Any]:
    """Overrides fixing every factor of the named families (all families when none is named) at nominal.

    Raises:
        ValueError: an unknown family.
    """
    for family in families:
        if family not in FAMILIES:
            raise ValueError(f"unknown factor family {family!r}; known families: {', '.join(FAMILIES)}")
    names = [n for family in (families or tuple(FAMILIES)) for n in FAMILIES[family]]
    return {name: FACTORS_BY_NAME[name].nominal for name in names}


def finish_image(
    image: np.ndarray, field_of_view: np.ndarray, spacing_mm: np.ndarray, factors: dict[str, Any], seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Display gamma, extra blur and the box crop applied to a scan-converted uint8 volume.

    Returns the image, the field-of-view mask after the crop, and the crop box (index ranges) for the record.
    """
    from scipy.ndimage import gaussian_filter

    values = image.astype(np.float32)
    if factors["blur_mm"] > 0:
        values = gaussian_filter(values, [factors["blur_mm"] / float(s) for s in spacing_mm])
    if factors["gamma"] != 1.0:
        values = 255.0 * (np.clip(values, 0.0, 255.0) / 255.0) ** float(factors["gamma"])
    fraction = float(factors["crop_fraction"])
    rng = factor_rng(seed, "crop_fraction", 1)
    box = []
    for n in image.shape:
        keep = max(1, int(round(fraction * n)))
        start = int(rng.integers(0, n - keep + 1))
        box.append([start, start + keep])
    cropped = np.zeros_like(field_of_view)
    cropped[tuple(slice(a, b) for a, b in box)] = True
    field_of_view = field_of_view & cropped
    result = np.where(field_of_view, np.rint(np.clip(values, 0.0, 255.0)), 0).astype(np.uint8)
    return result, field_of_view, {"crop_box_ijk": box}
