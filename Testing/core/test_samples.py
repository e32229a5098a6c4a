"""Bundled samples: present, documented, and the phantoms regenerate from their recorded seeds.

Two separate promises: in one environment a seed gives the same bytes every time; across CPUs and numpy builds
the vectorised maths may round differently, so the bundled files must match a regeneration to within one grey
level in a handful of voxels (and the truth exactly), not byte for byte.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from FetalHeadSegLib.core.io import read_image
from FetalHeadSegLib.core.samples import SAMPLES_DIR, get_sample, list_samples
from FetalHeadSegLib.phantom import PhantomConfig, generate_phantom

PHANTOM_SAMPLES = ["phantom3d_s000001", "phantom2d_s000001"]
MAX_DIFFERING_FRACTION = 1e-4
"""Share of voxels allowed to differ between the bundled sample and a regeneration on another CPU."""


def test_every_sample_file_exists_and_is_attributed() -> None:
    attribution = (SAMPLES_DIR / "ATTRIBUTION.md").read_text()
    for name, sample in list_samples().items():
        assert sample.image_path.exists() and sample.annotation_path is not None
        assert sample.annotation_path.exists()
        assert sample.info["license"] and name.split("_")[0] in attribution


def _regenerate(name: str) -> Any:
    recipe = get_sample(name).info["generator"]
    return generate_phantom(PhantomConfig.from_dict(recipe["config"]), recipe["seed"])


def _count_differences(first: np.ndarray, second: np.ndarray) -> tuple[int, float]:
    """Voxels that differ and the largest absolute difference (0 for equal arrays)."""
    assert first.shape == second.shape, f"shapes differ: {first.shape} vs {second.shape}"
    difference = np.abs(first.astype(np.float64) - second.astype(np.float64))
    return int(np.count_nonzero(difference)), float(difference.max(initial=0.0))


def _assert_close_json(bundled: Any, regenerated: Any, where: str = "truth") -> None:
    """Same keys and strings; numbers equal to 1e-6 relative (a last-digit rounding on another CPU is not a change)."""
    if isinstance(bundled, dict):
        assert isinstance(regenerated, dict) and bundled.keys() == regenerated.keys(), f"{where}: keys differ"
        for key in bundled:
            _assert_close_json(bundled[key], regenerated[key], f"{where}.{key}")
    elif isinstance(bundled, list):
        assert isinstance(regenerated, list) and len(bundled) == len(regenerated), f"{where}: lengths differ"
        for index, (a, b) in enumerate(zip(bundled, regenerated, strict=True)):
            _assert_close_json(a, b, f"{where}[{index}]")
    elif isinstance(bundled, float) or isinstance(regenerated, float):
        assert math.isclose(bundled, regenerated, rel_tol=1e-6, abs_tol=1e-4), f"{where}: {bundled} vs {regenerated}"
    else:
        assert bundled == regenerated, f"{where}: {bundled!r} vs {regenerated!r}"


@pytest.mark.parametrize("name", PHANTOM_SAMPLES)
def test_same_environment_regenerates_the_same_bytes(name: str) -> None:
    first, second = _regenerate(name), _regenerate(name)
    for part in ("image", "head_mask", "labels"):
        count, largest = _count_differences(getattr(first, part).array, getattr(second, part).array)
        assert count == 0, f"{part}: {count} voxels differ (largest difference {largest}) between two runs"
    assert first.truth == second.truth


@pytest.mark.parametrize("name", PHANTOM_SAMPLES)
def test_bundled_phantom_matches_a_regeneration(name: str) -> None:
    sample = get_sample(name)
    case = _regenerate(name)
    hint = f"regenerate the bundled sample: {sample.info['regenerate']}"
    bundled = {
        "image": read_image(sample.image_path),
        "head_mask": read_image(sample.annotation_path),
        "labels": read_image(sample.image_path.parent / sample.info["labels"]),
    }
    for part, image in bundled.items():
        regenerated = getattr(case, part).array
        count, largest = _count_differences(image.array, regenerated)
        allowed = max(8, int(MAX_DIFFERING_FRACTION * regenerated.size))
        assert count <= allowed and largest <= 1, (
            f"{part}: {count} of {regenerated.size} voxels differ (allowed {allowed}), largest difference "
            f"{largest} (allowed 1); {hint}"
        )
        np.testing.assert_allclose(image.ijk_to_ras, case.image.ijk_to_ras, atol=1e-5)
    truth = json.loads((sample.image_path.parent / sample.info["truth"]).read_text())
    _assert_close_json(truth, json.loads(json.dumps(case.truth)))
