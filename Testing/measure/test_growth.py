"""Gestational-age and size-standard formulas against biometry.md §2 and the unit-test vectors of §7."""

from __future__ import annotations

import pytest

from FetalHeadSegLib.measure import growth


def test_intergrowth_dating_from_hc_vector_1() -> None:
    assert growth.intergrowth_2016_ga_days_from_hc(250.0) == pytest.approx(189.803, abs=1e-3)


def test_intergrowth_dating_from_hc_and_fl_vector_2() -> None:
    assert growth.intergrowth_2016_ga_days_from_hc_fl(250.0, 55.0) == pytest.approx(200.523, abs=1e-3)


@pytest.mark.parametrize(("hc_mm", "days"), [(120.0, 110.521), (180.0, 144.473), (320.0, 250.195)])
def test_intergrowth_dating_worked_values(hc_mm: float, days: float) -> None:
    assert growth.intergrowth_2016_ga_days_from_hc(hc_mm) == pytest.approx(days, abs=1e-3)


def test_hadlock_from_hc_vector_3() -> None:
    assert growth.hadlock_1984_ga_weeks_from_hc(250.0) == pytest.approx(27.1475, abs=1e-3)


@pytest.mark.parametrize(("hc_mm", "weeks"), [(120.0, 15.9584), (180.0, 20.4296), (320.0, 36.0704)])
def test_hadlock_from_hc_worked_values(hc_mm: float, weeks: float) -> None:
    assert growth.hadlock_1984_ga_weeks_from_hc(hc_mm) == pytest.approx(weeks, abs=1e-3)


def test_hadlock_from_bpd_vector_4() -> None:
    assert growth.hadlock_1984_ga_weeks_from_bpd_oi(60.0) == pytest.approx(24.4656, abs=1e-3)
    # The IG-21 outer-outer median at 27+0 dated with Hadlock's outer-inner formula: the 1.4-week convention gap.
    assert growth.hadlock_1984_ga_weeks_from_bpd_oi(70.6) == pytest.approx(28.3567, abs=1e-3)


@pytest.mark.parametrize(
    ("measure", "weeks", "median", "sd", "row"),
    [
        ("hc", 20.0, 172.480, 7.4399, [150.2, 157.6, 165.0, 172.5, 179.9, 187.4, 194.8]),  # vector 5
        ("bpd", 27.0, 70.597, 2.8788, [62.0, 64.8, 67.7, 70.6, 73.5, 76.3, 79.2]),  # vector 6
        ("ofd", 40.0, 115.768, 6.1954, [97.2, 103.4, 109.6, 115.8, 122.0, 128.2, 134.4]),  # vector 7
    ],
)
def test_intergrowth_standards_against_official_rows(
    measure: str, weeks: float, median: float, sd: float, row: list[float]
) -> None:
    mu, sigma = growth.intergrowth_2014_median_sd(measure, weeks)
    assert mu == pytest.approx(median, abs=1e-3)
    assert sigma == pytest.approx(sd, abs=1e-3)
    for z, published in zip(range(-3, 4), row, strict=True):
        assert mu + z * sigma == pytest.approx(published, abs=0.1)


@pytest.mark.parametrize(
    ("weeks", "hc", "bpd", "ofd"),
    [
        (14.0, (97.877, 5.5817), (29.614, 1.7433), (33.761, 1.9355)),
        (20.0, (172.480, 7.4399), (48.446, 2.2984), (60.690, 2.7773)),
        (27.0, (250.648, 8.7841), (70.597, 2.8788), (88.419, 3.5513)),
        (40.0, (333.948, 12.9239), (94.917, 3.9194), (115.768, 6.1954)),
    ],
)
def test_intergrowth_worked_table(weeks: float, hc: tuple, bpd: tuple, ofd: tuple) -> None:
    for measure, expected in (("hc", hc), ("bpd", bpd), ("ofd", ofd)):
        assert growth.intergrowth_2014_median_sd(measure, weeks) == pytest.approx(expected, abs=1e-3)


def test_hc_at_14_weeks_vector_8() -> None:
    mu, sigma = growth.intergrowth_2014_median_sd("hc", 14.0)
    assert mu == pytest.approx(97.877, abs=1e-3)
    assert mu - 3 * sigma == pytest.approx(81.1, abs=0.1)
    assert mu + 3 * sigma == pytest.approx(114.6, abs=0.1)


def test_z_score_vector_9_and_centile() -> None:
    size = growth.intergrowth_2014_size_for_age("hc", 250.0, 27.0)
    assert size.z_score == pytest.approx(-0.0738, abs=1e-3)
    assert size.centile == pytest.approx(47.06, abs=0.01)
    later = growth.intergrowth_2014_size_for_age("hc", 180.0, 20 + 3 / 7)
    assert later.median_mm == pytest.approx(177.659, abs=1e-3)
    assert later.sd_mm == pytest.approx(7.546, abs=1e-3)
    assert later.z_score == pytest.approx(0.310, abs=1e-3)


@pytest.mark.parametrize(("weeks", "table_cm"), [(20.0, 17.68), (27.0, 25.62), (40.0, 34.61)])
def test_hadlock_size_curve_vector_12(weeks: float, table_cm: float) -> None:
    assert growth.hadlock_1984_hc_mm_at(weeks) / 10 == pytest.approx(table_cm, abs=1e-2)


def test_outside_the_standards_gives_none_and_a_reason() -> None:
    size = growth.intergrowth_2014_size_for_age("bpd", 90.0, 41.5)
    assert size.z_score is None and size.centile is None
    assert "14-40" in (size.reason or "")
    with pytest.raises(ValueError, match="outside"):
        growth.intergrowth_2014_median_sd("hc", 13.0)


def test_estimates_are_null_outside_their_valid_range() -> None:
    late = growth.estimate_gestational_age(320.0, bpd_oo_mm=88.0)
    # IG-21 HC dating is recommended up to 25+6 weeks only; HC 320 mm dates to about 35.7 weeks.
    assert late["intergrowth21_2016_hc"].weeks is None
    assert "outside" in (late["intergrowth21_2016_hc"].reason or "")
    assert late["hadlock1984_hc"].weeks == pytest.approx(36.0704, abs=1e-3)
    early = growth.estimate_gestational_age(60.0)
    assert early["hadlock1984_hc"].weeks is None and early["intergrowth21_2016_hc"].weeks is None


def test_bpd_dating_says_when_it_converts_the_convention() -> None:
    converted = growth.estimate_gestational_age(None, bpd_oo_mm=62.0)["hadlock1984_bpd"]
    assert "approximate" in (converted.reason or "")
    expected = growth.hadlock_1984_ga_weeks_from_bpd_oi(-0.403458 + 0.9714153 * 62.0)
    assert converted.weeks == pytest.approx(expected)
    measured = growth.estimate_gestational_age(None, bpd_oo_mm=62.0, bpd_oi_mm=60.0)["hadlock1984_bpd"]
    assert measured.reason is None
    assert measured.weeks == pytest.approx(24.4656, abs=1e-3)
    assert measured.days == pytest.approx(24.4656 * 7, abs=1e-2)
