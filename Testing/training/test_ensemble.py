"""Ensembles: one bundle whose every cascade level averages its members' probabilities, checked against the members
run one by one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from FetalHeadSegLib.core.errors import BundleError, ChecksumError
from FetalHeadSegLib.core.io import read_image
from FetalHeadSegLib.core.samples import get_sample
from FetalHeadSegLib.inference.engine import InferenceOptions, load_model
from FetalHeadSegLib.inference.preprocessing import PreprocessingConfig
from FetalHeadSegLib.models.bundle import load_networks, read_bundle, verify_bundle
from training.ensemble import ensemble, main

from tiny_models import make_tiny_bundle


def test_an_ensemble_segments_with_the_mean_of_its_members_probabilities(tmp_path: Path) -> None:
    members = [make_tiny_bundle(tmp_path / f"m{seed}", dimension=2, levels=1, seed=seed) for seed in (1, 2, 3)]
    written = ensemble([m.path for m in members], tmp_path / "ens", "tiny-ensemble", "1.0.0")
    assert [p.relative_to(written.path).as_posix() for p in sorted(written.path.rglob("*.pt"))] == [
        "weights/level0.pt",
        "weights/member1/level0.pt",
        "weights/member2/level0.pt",
    ]
    assert read_bundle(written.path).to_dict() == written.to_dict()
    assert "members" not in json.loads((members[0].path / "bundle.json").read_text())  # single models as before

    frame = read_image(get_sample("phantom2d_s000001").image_path)
    options = InferenceOptions(mirror_check=False)
    alone = [load_model(m.path, "cpu").segment(frame, options).probability.array for m in members]
    together = load_model(written.path, "cpu").segment(frame, options)
    assert np.ptp(np.stack(alone), axis=0).max() > 0.1  # the members disagree, so the mean says something
    np.testing.assert_allclose(together.probability.array, np.mean(alone, axis=0), atol=1e-5)
    assert together.model.id == "tiny-ensemble"


def test_each_level_of_a_3d_cascade_averages_its_members(tmp_path: Path) -> None:
    a, b = (make_tiny_bundle(tmp_path / name, seed=seed) for name, seed in (("a", 4), ("b", 5)))
    written = ensemble([a.path, b.path], tmp_path / "ens", "tiny-3d-ensemble", "1.0.0")
    device = torch.device("cpu")
    averaged, first, second = (load_networks(bundle, device) for bundle in (written, a, b))
    for level, channels in ((0, 1), (1, 2)):
        x = torch.rand(1, channels, 16, 16, 16, generator=torch.Generator().manual_seed(level))
        with torch.inference_mode():
            expected = (torch.softmax(first[level](x), 1) + torch.softmax(second[level](x), 1)) / 2
            torch.testing.assert_close(torch.softmax(averaged[level](x), 1), expected, atol=1e-6, rtol=1e-5)
    phantom = read_image(get_sample("phantom3d_s000001").image_path)
    assert load_model(written.path, "cpu").segment(phantom).labels.shape == phantom.shape


def test_members_stored_in_half_precision_on_request(tmp_path: Path) -> None:
    members = [make_tiny_bundle(tmp_path / f"m{seed}", dimension=2, levels=1, seed=seed) for seed in (1, 2)]
    assert main([str(tmp_path / "ens"), *(str(m.path) for m in members), "--id", "x", "--version", "1", "--half"]) == 0
    written = read_bundle(tmp_path / "ens")
    for name in written.weight_files:
        state = torch.load(written.path / name, weights_only=True)
        assert {value.dtype for value in state.values() if value.is_floating_point()} == {torch.float16}


@pytest.mark.parametrize(("flag", "expected"), [([], True), (["--no-tta-by-default"], False)])
def test_an_ensemble_runs_with_flips_by_default_as_its_first_member_unless_told(
    tmp_path: Path, flag: list[str], expected: bool
) -> None:
    first = make_tiny_bundle(tmp_path / "m1", dimension=2, levels=1, seed=1, tta_by_default=True)
    second = make_tiny_bundle(tmp_path / "m2", dimension=2, levels=1, seed=2)
    assert main([str(tmp_path / "ens"), str(first.path), str(second.path), "--id", "x", "--version", "1", *flag]) == 0
    assert read_bundle(tmp_path / "ens").tta_by_default is expected
    assert main([str(tmp_path / "on"), str(second.path), str(first.path), "--id", "x", "--version", "1"]) == 0
    assert not read_bundle(tmp_path / "on").tta_by_default
    assert (
        main(
            [str(tmp_path / "on"), str(second.path), str(first.path), "--id", "x", "--version", "1", "--tta-by-default"]
        )
        == 0
    )
    assert read_bundle(tmp_path / "on").tta_by_default


def test_a_changed_member_is_refused_by_its_checksum(tmp_path: Path) -> None:
    members = [make_tiny_bundle(tmp_path / f"m{seed}", dimension=2, levels=1, seed=seed) for seed in (1, 2)]
    written = ensemble([m.path for m in members], tmp_path / "ens", "tiny-ensemble", "1.0.0")
    weights = written.path / "weights" / "member1" / "level0.pt"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="member1/level0.pt: SHA-256 mismatch"):
        verify_bundle(read_bundle(written.path))


def test_members_must_differ_in_their_networks_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = make_tiny_bundle(tmp_path / "base", dimension=2, levels=1)
    coarse = make_tiny_bundle(
        tmp_path / "coarse", dimension=2, levels=1, preprocessing=PreprocessingConfig(max_size=32)
    )
    other_task = make_tiny_bundle(tmp_path / "intrapartum", dimension=2, levels=1, task="intrapartum")
    with pytest.raises(BundleError, match="coarse: cannot join .*base in an ensemble: preprocessing differ"):
        ensemble([base.path, coarse.path], tmp_path / "out", "x", "1")
    assert main([str(tmp_path / "out"), str(base.path), str(other_task.path), "--id", "x", "--version", "1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ensemble: error: ") and "task, labels" in error and error.count("\n") == 1
    with pytest.raises(BundleError, match="at least two"):
        ensemble([base.path], tmp_path / "out", "x", "1")
    assert not (tmp_path / "out").exists()


def test_a_member_that_does_not_match_the_first_is_named(tmp_path: Path) -> None:
    members = [make_tiny_bundle(tmp_path / f"m{seed}", dimension=2, levels=1, seed=seed) for seed in (1, 2)]
    written = ensemble([m.path for m in members], tmp_path / "ens", "tiny-ensemble", "1.0.0")
    manifest = written.path / "bundle.json"
    data = json.loads(manifest.read_text())
    data["members"][0][0]["out_channels"] = 3
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="ensemble member 1 does not match the first member"):
        read_bundle(written.path)


def test_fine_tuning_starts_from_the_chosen_member(tmp_path: Path) -> None:
    from FetalHeadSegLib.core.errors import ConfigError
    from training.config import TrainConfig
    from training.engine import build_level

    members = [make_tiny_bundle(tmp_path / f"m{seed}", dimension=2, levels=1, seed=seed) for seed in (1, 2)]
    written = ensemble([m.path for m in members], tmp_path / "ens", "tiny-ensemble", "1.0.0")
    network = {key: value for key, value in members[0].networks[0].to_dict().items() if value is not None}
    config = {
        "run_dir": str(tmp_path / "run"),
        "data": {"kind": "phantom"},
        "network": network,
        "loss": {"aux_weights": [1.0, 1.0]},
    }
    config |= {"finetune_from": str(written.path), "finetune_member": 1}
    tuned = build_level(TrainConfig.from_dict(config), 0).state_dict()
    second = torch.load(members[1].path / "weights" / "level0.pt", weights_only=True)
    assert tuned.keys() == second.keys()
    for key, value in second.items():
        torch.testing.assert_close(tuned[key], value.float())
    with pytest.raises(ConfigError, match="finetune_member 2: .* has 2 member"):
        build_level(TrainConfig.from_dict({**config, "finetune_member": 2}), 0)
