"""Training on the CPU with tiny networks and tiny phantoms: learning, cascade context, resume, DDP, export."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from FetalHeadSegLib.core.errors import BundleError, ConfigError
from FetalHeadSegLib.core.io import read_image
from FetalHeadSegLib.core.samples import get_sample
from FetalHeadSegLib.inference.engine import load_model
from FetalHeadSegLib.inference.preprocessing import PreprocessingConfig
from FetalHeadSegLib.models.bundle import read_bundle
from FetalHeadSegLib.phantom.image_space import generate_image_space
from training import engine
from training.config import TrainConfig, read_config
from training.data import (
    Case,
    DataConfig,
    build_arrays,
    draws_image_space,
    load_case,
    phantom_config,
    split_by_subject,
    split_case_ids,
)
from training.engine import frozen_modules
from training.export import export
from training.losses import DeepSupervisionLoss
from training.train import run

REPOSITORY = Path(__file__).resolve().parents[2]
TINY_NETWORK = {
    "spatial_dims": 2,
    "channels": [4, 8, 8],
    "kernel_sizes": [3, 3, 3],
    "convs_per_level": [1, 1, 1],
    "up_channels": [4, 8],
    "decoder_channels": [[4, 4], [8, 8]],
}


def test_training_flips_follow_the_task_unless_the_config_says_otherwise() -> None:
    """The task registry says which axes may be mirrored; a config may still choose its own."""
    config = base_config(Path("unused"), Path("unused.npz"), task="intrapartum")
    assert TrainConfig.from_dict(config).augment.flip_axes == (0,)
    assert TrainConfig.from_dict(base_config(Path("unused"), Path("unused.npz"))).augment.flip_axes == (0, 1, 2)
    config["augment"] = {"flip_axes": [0, 1]}
    assert TrainConfig.from_dict(config).augment.flip_axes == (0, 1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight 2D phantoms, preprocessed once into a cache file that every test's config reuses."""
    path = tmp_path_factory.mktemp("cache") / "phantoms.npz"
    build_arrays(
        DataConfig(kind="phantom", phantom={"dimension": 2, "size": [96, 64], "count": 8}, cache=str(path)),
        TrainConfig.from_dict(base_config(Path("unused"), path)).preprocessing,
        log=lambda _: None,
    )
    return path


def base_config(run_dir: Path, cache: Path, **changes: object) -> dict:
    config = {
        "run_dir": str(run_dir),
        "seed": 3,
        "device": "cpu",
        "num_workers": 0,
        "data": {
            "kind": "phantom",
            "phantom": {"dimension": 2, "size": [96, 64], "count": 8},
            "validation_fraction": 0.25,
            "cache": str(cache),
        },
        "preprocessing": {"max_size": 48},
        "network": TINY_NETWORK,
        "loss": {"aux_weights": [1.0, 1.0]},
        "levels": 1,
        "context": "resubstitution",
        "iterations": 8,
        "batch_size": 2,
        "log_every": 4,
        "validate_every": 1000,
        "checkpoint_every": 4,
        "optim": {"lr": 3e-3},
    }
    for key, value in changes.items():
        config[key] = value
    return config


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_loss_falls(tmp_path: Path, cache: Path) -> None:
    run(TrainConfig.from_dict(base_config(tmp_path, cache, iterations=40, log_every=5, augment={"erasing_p": 0.0})))
    rows = [line.split(",") for line in (tmp_path / "metrics_level0.csv").read_text().splitlines()[1:]]
    losses = [float(row[1]) for row in rows if row[1]]
    assert len(losses) == 8 and np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2])
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert splits["validation"]
    assert "dice" in json.loads((tmp_path / "metrics.json").read_text())["level0"]
    # the split recomputed from the config alone is the one training wrote
    config = read_config(tmp_path / "config.json")
    assert split_case_ids(config.data) == (splits["train"], splits["validation"])


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, cache: Path) -> None:
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    run(TrainConfig.from_dict(base_config(straight, cache)))
    run(TrainConfig.from_dict(base_config(halves, cache, iterations=4)))
    run(TrainConfig.from_dict(base_config(halves, cache)))  # resumes from the step-4 checkpoint
    a, b = weights(straight / "level0.pt"), weights(halves / "level0.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_time_budget_ends_training_early_at_the_lowest_learning_rate(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    budgeted = base_config(tmp_path, cache, iterations=40, log_every=40, time_budget_minutes=1e-6)
    budgeted["optim"] = {"lr": 3e-3, "schedule": "cosine"}
    run(TrainConfig.from_dict(budgeted))  # the budget (60 microseconds) is spent by the first step
    checkpoint = torch.load(tmp_path / "checkpoints" / "level0.pt", weights_only=True)
    assert checkpoint["step"] == 1 and checkpoint["elapsed_s"] > 6e-5
    assert "time budget of 1e-06 min spent at step 1" in capsys.readouterr().out
    step, _, lr = (tmp_path / "metrics_level0.csv").read_text().splitlines()[-1].split(",")[:3]
    assert int(step) == 1 and float(lr) == pytest.approx(0.01 * 3e-3)  # the cosine's end, by time
    assert "dice" in json.loads((tmp_path / "metrics.json").read_text())["level0"]
    trained = weights(tmp_path / "level0.pt")
    run(TrainConfig.from_dict(budgeted))  # resumed: the budget was spent, nothing more is trained
    assert "its time budget was spent at step 1" in capsys.readouterr().out
    assert all(torch.equal(trained[k], weights(tmp_path / "level0.pt")[k]) for k in trained)
    ample = tmp_path / "ample"
    run(TrainConfig.from_dict(base_config(ample, cache, time_budget_minutes=10.0)))  # iterations still bound it
    assert torch.load(ample / "checkpoints" / "level0.pt", weights_only=True)["step"] == 8
    with pytest.raises(ConfigError, match="time_budget_minutes must be positive"):
        TrainConfig.from_dict(base_config(tmp_path, cache, time_budget_minutes=0))


def test_a_validation_that_fails_loses_no_training(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last step's checkpoint is written before its validation runs, so a failing validation (a library
    that breaks on the training machine, say) costs no training: the resumed run goes straight on."""

    def failing_evaluate(*args: object, **kwargs: object) -> dict[str, float]:
        raise RuntimeError("validation broke")

    monkeypatch.setattr(engine, "evaluate", failing_evaluate)
    with pytest.raises(RuntimeError, match="validation broke"):
        run(TrainConfig.from_dict(base_config(tmp_path, cache, iterations=6, checkpoint_every=1000)))
    assert torch.load(tmp_path / "checkpoints" / "level0.pt", weights_only=True)["step"] == 6


def test_stage_two_consumes_the_context(tmp_path: Path, cache: Path) -> None:
    config = TrainConfig.from_dict(base_config(tmp_path, cache, levels=2, context="kfold", folds=2, iterations=4))
    run(config)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "level0.pt",
        "level0_fold0.pt",
        "level0_fold1.pt",
        "level1.pt",
    ]
    level1 = weights(tmp_path / "level1.pt")
    assert level1["encoder.0.0.0.weight"].shape[1] == 2  # image + context
    from FetalHeadSegLib.models.networks import build_network
    from training.engine import level_network_config
    from training.validation import predict_probabilities

    network = build_network(level_network_config(config, 1))
    network.load_state_dict(level1)
    image = np.random.default_rng(0).random((48, 32, 1)).astype(np.float32)
    empty = predict_probabilities(network, network.config, image, np.zeros_like(image), network.config.size_multiple)
    full = predict_probabilities(network, network.config, image, np.ones_like(image), network.config.size_multiple)
    assert not np.allclose(empty, full)


def test_two_process_ddp_matches_one_process(tmp_path: Path, cache: Path) -> None:
    single, double = tmp_path / "single", tmp_path / "double"
    run(TrainConfig.from_dict(base_config(single, cache, iterations=4, augment={"rotate_p": 0.0})))
    config_file = tmp_path / "ddp.json"
    config_file.write_text(json.dumps(base_config(double, cache, iterations=4, augment={"rotate_p": 0.0})))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    done = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--master-port", "29517", "-m", "training.train", str(config_file)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPOSITORY,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = weights(single / "level0.pt"), weights(double / "level0.pt")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4)


def test_export_gives_a_bundle_the_engine_runs(tmp_path: Path, cache: Path) -> None:
    from FetalHeadSegLib.models.card import write_card

    config = base_config(tmp_path / "run", cache, levels=2, iterations=4)
    history = [
        {"version": "1.2.2", "notes": "new review thresholds, same weights"},
        {"version": "1.2.0", "notes": "first release"},
    ]
    config["model"] = {
        "retraining": "fine-tune from it on real cases",
        "timing": "0.1 s per case",
        "history": history,
        "tta_by_default": True,
    }
    run(TrainConfig.from_dict(config))
    bundle = export(tmp_path / "run", tmp_path / "bundle", model_id="test-2d", version="1.2.3", half_precision=True)
    assert bundle.levels == 2 and bundle.model_card["splits"]["split"] == "by subject"
    assert read_bundle(bundle.path).tta_by_default
    write_card(bundle.path, {"cases": 1})
    card = (bundle.path / "MODEL_CARD.md").read_text()
    assert "**Retraining.** fine-tune from it on real cases" in card and "**Timing.** 0.1 s per case" in card
    # the releases before this one close the card, newest first, after the model as it is
    assert card.index("## Training") < card.index("## Release history")
    assert card.endswith(
        "## Release history\n\n- **1.2.2.** new review thresholds, same weights\n- **1.2.0.** first release\n"
    )
    segmenter = load_model(tmp_path / "bundle", "cpu")
    frame = read_image(get_sample("phantom2d_s000001").image_path)
    result = segmenter.segment(frame)
    assert result.labels.shape == frame.shape and result.model.id == "test-2d" and result.tta
    (tmp_path / "run" / "config.json").write_text(
        json.dumps({**config, "model": {**config["model"], "tta_by_default": "yes"}})
    )
    with pytest.raises(BundleError, match="model.tta_by_default must be true or false, got 'yes'"):
        export(tmp_path / "run", tmp_path / "other")


def test_export_says_when_the_review_thresholds_are_not_calibrated(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """New weights get the default review thresholds; the export says so, and how to calibrate them."""
    from training.export import main

    run(TrainConfig.from_dict(base_config(tmp_path / "run", cache, iterations=2)))
    assert main([str(tmp_path / "run"), str(tmp_path / "bundle")]) == 0
    printed = capsys.readouterr().out
    assert "review thresholds: the defaults, not calibrated for these weights" in printed
    assert f"python -m training.evaluate {tmp_path / 'bundle'} ... --calibrate-review 0.15" in printed
    assert read_bundle(tmp_path / "bundle").review.calibration is None


def test_decoder_finetuning_keeps_the_encoder(tmp_path: Path, cache: Path) -> None:
    run(TrainConfig.from_dict(base_config(tmp_path / "base", cache, iterations=4)))
    export(tmp_path / "base", tmp_path / "bundle", model_id="base")
    tuned = TrainConfig.from_dict(
        base_config(
            tmp_path / "tuned", cache, iterations=4, finetune_from=str(tmp_path / "bundle"), finetune_strategy="decoder"
        )
    )
    run(tuned)
    before, after = weights(tmp_path / "base" / "level0.pt"), weights(tmp_path / "tuned" / "level0.pt")
    encoder = [k for k in before if k.startswith("encoder.")]
    decoder = [k for k in before if k.startswith("decoder.") and k.endswith("weight")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
    from FetalHeadSegLib.models.networks import build_network

    network = build_network(tuned.network)
    assert len(frozen_modules(network, "encoder_frozen")) == len(frozen_modules(network, "decoder")) - 1
    assert frozen_modules(network, "all") == []


def test_deep_supervision_loss_checks_its_weights() -> None:
    with pytest.raises(ValueError, match="not all zero"):
        DeepSupervisionLoss([0.0, 0.0])
    loss = DeepSupervisionLoss([0.5, 1.0])
    outputs = [torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 8, 8)]
    targets = [torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 8, 8, dtype=torch.long)]
    assert float(loss(outputs, targets)) == pytest.approx(1.5 * np.log(2), rel=1e-6)
    with pytest.raises(ValueError, match="2 weights but 1 outputs"):
        loss(outputs[:1], targets[:1])


def test_bad_configs_and_data_fail_before_training(tmp_path: Path, cache: Path) -> None:
    config_file = tmp_path / "c.json"
    good = base_config(tmp_path / "r", cache)
    config_file.write_text(json.dumps(good))
    assert read_config(config_file, ["optim.lr=0.01", "iterations=3"]).optim.lr == 0.01
    with pytest.raises(ConfigError, match="unknown or missing setting|unexpected keyword"):
        read_config(config_file, ["learning_rate=1"])
    with pytest.raises(ConfigError, match="aux_weights needs 2"):
        TrainConfig.from_dict({**good, "loss": {"aux_weights": [1, 1, 1]}})
    missing = copy.deepcopy(good)
    missing["data"] = {"kind": "pairs", "root": str(tmp_path / "nowhere")}
    with pytest.raises((ConfigError, FileNotFoundError)):
        run(TrainConfig.from_dict(missing))
    too_many_labels = copy.deepcopy(good)
    too_many_labels["network"] = {**TINY_NETWORK, "out_channels": 2}
    arrays = build_arrays(TrainConfig.from_dict(good).data, TrainConfig.from_dict(good).preprocessing, lambda _: None)
    from training.train import check_labels

    arrays.labels[0] = arrays.labels[0] * 3
    with pytest.raises(ConfigError, match="label value 3"):
        check_labels(TrainConfig.from_dict(too_many_labels), arrays.labels, arrays.case_ids)
    arrays.labels[0] = arrays.labels[0] * 0
    with pytest.raises(ConfigError, match="the label map is empty"):
        check_labels(TrainConfig.from_dict(good), arrays.labels, arrays.case_ids)


def test_a_phantom_drawn_without_a_visible_head_is_skipped_but_an_empty_real_label_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generated draws with no head in the field of view are left out (the rest keep their seeds and contexts);
    a user's label map without a head stays an error of the data set."""
    import training.data
    from FetalHeadSegLib.core.image import Image
    from training.data import Case, is_headless_phantom, load_case

    def without_head(case: Case, config: DataConfig, preprocessing: object) -> tuple[Image, Image]:
        image, label = load_case(case, config, preprocessing)  # type: ignore[arg-type]
        return (image, label.with_array(label.array * 0)) if case.seed == 11 else (image, label)

    monkeypatch.setattr(training.data, "load_case", without_head)
    config = TrainConfig.from_dict(base_config(tmp_path, tmp_path / "c.npz"))
    data = DataConfig(kind="phantom", phantom={"dimension": 2, "size": [96, 64], "count": 4, "seed": 10})
    lines: list[str] = []
    arrays = build_arrays(data, config.preprocessing, lines.append)
    assert arrays.case_ids == ["phantom_000010", "phantom_000012", "phantom_000013"]
    assert "case phantom_000011: no head within the field of view; skipped" in lines
    assert all(label.any() for label in arrays.labels)
    image, label = load_case(Case("x", "x", seed=10), data, config.preprocessing)
    real = Case("scan", "subject", Path("scan_image.nii.gz"), Path("scan_label.nii.gz"))
    assert not is_headless_phantom(real, label.with_array(label.array * 0))


def test_batches_of_differing_shapes_need_a_patch_size(tmp_path: Path, cache: Path) -> None:
    from training.train import check_batch_shapes

    config = TrainConfig.from_dict(base_config(tmp_path, cache))
    labels = [np.zeros((48, 32, 1), np.uint8), np.zeros((48, 40, 1), np.uint8)]
    with pytest.raises(ConfigError, match="set patch_size"):
        check_batch_shapes(config, labels)
    check_batch_shapes(TrainConfig.from_dict(base_config(tmp_path, cache, patch_size=[48, 48])), labels)


def test_subject_split_keeps_subjects_together() -> None:
    subjects = ["a", "a", "b", "c", "c", "c", "d", "e"]
    train, validation = split_by_subject(subjects, 0.4, seed=1)
    assert sorted(train + validation) == list(range(8))
    assert not {subjects[i] for i in train} & {subjects[i] for i in validation}


def test_phantom_settings_cycle_through_grids_and_are_checked_up_front() -> None:
    settings = {"dimension": 2, "sizes": [[96, 64], [80, 80]], "head_fill_range": [0.5, 0.6]}
    assert [phantom_config(settings, seed).size for seed in (10, 11, 12)] == [(96, 64), (80, 80), (96, 64)]
    assert phantom_config(settings, 0).head_fill_range == (0.5, 0.6)
    with pytest.raises(ConfigError, match="head_fill_range"):
        DataConfig(kind="phantom", phantom={**settings, "head_fill_range": [0.9, 0.5]})
    with pytest.raises(ConfigError, match="size needs 2 values"):
        DataConfig(kind="phantom", phantom={**settings, "sizes": [[96, 64], [80, 80, 80]]})


def test_classic_fraction_keeps_that_share_of_seeds_classic_deterministically() -> None:
    settings = {"dimension": 3, "size": [32, 32, 32], "appearance": "randomised", "factors": {"gamma": 1.0}}
    mixed = {**settings, "classic_fraction": 0.25}
    looks = [str(phantom_config(mixed, seed).appearance) for seed in range(400)]
    assert looks == [str(phantom_config(mixed, seed).appearance) for seed in range(400)]
    assert 0.19 < looks.count("classic") / 400 < 0.31
    classic = [seed for seed, look in enumerate(looks) if look == "classic"]
    assert phantom_config(mixed, classic[0]).factors == {}  # the classic appearance takes no factors
    assert {str(phantom_config(settings, seed).appearance) for seed in range(50)} == {"randomised"}
    assert {str(phantom_config({**settings, "classic_fraction": 1.0}, s).appearance) for s in range(50)} == {"classic"}
    with pytest.raises(ConfigError, match="classic_fraction"):
        DataConfig(kind="phantom", phantom={**settings, "classic_fraction": 1.5})


def test_joint_draws_move_one_named_family_to_an_end_of_its_axis_for_that_share_of_seeds() -> None:
    settings = {"dimension": 3, "size": [32, 32, 32], "appearance": "randomised", "factors": {"gamma": [0.8, 1.5]}}
    joint = {**settings, "joint": {"fraction": 0.5, "families": ["gain", "noise"], "ends": 0.2}}
    drawn = [phantom_config(joint, seed).factors for seed in range(400)]
    assert drawn == [phantom_config(joint, seed).factors for seed in range(400)]
    moved = [factors for factors in drawn if set(factors) != {"gamma"}]
    assert 0.42 < len(moved) / 400 < 0.58
    gain = [factors for factors in moved if "gain_db" in factors]
    noise = [factors for factors in moved if "noise_db" in factors]
    assert len(gain) + len(noise) == len(moved) and min(len(gain), len(noise)) > 60
    positions = []
    for factors in gain:  # every knob at the same point of its range; gamma the other way, within its narrowed range
        u = (factors["gain_db"] + 8.0) / 18.0
        assert (factors["tgc_error_db_per_cm"] + 1.2) / 2.4 == pytest.approx(u)
        assert (factors["dynamic_range_db"] - 40.0) / 32.0 == pytest.approx(u)
        assert np.log(factors["gamma"] / 0.8) / np.log(1.5 / 0.8) == pytest.approx(1.0 - u)
        positions.append(u)
    assert all(u <= 0.2 or u >= 0.8 for u in positions)
    assert min(positions) < 0.05 and max(positions) > 0.95  # both corners reached
    assert all(set(factors) == {"gamma", "noise_db", "reverberation_db"} for factors in noise)
    assert {s: phantom_config(settings, s).factors for s in range(50)} == {s: {"gamma": [0.8, 1.5]} for s in range(50)}
    classic = {**joint, "classic_fraction": 1.0}
    assert all(phantom_config(classic, seed).factors == {} for seed in range(50))  # classic cases take no factors
    bad_settings = (
        {"fraction": 1.5, "families": ["gain"]},
        {"fraction": 0.5, "families": []},
        {"families": "gain"},
        {"families": ["gain"], "ends": "wide"},
        {"families": ["gains"]},
    )
    for bad in bad_settings:
        with pytest.raises(ConfigError, match="joint"):
            DataConfig(kind="phantom", phantom={**settings, "count": 40, "joint": {"fraction": 1.0, **bad}})


def test_image_space_fraction_draws_that_share_of_volumes_from_the_second_generator_on_the_case_grid() -> None:
    settings = {"dimension": 3, "size": [40, 36, 32], "appearance": "randomised", "count": 60, "seed": 9_700_000}
    mixed = {**settings, "image_space_fraction": 0.3, "truth": "visible"}
    chosen = [draws_image_space(mixed, seed) for seed in range(400)]
    assert chosen == [draws_image_space(mixed, seed) for seed in range(400)]
    assert 0.24 < sum(chosen) / 400 < 0.36
    assert not any(draws_image_space(settings, seed) for seed in range(50))
    config = DataConfig(kind="phantom", phantom=mixed)
    seed = next(s for s in range(9_700_000, 9_700_060) if draws_image_space(mixed, s))
    image, head = load_case(Case(f"phantom{seed}", "phantom", seed=seed), config, PreprocessingConfig(max_size=32))
    expected = generate_image_space(seed, size=(40, 36, 32))
    assert np.array_equal(image.array, expected.image.array)  # the image-space case, on the configured grid
    visible = (expected.head_mask.array != 0) & (expected.field_of_view.array != 0)
    assert np.array_equal(head.array != 0, visible)  # truth: visible keeps the imaged head only
    for bad in ({"image_space_fraction": 1.5}, {"image_space_fraction": "most"}):
        with pytest.raises(ConfigError, match="image_space_fraction"):
            DataConfig(kind="phantom", phantom={**settings, **bad})
    with pytest.raises(ConfigError, match="volumes"):
        DataConfig(kind="phantom", phantom={"dimension": 2, "size": [64, 48], "image_space_fraction": 0.2})


def _sphere(radius_mm: float, spacing_mm: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A ball of ``radius_mm`` centred at (16, 16, 16) mm on a 64 x 64 x 32 grid, and every voxel's distance."""
    axes_mm = [np.arange(n) * s for n, s in zip((64, 64, 32), spacing_mm, strict=True)]
    grid = np.stack(np.meshgrid(*axes_mm, indexing="ij"))
    distance_mm = np.sqrt(((grid - np.array([16.0, 16.0, 16.0])[:, None, None, None]) ** 2).sum(axis=0))
    return distance_mm <= radius_mm, distance_mm


def test_a_coarse_context_grows_the_true_head_by_the_offset_it_is_given() -> None:
    """Without wave, blobs, scaling or misses, the context's half level is the true sphere grown by the offset."""
    from training import roi_data
    from training.config import ContextDrawConfig

    plain = ContextDrawConfig(wave=(0.0, 0.0), scale=(1.0, 1.0), blobs=0, missed=0.0)
    spacing_mm = (0.5, 0.5, 1.0)
    sphere, radius_mm = _sphere(8.0, spacing_mm)
    for offset_mm in (-2.0, 0.0, 3.0):
        context = roi_data.coarse_context(sphere, spacing_mm, 2.0, offset_mm, np.random.default_rng(1), plain)
        grown = context > 0.5
        assert grown.shape == sphere.shape and 0.0 <= context.min() and context.max() <= 1.0
        # every voxel within 8 + offset mm (less one voxel) is inside, every voxel beyond (plus one) outside
        assert grown[radius_mm <= 8.0 + offset_mm - 1.0].all() and not grown[radius_mm >= 8.0 + offset_mm + 1.0].any()
    first, second = (roi_data.coarse_context(sphere, spacing_mm, 2.0, 1.0, np.random.default_rng(5)) for _ in "ab")
    np.testing.assert_array_equal(first, second)


def test_an_attached_blob_sits_on_the_true_boundary_and_spills_out_by_its_radius() -> None:
    """A coarse level that took tissue beside the head for head: the extra region touches the head, reaches no
    further than the blob's diameter beyond it, and holds a good part of a ball of that radius."""
    from scipy.ndimage import label as connected

    from training import roi_data
    from training.config import ContextDrawConfig

    plain = ContextDrawConfig(wave=(0.0, 0.0), scale=(1.0, 1.0), softness=(0.25, 0.25), blobs=0, missed=0.0)
    spacing_mm = (0.5, 0.5, 1.0)
    sphere, radius_mm = _sphere(8.0, spacing_mm)
    for seed in range(3):
        context = roi_data.coarse_context(sphere, spacing_mm, 2.0, 0.0, np.random.default_rng(seed), plain, [3.0])
        extra = (context > 0.5) & ~sphere
        assert radius_mm[extra].max() <= 8.0 + 2 * 3.0 + 1.0  # the centre lies on the boundary
        ball_mm3 = 4.0 / 3.0 * np.pi * 3.0**3
        assert 0.3 * ball_mm3 <= extra.sum() * 0.25 <= 0.75 * ball_mm3  # about the outer half of the ball
        assert connected(context > 0.5)[1] == 1  # attached: one piece with the head


def test_a_roi_case_margin_grows_with_the_overshoot_of_the_context() -> None:
    """The crop around an overshooting context is larger, as level 1's box would be."""
    from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
    from FetalHeadSegLib.inference.preprocessing import PreprocessingConfig
    from training import roi_data
    from training.config import ContextDrawConfig

    sphere, _ = _sphere(8.0, (0.5, 0.5, 1.0))
    image = Image(sphere.astype(np.float32), make_ijk_to_ras((0.5, 0.5, 1.0)))
    label = image.with_array(sphere.astype(np.uint8))
    level, coarse = PreprocessingConfig(max_size=32), PreprocessingConfig(max_size=16)
    shares = {}
    for blobs in (0, 3):
        draw = ContextDrawConfig(offset=(0.0, 0.0), blobs=0, attached_blobs=blobs, missed=0.0)
        heads = []
        for seed in range(6):
            _, labels, _, _ = roi_data.roi_case(image, label, level, coarse, 2.0, np.random.default_rng(seed), draw)
            heads.append(labels.mean())
        shares[blobs] = float(np.mean(heads))
    assert shares[3] < 0.8 * shares[0]  # the head fills less of a crop made for a spilling context


def test_a_cut_coarse_context_lacks_a_cap_beyond_a_plane_and_keeps_the_rest() -> None:
    """A coarse level that lost part of the head behind a shadow: what the context lacks of the head lies on one
    side of a plane, at the drawn distance from the head's centre (the cap of a ball of radius R cut at distance d
    holds pi (R - d)^2 (2R + d) / 3), and the rest of the head is kept; without ``cut`` nothing is cut."""
    from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
    from training import roi_data
    from training.config import ContextDrawConfig

    spacing_mm = (0.5, 0.5, 1.0)
    sphere, _ = _sphere(8.0, spacing_mm)
    radius_mm = roi_data.equivalent_radius_mm(Image(sphere.astype(np.uint8), make_ijk_to_ras(spacing_mm)))
    points_mm = np.argwhere(sphere) * np.array(spacing_mm)
    plain = {"wave": (0.0, 0.0), "scale": (1.0, 1.0), "softness": (0.05, 0.05), "blobs": 0, "missed": 0.0}
    for seed in range(4):
        kept = roi_data.coarse_context(
            sphere, spacing_mm, 2.0, 0.0, np.random.default_rng(seed), ContextDrawConfig(**plain)
        )
        assert (kept > 0.5)[sphere].mean() > 0.97
        for plane in (0.3, 0.7):
            draw = ContextDrawConfig(cut=1.0, cut_plane=(plane, plane), **plain)
            context = roi_data.coarse_context(sphere, spacing_mm, 2.0, 0.0, np.random.default_rng(seed), draw)
            lost = sphere & (context <= 0.5)
            distance_mm = plane * radius_mm
            cap_mm3 = np.pi * (radius_mm - distance_mm) ** 2 * (2 * radius_mm + distance_mm) / 3.0
            assert abs(lost.sum() * 0.25 - cap_mm3) < 0.15 * cap_mm3
            # the lost voxels are the ones beyond a plane: their centroid lies on the far side of the kept ones
            lost_mm, kept_mm = (
                np.argwhere(lost) * np.array(spacing_mm),
                np.argwhere(sphere & ~lost) * np.array(spacing_mm),
            )
            normal = lost_mm.mean(axis=0) - points_mm.mean(axis=0)
            normal /= np.linalg.norm(normal)
            assert (lost_mm @ normal).min() > (kept_mm @ normal).max() - 1.5


def test_a_cut_2d_coarse_context_lacks_a_circular_segment() -> None:
    """On a 2D frame the plane is a line: a disc of radius R cut at distance d loses the circular segment
    R^2 acos(d / R) - d sqrt(R^2 - d^2)."""
    from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
    from training import roi_data
    from training.config import ContextDrawConfig

    rows_mm, columns_mm = np.mgrid[:80, :80] * 0.5
    disc = (((rows_mm - 20.0) ** 2 + (columns_mm - 20.0) ** 2) <= 10.0**2)[:, :, np.newaxis]
    radius_mm = roi_data.equivalent_radius_mm(Image(disc.astype(np.uint8), make_ijk_to_ras((0.5, 0.5, 1.0))))
    plain = {"wave": (0.0, 0.0), "scale": (1.0, 1.0), "softness": (0.05, 0.05), "blobs": 0, "missed": 0.0}
    for plane in (0.3, 0.7):
        draw = ContextDrawConfig(cut=1.0, cut_plane=(plane, plane), **plain)
        context = roi_data.coarse_context(disc, (0.5, 0.5, 1.0), 2.0, 0.0, np.random.default_rng(3), draw)
        distance_mm = plane * radius_mm
        segment_mm2 = radius_mm**2 * np.arccos(plane) - distance_mm * np.sqrt(radius_mm**2 - distance_mm**2)
        assert context.shape == disc.shape
        assert abs((disc & (context <= 0.5)).sum() * 0.25 - segment_mm2) < 0.1 * segment_mm2


def test_a_missed_coarse_context_is_nearly_empty() -> None:
    from training import roi_data
    from training.config import ContextDrawConfig

    square = np.zeros((40, 40, 1), bool)
    square[10:30, 10:30] = True
    draw = ContextDrawConfig(missed=1.0, blobs=0)
    context = roi_data.coarse_context(square, (0.5, 0.5, 1.0), 2.0, 0.0, np.random.default_rng(2), draw)
    assert context.shape == square.shape and context.max() <= 0.3


def test_redrawn_contexts_follow_the_true_head_at_the_coarse_step_and_change_with_every_draw() -> None:
    """roi_context.redraw: each sample's context is drawn afresh from the crop's labels, at the coarse voxel size
    of the same case's level 1 grid (looked up by case id, not by position), reproducibly for a given generator."""
    from training.config import ContextDrawConfig
    from training.data import CaseArrays
    from training.roi_data import ContextRedraw

    disc = np.zeros((80, 80, 1), np.uint8)
    yy, xx = np.mgrid[:80, :80]
    radius_px = np.hypot(xx - 40, yy - 40)
    disc[radius_px <= 20, 0] = 1
    crops = CaseArrays(["b", "a"], ["b", "a"], [disc, disc], [disc, disc], [(0.25, 0.25, 1.0)] * 2)
    coarse = CaseArrays(["a", "b"], ["a", "b"], [disc, disc], [disc, disc], [(1.0, 1.0, 1.0), (2.0, 2.0, 1.0)])
    grown = ContextDrawConfig(offset=(1.0, 1.0), wave=(0.0, 0.0), scale=(1.0, 1.0), blobs=0, missed=0.0)
    redraw = ContextRedraw(crops, coarse, grown)
    for index, step_mm in ((0, 2.0), (1, 1.0)):  # crop 0 is case "b", whose coarse grid has 2 mm voxels
        inside = redraw(index, np.random.default_rng(0))[:, :, 0] > 127
        edge_px = 20 + step_mm / 0.25  # the disc's edge moved out by one coarse voxel
        assert inside[radius_px <= edge_px - 1].all() and not inside[radius_px >= edge_px + 1].any()
    varied = ContextRedraw(crops, coarse, ContextDrawConfig(offset=(-2.0, 2.0), blobs=2, attached_blobs=1))
    first, again, other = (varied(0, np.random.default_rng(seed)) for seed in (3, 3, 4))
    assert first.dtype == np.uint8 and first.shape == disc.shape
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).max() > 50


def test_a_redraw_from_the_stored_signed_distance_is_the_draw_from_the_labels() -> None:
    """ContextRedraw keeps each case's signed distance (float16, computed once, in worker processes as in one)
    instead of two distance transforms per draw: the contexts it draws are those drawn from the labels alone, to
    within a level of 255, and the stored distance is a ball's, to within a voxel."""
    from training.config import ContextDrawConfig
    from training.data import CaseArrays
    from training.roi_data import ContextRedraw, coarse_context, draw_misplacement

    spacing = (0.5, 0.5, 0.75)
    grid = np.indices((40, 40, 28)).astype(np.float64) * np.reshape(spacing, (3, 1, 1, 1))
    distance_mm = np.sqrt(((grid - np.reshape((10.0, 10.0, 10.5), (3, 1, 1, 1))) ** 2).sum(axis=0))
    ball = (distance_mm <= 6.0).astype(np.uint8)
    crops = CaseArrays(["a", "b"], ["a", "b"], [ball * 200, ball * 200], [ball, ball], [spacing] * 2)
    coarse = CaseArrays(["a", "b"], ["a", "b"], [ball, ball], [ball, ball], [(2.0, 2.0, 2.0)] * 2)
    draw = ContextDrawConfig(offset=(-2.0, 2.0), wave=(0.0, 2.0), blobs=2, attached_blobs=1, cut=0.5)
    redraw = ContextRedraw(crops, coarse, draw)
    near_border = np.abs(distance_mm - 6.0) < 3.0
    error_mm = np.abs(redraw.signed_mm[0][near_border] - (distance_mm - 6.0)[near_border])
    assert error_mm.max() <= max(spacing)  # voxel centres to voxel centres: within a voxel of the sphere
    for seed in range(4):
        stored = redraw(0, np.random.default_rng(seed)).astype(int)
        rng = np.random.default_rng(seed)
        offset_mm, radii_mm = draw_misplacement(redraw.head_radius_mm[0], 2.0, rng, draw)
        fresh = coarse_context(ball > 0, spacing, 2.0, offset_mm, rng, draw, radii_mm)
        assert np.abs(stored - np.rint(fresh * 255).astype(int)).max() <= 1
    in_workers = ContextRedraw(crops, coarse, draw, workers=2)
    for mine, theirs in zip(redraw.signed_mm, in_workers.signed_mm, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_a_training_sample_gets_a_fresh_context_for_every_step_and_the_same_one_on_resume() -> None:
    """AugmentedCases with a context drawer: the context channel differs between steps for the same case and is
    the same for the same (step, slot), as a resumed run needs."""
    from training.augment import AugmentConfig
    from training.config import ContextDrawConfig
    from training.data import CaseArrays
    from training.roi_data import ContextRedraw
    from training.samples import AugmentedCases

    disc = np.zeros((48, 48, 1), np.uint8)
    yy, xx = np.mgrid[:48, :48]
    disc[np.hypot(xx - 24, yy - 24) <= 12, 0] = 1
    crops = CaseArrays(["a"], ["a"], [disc * 200], [disc], [(0.5, 0.5, 1.0)])
    redraw = ContextRedraw(crops, crops, ContextDrawConfig(offset=(-3.0, 3.0), wave=(0.0, 2.0)))
    still = AugmentConfig(
        erasing_p=0.0, flip_p=0.0, rotate_p=0.0, scale=(1.0, 1.0), gamma_p=0.0, gain_p=0.0, speckle_p=0.0, shadow_p=0.0
    )
    fixed = [np.zeros_like(disc)]
    samples = AugmentedCases(crops, fixed, still, 7, 1, [1], 8, None, context_draw=redraw)
    contexts = [samples[(step, 0)][0][1].numpy() for step in (0, 1, 0)]
    assert not np.array_equal(contexts[0], contexts[1])
    np.testing.assert_array_equal(contexts[0], contexts[2])
    assert contexts[0][disc[:, :, 0] > 0].mean() > contexts[0][disc[:, :, 0] == 0].mean()


def test_context_draw_settings_are_checked_and_read_from_the_training_config() -> None:
    from training.config import ContextDrawConfig

    with pytest.raises(ConfigError, match="roi_context.offset"):
        ContextDrawConfig.from_dict({"offset": [3.0, -1.0]})
    assert ContextDrawConfig.from_dict({"offset": [-2, 6], "attached_blobs": 2}).offset == (-2, 6)
    assert ContextDrawConfig.from_dict({"redraw": True}).redraw


def roi_config(tmp_path: Path, level2_size: int, **changes: object) -> dict:
    """A two-level roi cascade of the tiny network on six 2D phantoms (level 1 at 32 pixels, level 2 as given)."""
    config = base_config(
        tmp_path / "run",
        tmp_path / "roi.npz",
        levels=2,
        context="perturbed",
        patch_size=[level2_size, level2_size],
        cascade={
            "mode": "roi",
            "level_preprocessing": [{"max_size": 32}, {"max_size": level2_size}],
            "roi_margin_mm": 6.0,
        },
        **changes,
    )
    config["data"] = {
        "kind": "phantom",
        "phantom": {"dimension": 2, "size": [96, 64], "count": 6},
        "validation_fraction": 0.34,
        "cache": str(tmp_path / "roi.npz"),
    }
    return config


def test_a_roi_cascade_trains_exports_and_segments(tmp_path: Path) -> None:
    """Level 2 learns from crops around the true head on its own grid; the bundle runs through the engine."""
    from FetalHeadSegLib.inference.cascade import CascadeMode
    from FetalHeadSegLib.phantom import PhantomConfig, generate_phantom
    from training.roi_data import build_level_arrays

    config = roi_config(tmp_path, 48, roi_context={"redraw": True})
    train_config = TrainConfig.from_dict(config)
    arrays, contexts = build_level_arrays(train_config, log=lambda _: None)
    assert [len(a) for a in arrays] == [6, 6] and len(contexts[1]) == 6
    assert max(arrays[0].images[0].shape) == 32 and max(arrays[1].images[0].shape) == 48
    # The crop holds the whole head (the margin is never negative) and the context marks it, imperfectly.
    for labels, context in zip(arrays[1].labels, contexts[1], strict=True):
        head = labels > 0
        assert head.any() and not head[0].any() and not head[-1].any()
        assert context[head].mean() > context[~head].mean() + 20
    run(train_config)
    bundle = export(tmp_path / "run", tmp_path / "bundle")
    assert bundle.cascade.mode is CascadeMode.ROI and bundle.preprocessing.max_size == 32
    assert bundle.model_card["training"]["steps_trained_per_level"] == [8, 8]
    case = generate_phantom(PhantomConfig(dimension=2, size=(96, 64)), seed=123)
    result = load_model(bundle.path, "cpu").segment(case.image)
    assert result.labels.shape == case.image.shape
    # Retrain level 1 and keep level 2 as it is (a finer level's crops do not depend on the coarser level).
    again = TrainConfig.from_dict(
        {**config, "run_dir": str(tmp_path / "again"), "finetune_from": str(bundle.path), "reuse_levels": [2]}
    )
    assert not again.reused(0) and again.reused(1)
    run(again)
    assert export(tmp_path / "again", tmp_path / "again-bundle").model_card["training"]["steps_trained_per_level"] == [
        8,
        None,  # level 2 taken from the bundle as it was
    ]
    kept, shipped = weights(tmp_path / "again" / "level1.pt"), weights(bundle.path / bundle.weight_files[1])
    assert all(torch.equal(kept[k], shipped[k].float()) for k in shipped)
    retrained, first = weights(tmp_path / "again" / "level0.pt"), weights(bundle.path / bundle.weight_files[0])
    assert any(not torch.equal(retrained[k], first[k].float()) for k in first)
    with pytest.raises(ConfigError, match="from 1 to 2"):
        TrainConfig.from_dict({**config, "finetune_from": str(bundle.path), "reuse_levels": [3]})
    with pytest.raises(ConfigError, match="roi_context.redraw"):
        TrainConfig.from_dict({**config, "cascade": {}, "roi_context": {"redraw": True}})
    with pytest.raises(ConfigError, match="same-grid level"):
        TrainConfig.from_dict(
            {**config, "cascade": {}, "finetune_from": str(bundle.path), "reuse_levels": [2], "batch_size": 1}
        )


def test_worker_processes_prepare_the_same_arrays_as_one(tmp_path: Path) -> None:
    """data.workers: the cases prepared in two spawned processes are those one process prepares, in order."""
    from dataclasses import replace

    from FetalHeadSegLib.inference.preprocessing import PreprocessingConfig
    from training.roi_data import build_level_arrays

    config = roi_config(tmp_path, 40, roi_context={"blobs": 2})
    config["data"]["cache"] = None
    threads = os.environ.get("OMP_NUM_THREADS")
    one = build_level_arrays(TrainConfig.from_dict(config), log=lambda _: None)
    config["data"]["workers"] = 2
    two = build_level_arrays(TrainConfig.from_dict(config), log=lambda _: None)
    for level in range(2):
        a, b = one[0][level], two[0][level]
        assert a.case_ids == b.case_ids and a.spacings == b.spacings and len(a) == 6
        assert all(np.array_equal(x, y) for x, y in zip(a.images + a.labels, b.images + b.labels, strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(one[1][1], two[1][1], strict=True)) and len(two[1][1]) == 6
    assert os.environ.get("OMP_NUM_THREADS") == threads  # one thread per worker, the caller's setting restored
    data = DataConfig(kind="phantom", phantom={"dimension": 2, "size": [96, 64], "count": 4, "seed": 20})
    whole = [build_arrays(replace(data, workers=n), PreprocessingConfig(max_size=48), print) for n in (1, 2)]
    assert whole[0].case_ids == whole[1].case_ids and len(whole[0]) == 4  # a whole-image level, the same way
    assert all(np.array_equal(x, y) for x, y in zip(whole[0].images, whole[1].images, strict=True))
    config["data"]["workers"] = 0
    with pytest.raises(ConfigError, match="data.workers must be at least 1"):
        TrainConfig.from_dict(config)


def test_prepare_only_writes_the_caches_a_run_then_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.train import main

    config_file = tmp_path / "roi.json"
    config_file.write_text(json.dumps(roi_config(tmp_path, 40)))
    assert main([str(config_file), "--prepare-only", "data.workers=2"]) == 0
    assert (tmp_path / "roi.npz").exists() and (tmp_path / "roi.level1.npz").exists()
    assert not (tmp_path / "run").exists()  # nothing trained
    assert "prepared [6, 6] cases per level" in capsys.readouterr().out
    run(read_config(config_file))
    assert "reading the preprocessed caches" in capsys.readouterr().out
    assert main([str(config_file), "--prepare-only", "data.cache=null"]) == 2
    assert capsys.readouterr().err.strip() == "training: error: --prepare-only writes the data caches: set data.cache"


def test_a_widened_level_computes_what_its_one_channel_source_did() -> None:
    """finetune_from a 1-channel level into a 2-channel one: the context weights start at zero."""
    from FetalHeadSegLib.models.network_config import NetworkConfig
    from FetalHeadSegLib.models.networks import build_network
    from training.widen import widen_inputs

    torch.manual_seed(0)
    source = build_network(NetworkConfig.from_dict(TINY_NETWORK))
    target = build_network(NetworkConfig.from_dict(TINY_NETWORK).with_in_channels(2))
    target.load_state_dict(widen_inputs(source.state_dict(), target.state_dict()))
    image = torch.rand(1, 1, 32, 24)
    context = torch.rand(1, 1, 32, 24)
    source.eval(), target.eval()
    with torch.no_grad():
        torch.testing.assert_close(target(torch.cat([image, context], dim=1)), source(image))
    with pytest.raises(ConfigError, match="has shape"):
        widen_inputs({"w": torch.zeros(3, 1, 3, 3)}, {"w": torch.zeros(4, 2, 3, 3)})


def test_finetune_from_a_narrower_level_widens_it_and_keeps_the_other_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A roi cascade retrains level 1 wider (level_networks) from a bundle and keeps level 2; before training, the
    wider level computes what the bundle's did."""
    from FetalHeadSegLib.models.networks import build_network
    from training import engine, widen

    narrow = TINY_NETWORK
    wide = {**narrow, "channels": [8, 16, 16], "up_channels": [8, 16], "decoder_channels": [[8, 8], [16, 16]]}
    config = roi_config(tmp_path, 32, iterations=4)
    run(TrainConfig.from_dict(config))
    bundle = export(tmp_path / "run", tmp_path / "bundle")
    wider = {**config, "run_dir": str(tmp_path / "wide"), "finetune_from": str(bundle.path), "reuse_levels": [2]}
    wider["level_networks"] = [wide, narrow]
    wide_config = TrainConfig.from_dict(wider)

    monkeypatch.setattr(widen, "WIDEN_NOISE", 0.0)
    start = engine.build_level(wide_config, 0).eval()
    source = build_network(bundle.networks[0]).eval()
    source.load_state_dict(
        {k: v.float() for k, v in torch.load(bundle.path / bundle.weight_files[0], weights_only=True).items()}
    )
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(start(image), source(image), rtol=1e-4, atol=1e-5)

    monkeypatch.undo()
    run(wide_config)
    widened = export(tmp_path / "wide", tmp_path / "wide_bundle")
    assert widened.networks[0].channels == (8, 16, 16) and widened.networks[1].channels == (4, 8, 8)
    assert widened.networks[1].in_channels == 2
    kept = torch.load(widened.path / widened.weight_files[1], weights_only=True)
    shipped = torch.load(bundle.path / bundle.weight_files[1], weights_only=True)
    assert all(torch.equal(kept[k], shipped[k]) for k in shipped)

    with pytest.raises(ConfigError, match="one network per level"):
        TrainConfig.from_dict({**wider, "level_networks": [wide]})
    with pytest.raises(ConfigError, match="deep-supervision heads"):
        TrainConfig.from_dict({**wider, "level_networks": [{**wide, "deep_supervision": False}, narrow]})
    with pytest.raises(ConfigError, match="cannot widen"):
        engine.build_level(
            TrainConfig.from_dict({**wider, "level_networks": [{**wide, "kernel_sizes": [5, 3, 3]}, narrow]}), 0
        )


def test_the_hc18_evaluation_writes_a_row_per_frame_against_the_expert_csv(
    hc18_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-case rows carry the CSV's reference HC and DF = measured - reference; the bundled model is close."""
    import csv

    from FetalHeadSegLib.measure.hc18 import read_pixel_size_csv
    from FetalHeadSegLib.models.bundle import read_bundle, verify_bundle
    from FetalHeadSegLib.models.catalog import find_model, import_model
    from training.evaluate import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "splits.json").write_text(json.dumps({"training": [], "validation": ["019_HC", "026_2HC"]}))
    rows_csv = tmp_path / "cases.csv"
    bundle = shutil.copytree(find_model("hc18-plane-2d").path, tmp_path / "bundle")
    manifest = json.loads((bundle / "bundle.json").read_text())
    copy = {**manifest, "id": "hc18-test-copy", "tta_by_default": False}  # never the shipped one
    (bundle / "bundle.json").write_text(json.dumps(copy))
    code = main(
        [str(bundle), "--hc18", str(hc18_dir), "--run", str(tmp_path / "run"), "--cases-csv", str(rows_csv)]
        + ["--calibrate-review", "0.5", "--update-card"]
    )
    assert code == 0
    # the thresholds and the card land in the copy's manifest; its weights still verify
    written = read_bundle(bundle)
    verify_bundle(written)
    assert written.review.calibration is not None and written.review.calibration["cases"] == 2
    assert written.model_card["evaluation"]["cases"] == 2 and "Evaluation" in (bundle / "MODEL_CARD.md").read_text()
    # the card scores the thresholds the bundle holds now (those of the calibration), the former ones apart
    review = written.model_card["evaluation"]["review"]
    rates = {key: written.review.calibration[key] for key in review["policy_before_calibration"]}
    assert json.dumps(review["policy_in_bundle"], sort_keys=True) == json.dumps(rates, sort_keys=True)
    # with --tta the thresholds for TTA results are calibrated; the others stay
    code = main([str(bundle), "--hc18", str(hc18_dir), "--run", str(tmp_path / "run"), "--tta", "--calibrate-review"])
    assert code == 0
    with_tta = read_bundle(bundle)
    assert with_tta.review == written.review and with_tta.review_tta is not None
    assert with_tta.review_tta.calibration is not None and with_tta.review_tta.calibration["tta"] is True
    assert "--tta --calibrate-review" in with_tta.review_tta.calibration["command"]
    assert with_tta.review_tta.calibration["cross_validated"]["cases"] == 2
    # a model that runs with flips by default is evaluated and calibrated as its users run it
    manifest_file = bundle / "bundle.json"
    manifest_file.write_text(json.dumps({**json.loads(manifest_file.read_text()), "tta_by_default": True}))
    code = main([str(bundle), "--hc18", str(hc18_dir), "--run", str(tmp_path / "run"), "--calibrate-review"])
    assert code == 0
    by_default = read_bundle(bundle)
    assert by_default.review == written.review and by_default.review_tta is not None
    assert by_default.review_tta.calibration is not None and by_default.review_tta.calibration["tta"] is True
    assert "--tta" not in by_default.review_tta.calibration["command"]
    manifest_file.write_text(json.dumps({**json.loads(manifest_file.read_text()), "tta_by_default": False}))
    # a model named by its id (here one imported into a user's model folder) is written where it is installed
    home = tmp_path / "home"
    monkeypatch.setenv("FETALHEADSEG_HOME", str(home))
    installed = import_model(bundle, home)
    named = f"{written.id}@{written.version}"
    code = main([named, "--hc18", str(hc18_dir), "--run", str(tmp_path / "run"), "--calibrate-review", "--update-card"])
    assert code == 0
    evaluation = read_bundle(installed).model_card["evaluation"]
    assert "--calibrate-review --update-card" in evaluation["command"] and evaluation["tta"] is False
    rows = list(csv.DictReader(rows_csv.open()))
    table = read_pixel_size_csv(hc18_dir / "subset_pixel_size_and_HC.csv")
    assert [row["case"] for row in rows] == ["019_HC", "026_2HC"]
    for row in rows:
        reference = table[f"{row['case']}.png"].hc_mm
        assert float(row["reference_hc_mm"]) == pytest.approx(reference, abs=1e-3)
        assert float(row["df_mm"]) == pytest.approx(float(row["hc_mm"]) - reference, abs=2e-3)
        assert abs(float(row["df_mm"])) < 10.0 and float(row["dice_ellipse"]) > 0.9
        assert row["review_recommended"] in ("True", "False")
        # the expert drew the outer border of the skull, and the model's ellipse lies on it too (training.skull_edge)
        assert abs(float(row["reference_to_skull_edge_mm"])) <= 1.0
        assert abs(float(row["prediction_to_skull_edge_mm"])) <= 1.0


def test_visible_truth_is_the_head_within_the_field_of_view() -> None:
    """A cut or cropped head: the training label is what the scanner saw, the whole head stays in the truth."""
    from FetalHeadSegLib.inference.preprocessing import PreprocessingConfig
    from FetalHeadSegLib.phantom import generate_phantom
    from training.data import Case, load_case

    settings = {"dimension": 3, "size": [48, 48, 48], "appearance": "randomised", "factors": {"head_fill": 1.0}}
    phantom = generate_phantom(phantom_config(settings, 4), 4)
    assert phantom.field_of_view is not None
    seen = phantom.field_of_view.array > 0
    assert (phantom.head_mask.array[~seen] > 0).any()  # the head reaches beyond what was imaged
    case = Case(case_id="phantom_4", subject="phantom_4", seed=4)
    preprocessing = PreprocessingConfig()
    for truth, expected in (("whole", phantom.head_mask.array > 0), ("visible", (phantom.head_mask.array > 0) & seen)):
        config = DataConfig(kind="phantom", phantom={**settings, "truth": truth})
        image, label = load_case(case, config, preprocessing)
        np.testing.assert_array_equal(label.array > 0, expected)
        np.testing.assert_array_equal(image.array, phantom.image.array)
    with pytest.raises(ConfigError, match="truth"):
        DataConfig(kind="phantom", phantom={**settings, "truth": "all"})


def test_phantom_appearances_cycle_and_unknown_ones_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from training.evaluate import main
    from training.phantom_evaluation import appearance_cycle

    assert appearance_cycle("mixed") == ("classic", "randomised")
    assert appearance_cycle("classic,randomised,stress") == ("classic", "randomised", "stress")
    with pytest.raises(SystemExit) as exit_info:
        main(["fetal-head-3d-cascade", "--phantoms", "3", "--appearance", "classic,stres"])
    assert exit_info.value.code == 2
    assert "unknown phantom appearance 'stres'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "config_path", sorted((REPOSITORY / "training" / "configs").glob("*.json")), ids=lambda p: p.name
)
def test_every_shipped_training_config_reads(config_path: Path) -> None:
    """A config that names a field the trainer does not know, or an invalid range, fails at read, before any
    phantom is drawn; the ones in the repository (cited by the model cards) must all read."""
    config = read_config(config_path)
    assert config.run_dir and config.iterations > 0


@pytest.mark.parametrize(
    ("model_id", "config_name", "flag"),
    [
        ("hc18-plane-2d", "hc18-plane-2d-finetune.json", "--hc18"),
        ("psfhs-intrapartum-2d", "psfhs-intrapartum-2d-finetune.json", "--psfhs"),
    ],
)
def test_a_training_config_names_the_validation_part_its_shipped_model_was_measured_on(
    model_id: str, config_name: str, flag: str
) -> None:
    """``--run CONFIG`` recomputes the split: as many cases and subjects as the bundle recorded at export."""
    from FetalHeadSegLib.models.bundle import read_bundle
    from FetalHeadSegLib.models.catalog import find_model
    from training.evaluate import validation_case_ids

    data_root = REPOSITORY.parent / "shared" / "data" / ("hc18" if flag == "--hc18" else "psfhs")
    if not data_root.is_dir():
        pytest.skip(f"{data_root} is not available")
    config = read_config(REPOSITORY / "training" / "configs" / config_name)
    train_ids, validation_ids = split_case_ids(config.data)
    assert validation_case_ids(REPOSITORY / "training" / "configs" / config_name, data_root) == validation_ids
    recorded = read_bundle(find_model(model_id).path).model_card["splits"]
    assert (len(train_ids), len(validation_ids)) == (recorded["train_cases"], recorded["validation_cases"])
    subject = {"--hc18": lambda case: case.split("_")[0], "--psfhs": lambda case: case}[flag]
    assert len({subject(c) for c in validation_ids}) == recorded["validation_subjects"]
    assert not {subject(c) for c in validation_ids} & {subject(c) for c in train_ids}


def test_evaluate_names_a_missing_split_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.evaluate import main

    (tmp_path / "run").mkdir()
    assert main(["hc18-plane-2d", "--hc18", str(tmp_path), "--run", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == f"evaluate: error: {tmp_path / 'run'}: no splits.json in this run folder"
    assert main(["hc18-plane-2d", "--hc18", str(tmp_path), "--run", str(tmp_path / "nothing.json")]) == 2
    assert "no such run folder or training config" in capsys.readouterr().err


def _benchmark(name: str) -> Any:
    """A script of ``benchmarks/`` as a module (benchmarks is not a package; its scripts import their sibling
    modules, as when run from that folder)."""
    import importlib.util

    if str(REPOSITORY / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPOSITORY / "benchmarks"))

    spec = importlib.util.spec_from_file_location(name, REPOSITORY / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stress_suite() -> Any:
    """``benchmarks/stress_3d.py`` as a module."""
    return _benchmark("stress_3d")


def test_the_leave_one_family_out_configs_differ_only_in_that_family() -> None:
    """Both train from scratch at the same budget on the same seeds; one holds the family at nominal."""
    from FetalHeadSegLib.phantom.appearance import FAMILIES, nominal_factors

    stress_3d = _stress_suite()
    base = json.loads((REPOSITORY / "training" / "configs" / "fetal-head-3d-cascade-visible.json").read_text())
    configs = stress_3d.leave_out_configs("echogenicity", base, 160, 800, 400000, "runs/leave-out/echogenicity")
    reference, without = configs["reference"], configs["without-echogenicity"]
    for config in (reference, without):
        parsed = TrainConfig.from_dict(config)
        assert parsed.finetune_from is None and parsed.iterations == 800 and parsed.levels == 2
        assert (parsed.data.phantom["count"], parsed.data.phantom["seed"]) == (160, 400000)
    assert reference["data"]["phantom"]["factors"] == base["data"]["phantom"]["factors"]
    held = without["data"]["phantom"]["factors"]
    assert {name: held[name] for name in FAMILIES["echogenicity"]} == nominal_factors("echogenicity")
    assert {k: v for k, v in held.items() if k not in FAMILIES["echogenicity"]} == {
        k: v for k, v in base["data"]["phantom"]["factors"].items() if k not in FAMILIES["echogenicity"]
    }
    differing = {key for key in reference if reference[key] != without[key]}
    assert differing == {"run_dir", "data", "model"}
    assert {k for k in reference["data"] if reference["data"][k] != without["data"][k]} == {"phantom", "cache"}
    with pytest.raises(SystemExit, match="unknown family"):
        stress_3d.leave_out_configs("colour", base, 160, 800, 400000, "runs/x")


class _DrawsTheseLabels:
    """A segmenter that returns given labels (head = 1) and measures nothing."""

    def __init__(self, labels: Any) -> None:
        self.bundle = SimpleNamespace(head_label=1)
        self.labels = labels

    def segment(self, image: Any, options: Any) -> Any:
        review = SimpleNamespace(recommended=False, reasons=[])
        return SimpleNamespace(labels=self.labels, flags=[], review=review, biometry=None)


def test_the_stress_suite_scores_a_head_cut_by_the_field_of_view_also_on_what_was_imaged() -> None:
    """A box crop leaves most of the head unseen: a segmentation of exactly the imaged head scores Dice 1 within the
    field of view, and against the whole head the overlap a part can reach, 2 |part| / (|part| + |whole|)."""
    from FetalHeadSegLib.phantom import generate_phantom
    from FetalHeadSegLib.phantom.stress import STRESS_ROWS, stress_config

    stress_3d = _stress_suite()
    index = next(i for i, row in enumerate(STRESS_ROWS) if row.name == "box-crop")
    phantom = generate_phantom(stress_config(STRESS_ROWS[index], (40, 40, 40)), stress_3d.SEED_BASE + 1000 * index)
    head, imaged = phantom.head_mask.array != 0, phantom.field_of_view.array != 0
    seen = int((head & imaged).sum())
    assert 0 < seen < 0.5 * head.sum()  # the case this row is for: most of the head outside the box
    record = stress_3d.score(_DrawsTheseLabels(phantom.head_mask.with_array((head & imaged).astype(np.uint8))), phantom)
    assert record["dice_imaged"] == 1.0
    assert record["dice"] == pytest.approx(2.0 * seen / (seen + head.sum()))
    assert record["head_imaged_fraction"] == pytest.approx(seen / head.sum())
    whole = stress_3d.score(_DrawsTheseLabels(phantom.head_mask), phantom)
    assert whole["dice"] == 1.0 and whole["dice_imaged"] == 1.0


class _MeasuresTheseLabels(_DrawsTheseLabels):
    """A segmenter that returns given labels and measures them as the engine does."""

    def segment(self, image: Any, options: Any) -> Any:
        from FetalHeadSegLib.measure.biometry import measure_biometry

        result = super().segment(image, options)
        result.biometry = measure_biometry(self.labels)
        return result


def test_the_second_simulator_scores_the_truth_as_exact_and_a_shrunken_head_as_smaller(tmp_path: Path) -> None:
    """The truth mask scores Dice 1 with no HC/BPD/OFD error (the same measurement on both) and its voxel volume
    within 2 % of the egg's analytic volume; one voxel layer less loses Dice and reads a smaller HC."""
    from scipy import ndimage

    from FetalHeadSegLib.models.card import write_card
    from FetalHeadSegLib.phantom.image_space import generate_image_space

    second = _benchmark("second_simulator_3d")
    case = generate_image_space(second.SEED_BASE, size=(56, 52, 48))
    exact = second.score(_MeasuresTheseLabels(case.head_mask), case, tta=False)
    assert exact["dice"] == 1.0 and exact["hd95_mm"] == 0.0
    assert exact["hc_error_pct"] == exact["bpd_error_pct"] == exact["ofd_error_pct"] == 0.0
    assert exact["volume_error_pct"] < 2.0
    eroded = ndimage.binary_erosion(case.head_mask.array != 0).astype(np.uint8)
    smaller = second.score(_MeasuresTheseLabels(case.head_mask.with_array(eroded)), case, tta=False)
    assert smaller["dice"] < 0.97 and smaller["hc_error_pct"] > 1.0 and smaller["volume_error_pct"] > 5.0
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    manifest = {"id": "m", "version": "1", "name": "M", "dimension": 3, "task": "head", "networks": [{}]}
    (bundle / "bundle.json").write_text(json.dumps({**manifest, "model_card": {}}))
    write_card(
        bundle, {"command": "python benchmarks/second_simulator_3d.py", "overall": {"cases": 1}}, "second_simulator"
    )
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "## Second simulator" in card and "`python benchmarks/second_simulator_3d.py`" in card


def test_phantom_evaluation_writes_one_row_per_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--cases-csv on phantoms: one row per case with its seed, appearance (a stress case names its row), Dice and
    errors, the same values the printed summary is made of."""
    import csv

    from training.evaluate import main

    rows_csv = tmp_path / "cases.csv"
    arguments = ["fetal-head-3d-cascade", "--phantoms", "2", "--appearance", "stress,classic"]
    assert main([*arguments, "--cases-csv", str(rows_csv)]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = list(csv.DictReader(rows_csv.open()))
    assert [row["case"] for row in rows] == ["phantom 900000", "phantom 900001"]
    assert [row["appearance"] for row in rows] == ["stress:nominal", "classic"]
    for key in ("dice", "hc_rel_error", "volume_rel_error"):
        values = [float(row[key]) for row in rows]
        assert np.mean(values) == pytest.approx(summary[key]["mean"], abs=1e-4)
    assert all(row["review_recommended"] in ("True", "False") for row in rows)
