"""Bundled samples: present, documented, and the phantoms regenerate byte for byte from their recorded seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from FetalHeadSegLib.io import read_image
from FetalHeadSegLib.phantom import PhantomConfig, generate_phantom
from FetalHeadSegLib.samples import SAMPLES_DIR, get_sample, list_samples


def test_every_sample_file_exists_and_is_attributed() -> None:
    attribution = (SAMPLES_DIR / "ATTRIBUTION.md").read_text()
    for name, sample in list_samples().items():
        assert sample.image_path.exists() and sample.annotation_path is not None
        assert sample.annotation_path.exists()
        assert sample.info["license"] and name.split("_")[0] in attribution


@pytest.mark.parametrize("name", ["phantom3d_s000001", "phantom2d_s000001"])
def test_bundled_phantom_is_reproduced_exactly(name: str) -> None:
    sample = get_sample(name)
    recipe = sample.info["generator"]
    case = generate_phantom(PhantomConfig.from_dict(recipe["config"]), recipe["seed"])
    bundled_image, bundled_head = read_image(sample.image_path), read_image(sample.annotation_path)
    bundled_labels = read_image(sample.image_path.parent / sample.info["labels"])
    message = f"regenerate the bundled sample: {sample.info['regenerate']}"
    assert bundled_image.array.tobytes() == case.image.array.tobytes(), message
    assert bundled_head.array.tobytes() == case.head_mask.array.tobytes(), message
    assert bundled_labels.array.tobytes() == case.labels.array.tobytes(), message
    np.testing.assert_allclose(bundled_image.ijk_to_ras, case.image.ijk_to_ras, atol=1e-5)
    truth = json.loads((sample.image_path.parent / sample.info["truth"]).read_text())
    assert truth == json.loads(json.dumps(case.truth)), message
