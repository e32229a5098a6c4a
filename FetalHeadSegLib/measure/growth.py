"""Gestational age from head size, and size-for-age z-scores (``biometry.md`` §2).

Units follow the sources and are part of every name: Hadlock (1984) in cm and weeks (wrapped here to take mm),
INTERGROWTH-21st dating (2016) in mm and days, INTERGROWTH-21st size standards (2014) in exact weeks and mm.
Outside a formula's valid range the value is ``None`` with a reason: nothing is extrapolated silently.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

HADLOCK_RANGE_WEEKS = (14.0, 42.0)
"""GA range of the Hadlock 1984 population (361 fetuses, 14-42 weeks)."""

INTERGROWTH_DATING_WINDOW_DAYS = (98.0, 181.0)
"""Recommended INTERGROWTH-21st HC dating window: scans at 14+0 to 25+6 weeks."""

INTERGROWTH_STANDARD_RANGE_WEEKS = (14.0, 40.0)
"""GA range of the INTERGROWTH-21st fetal growth standards (14+0 to 40+0 weeks)."""

WONG_BPD_OI_FROM_OO = (-0.403458, 0.9714153)
"""Population conversion BPD_oi = c0 + c1 * BPD_oo in mm (Wong et al., Australas J Ultrasound Med 2018)."""


class HeadMeasure(StrEnum):
    """Head measures with INTERGROWTH-21st size standards."""

    HC = "hc"
    BPD = "bpd"
    OFD = "ofd"


@dataclass(frozen=True)
class GaEstimate:
    """One gestational-age estimate.

    Attributes:
        formula: identifier, e.g. ``"intergrowth21_2016_hc"``.
        weeks: GA in weeks, or None outside the formula's valid range.
        days: the same in days, or None.
        reason: why the value is None, or a caveat (e.g. an approximate input convention); None otherwise.
        valid_range_weeks: the GA range within which the formula is reported.
        reference: the publication.
    """

    formula: str
    weeks: float | None
    days: float | None
    reason: str | None
    valid_range_weeks: tuple[float, float]
    reference: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hadlock_1984_ga_weeks_from_hc(hc_mm: float) -> float:
    """Hadlock 1984: ``GA = 8.96 + 0.540 HC + 0.0003 HC^3`` (HC in cm, GA in weeks); input here in mm."""
    hc_cm = hc_mm / 10.0
    return 8.96 + 0.540 * hc_cm + 0.0003 * hc_cm**3


def hadlock_1984_ga_weeks_from_bpd_oi(bpd_oi_mm: float) -> float:
    """Hadlock 1984: ``GA = 9.54 + 1.482 BPD + 0.1676 BPD^2`` (BPD outer-inner in cm); input here in mm."""
    bpd_cm = bpd_oi_mm / 10.0
    return 9.54 + 1.482 * bpd_cm + 0.1676 * bpd_cm**2


def hadlock_1984_hc_mm_at(ga_weeks: float) -> float:
    """Hadlock 1984 HC size curve (not for dating): ``HC = -11.48 + 1.56 MA - 0.0002548 MA^3`` cm, in mm."""
    return 10.0 * (-11.48 + 1.56 * ga_weeks - 0.0002548 * ga_weeks**3)


def intergrowth_2016_ga_days_from_hc(hc_mm: float) -> float:
    """INTERGROWTH-21st 2016: ``GA = exp(0.05970 (ln HC)^2 + 6.409e-9 HC^3 + 3.3258)`` days, HC in mm."""
    return math.exp(0.05970 * math.log(hc_mm) ** 2 + 0.000000006409 * hc_mm**3 + 3.3258)


def intergrowth_2016_ga_days_from_hc_fl(hc_mm: float, fl_mm: float) -> float:
    """INTERGROWTH-21st 2016 with femur length: ``GA = exp(0.03243 (ln HC)^2 + 0.001644 FL ln HC + 3.813)``."""
    log_hc = math.log(hc_mm)
    return math.exp(0.03243 * log_hc**2 + 0.001644 * fl_mm * log_hc + 3.813)


def bpd_oi_from_oo_mm(bpd_oo_mm: float) -> float:
    """Approximate outer-inner BPD from outer-outer BPD (Wong et al. 2018 population conversion), mm."""
    c0, c1 = WONG_BPD_OI_FROM_OO
    return c0 + c1 * bpd_oo_mm


def intergrowth_2014_median_sd(measure: HeadMeasure | str, ga_weeks: float) -> tuple[float, float]:
    """INTERGROWTH-21st 2014 fetal growth standard: median and SD (mm) of HC, BPD (OO) or OFD at ``ga_weeks``.

    Raises:
        ValueError: GA outside 14-40 weeks, or an unknown measure.

    Example:
        >>> [round(v, 3) for v in intergrowth_2014_median_sd("hc", 20.0)]
        [172.48, 7.44]
    """
    kind = HeadMeasure(measure)
    low, high = INTERGROWTH_STANDARD_RANGE_WEEKS
    if not low <= ga_weeks <= high:
        raise ValueError(f"GA {ga_weeks:.2f} weeks is outside the INTERGROWTH-21st standards (14-40 weeks)")
    t = ga_weeks
    ln_t = math.log(t)
    if kind is HeadMeasure.HC:
        median = -28.2849 + 1.69267 * t**2 - 0.397485 * t**2 * ln_t
        sd = 1.98735 + 0.0136772 * t**3 - 0.00726264 * t**3 * ln_t + 0.000976253 * t**3 * ln_t**2
    elif kind is HeadMeasure.BPD:
        median = 5.60878 + 0.158369 * t**2 - 0.00256379 * t**3
        sd = math.exp(0.101242 + 0.00150557 * t**3 - 0.000771535 * t**3 * ln_t + 0.0000999638 * t**3 * ln_t**2)
    else:
        median = -12.4097 + 0.626342 * t**2 - 0.148075 * t**2 * ln_t
        sd = math.exp(-0.880034 + 0.0631165 * t**2 - 0.0317136 * t**2 * ln_t + 0.00408302 * t**2 * ln_t**2)
    return median, sd


@dataclass(frozen=True)
class SizeForAge:
    """A measurement against the INTERGROWTH-21st standard at a given GA."""

    measure: str
    value_mm: float
    ga_weeks: float
    median_mm: float | None
    sd_mm: float | None
    z_score: float | None
    centile: float | None
    reason: str | None
    reference: str = "Papageorghiou et al., Lancet 2014;384:869-879 (INTERGROWTH-21st fetal growth standards)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def intergrowth_2014_size_for_age(measure: HeadMeasure | str, value_mm: float, ga_weeks: float) -> SizeForAge:
    """z-score and centile of an HC, BPD (outer-outer) or OFD value at ``ga_weeks`` (None outside 14-40 wk)."""
    kind = HeadMeasure(measure)
    try:
        median, sd = intergrowth_2014_median_sd(kind, ga_weeks)
    except ValueError as err:
        return SizeForAge(kind.value, value_mm, ga_weeks, None, None, None, None, str(err))
    z = (value_mm - median) / sd
    centile = 50.0 * (1.0 + math.erf(z / math.sqrt(2.0)))
    return SizeForAge(kind.value, value_mm, ga_weeks, median, sd, z, centile, None)


def _estimate(
    formula: str, weeks: float, valid_weeks: tuple[float, float], reference: str, caveat: str | None = None
) -> GaEstimate:
    low, high = valid_weeks
    if not low <= weeks <= high:
        reason = f"the estimate ({weeks:.1f} weeks) is outside the formula's valid range {low:g}-{high:g} weeks"
        return GaEstimate(formula, None, None, reason, valid_weeks, reference)
    return GaEstimate(formula, weeks, weeks * 7.0, caveat, valid_weeks, reference)


def estimate_gestational_age(
    hc_mm: float | None, bpd_oo_mm: float | None = None, bpd_oi_mm: float | None = None
) -> dict[str, GaEstimate]:
    """Every applicable GA estimate from head measurements.

    Args:
        hc_mm: head circumference (outer skull ellipse), mm.
        bpd_oo_mm: biparietal diameter, outer-outer, mm.
        bpd_oi_mm: biparietal diameter, outer-inner, mm, when the inner skull edge was measured. Hadlock's BPD
            formula needs OI; without it the OO value is converted (Wong et al. 2018) and the result says so.

    Returns:
        Estimates keyed by formula id: ``intergrowth21_2016_hc``, ``hadlock1984_hc``, ``hadlock1984_bpd``.
    """
    estimates: dict[str, GaEstimate] = {}
    if hc_mm is not None and hc_mm > 0:
        days = intergrowth_2016_ga_days_from_hc(hc_mm)
        low_d, high_d = INTERGROWTH_DATING_WINDOW_DAYS
        estimates["intergrowth21_2016_hc"] = _estimate(
            "intergrowth21_2016_hc",
            days / 7.0,
            (low_d / 7.0, high_d / 7.0),
            "Papageorghiou et al., Ultrasound Obstet Gynecol 2016;48:719-726",
        )
        estimates["hadlock1984_hc"] = _estimate(
            "hadlock1984_hc",
            hadlock_1984_ga_weeks_from_hc(hc_mm),
            HADLOCK_RANGE_WEEKS,
            "Hadlock et al., Radiology 1984;152:497-501",
        )
    if bpd_oi_mm is not None or bpd_oo_mm is not None:
        caveat = None
        if bpd_oi_mm is None:
            assert bpd_oo_mm is not None
            bpd_oi_mm = bpd_oi_from_oo_mm(bpd_oo_mm)
            caveat = "approximate: BPD outer-inner converted from outer-outer (Wong et al. 2018)"
        estimates["hadlock1984_bpd"] = _estimate(
            "hadlock1984_bpd",
            hadlock_1984_ga_weeks_from_bpd_oi(bpd_oi_mm),
            HADLOCK_RANGE_WEEKS,
            "Hadlock et al., Radiology 1984;152:497-501",
            caveat,
        )
    return estimates
