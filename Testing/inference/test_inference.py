"""The inference engine with tiny random-weight models: grids, fallbacks, cancellation, TTA, bad inputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from FetalHeadSegLib.core.errors import Cancelled, DeviceError, InputImageError
from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
from FetalHeadSegLib.core.tasks import task_spec
from FetalHeadSegLib.inference.engine import InferenceOptions, Segmenter, load_model
from FetalHeadSegLib.inference.outcome import TTA_DISAGREEMENT_LIMIT, tta_disagreement_limit, tta_flags
from FetalHeadSegLib.inference.postprocessing import PostprocessingConfig, clean_label_map, decide_labels
from FetalHeadSegLib.inference.preprocessing import PreprocessingConfig
from FetalHeadSegLib.measure.review import CHECKS, ReviewPolicy, ReviewSignals

from shapes import circle, intrapartum_labels, make_ellipsoid, rotation_matrix
from tiny_models import make_tiny_bundle


@pytest.fixture(scope="module")
def model_3d(tmp_path_factory: pytest.TempPathFactory) -> Segmenter:
    return load_model(make_tiny_bundle(tmp_path_factory.mktemp("m3") / "model"), "cpu")


@pytest.fixture(scope="module")
def model_3d_native(tmp_path_factory: pytest.TempPathFactory) -> Segmenter:
    """No resampling: the network works on the image's own grid (the seed's rule)."""
    bundle = make_tiny_bundle(tmp_path_factory.mktemp("m3n") / "model", preprocessing=PreprocessingConfig())
    return load_model(bundle, "cpu")


def noisy_head(
    shape_mm: tuple[float, float, float] = (20.0, 16.0, 13.0), spacing=(0.9, 1.1, 1.6), direction=None
) -> Image:
    head = make_ellipsoid(
        shape_mm, rotation=rotation_matrix((1, 0, 1), 0.3), spacing_mm=spacing, direction_ras=direction
    )
    noise = np.random.default_rng(0).random(head.image.shape).astype(np.float32)
    return head.image.with_array(head.image.array * 2.0 + noise)


@pytest.mark.parametrize("direction", [None, rotation_matrix((0.2, 1.0, 0.3), 0.7)])
def test_outputs_lie_on_the_exact_input_grid(model_3d: Segmenter, direction) -> None:
    image = noisy_head(direction=direction)
    result = model_3d.segment(image)
    for output in (result.labels, result.probability):
        assert output.shape == image.shape
        np.testing.assert_array_equal(output.ijk_to_ras, image.ijk_to_ras)
    assert result.labels.array.dtype == np.uint8 and set(np.unique(result.labels.array)) <= {0, 1}
    assert 0.0 <= result.probability.array.min() and result.probability.array.max() <= 1.0
    assert result.device == "cpu" and result.seconds > 0


@pytest.mark.parametrize("shape", [(13, 22, 9), (40, 17, 31)])
def test_odd_sizes_without_resampling(model_3d_native: Segmenter, shape: tuple[int, int, int]) -> None:
    array = np.random.default_rng(1).random(shape).astype(np.float32)
    result = model_3d_native.segment(Image(array, make_ijk_to_ras((0.8, 0.8, 1.2))))
    assert result.labels.shape == shape


def test_2d_frames_and_intrapartum_labels(tmp_path: Path) -> None:
    model = load_model(make_tiny_bundle(tmp_path / "ip", dimension=2, task="intrapartum"), "cpu")
    frame = Image(np.random.default_rng(2).random((70, 50, 1)).astype(np.float32), make_ijk_to_ras((0.3, 0.3, 1)))
    result = model.segment(frame)
    assert result.labels.shape == (70, 50, 1)
    assert set(np.unique(result.labels.array)) <= {0, 1, 2}
    with pytest.raises(InputImageError, match="is a 3D volume, but model tiny-test-model is 2D"):
        model.segment(noisy_head())


def test_whole_and_single_tile_inference_agree(model_3d_native: Segmenter) -> None:
    image = noisy_head(spacing=(1.2, 1.2, 1.2))
    whole = model_3d_native.segment(image, InferenceOptions(biometry=False))
    one_tile = model_3d_native.segment(image, InferenceOptions(biometry=False, tile_size=256))
    np.testing.assert_allclose(one_tile.probability.array, whole.probability.array, atol=1e-5)
    tiled = model_3d_native.segment(image, InferenceOptions(biometry=False, tile_size=16))
    assert tiled.probability.shape == image.shape  # InstanceNorm statistics differ per tile: values may too


class _RunsOutOfMemory(torch.nn.Module):
    """Wraps a network and raises CUDA's out-of-memory error for inputs larger than ``limit`` voxels."""

    def __init__(self, network: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.network, self.limit, self.calls = network, limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape[2:]))
        if x[0, 0].numel() > self.limit:
            raise torch.cuda.OutOfMemoryError("simulated: CUDA out of memory")
        return self.network(x)


def test_out_of_memory_falls_back_to_tiles_and_says_so(tmp_path: Path) -> None:
    model = load_model(make_tiny_bundle(tmp_path / "m", preprocessing=PreprocessingConfig()), "cpu")
    image = noisy_head(spacing=(1.2, 1.2, 1.2))
    expected = model.segment(image, InferenceOptions(biometry=False, tile_size=32))
    model.networks = [_RunsOutOfMemory(network, 32**3) for network in model.networks]
    result = model.segment(image, InferenceOptions(biometry=False))
    assert [flag.code for flag in result.flags] == ["oom_fallback", "oom_fallback"]  # one per cascade level
    np.testing.assert_allclose(result.probability.array, expected.probability.array, atol=1e-5)
    assert max(np.prod(s) for s in model.networks[0].calls[1:]) <= 32**3


def test_cancel_between_steps(model_3d: Segmenter) -> None:
    stages: list[str] = []

    def progress(stage: str, fraction: float, message: str) -> None:
        stages.append(stage)

    with pytest.raises(Cancelled):
        model_3d.segment(noisy_head(), progress=progress, cancel=lambda: "stage1" in stages)
    assert stages == ["load", "stage1"]


def test_tta_gives_an_uncertainty_map(model_3d: Segmenter) -> None:
    result = model_3d.segment(noisy_head(), InferenceOptions(tta=True))
    assert result.uncertainty is not None and result.uncertainty.shape == result.labels.shape
    assert 0.0 <= result.uncertainty.array.min() and result.uncertainty.array.max() <= 0.5


class _RecordsInputs(torch.nn.Module):
    """Wraps a network and keeps a copy of every input it sees."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.inputs = network, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.network(x)


@pytest.mark.parametrize("task", ["intrapartum", "head"])
def test_tta_on_frames_mirrors_left_right_only(tmp_path: Path, task: str) -> None:
    """The probe stays at the top of a 2D frame (transperineal or standard plane): TTA may mirror X, never the beam
    axis Y."""
    model = load_model(make_tiny_bundle(tmp_path / "frame", dimension=2, task=task), "cpu")
    model.networks = [_RecordsInputs(network) for network in model.networks]
    frame = Image(np.random.default_rng(3).random((48, 40, 1)).astype(np.float32), make_ijk_to_ras((0.3, 0.3, 1)))
    result = model.segment(frame, InferenceOptions(tta=True))
    original, mirrored = model.networks[0].inputs
    torch.testing.assert_close(mirrored, torch.flip(original, dims=[2]))  # (N, C, X, Y): X mirrored
    assert result.uncertainty is not None


def test_a_frame_without_tta_is_its_own_result_and_its_mirror_is_only_measured(tmp_path: Path) -> None:
    """The mirror check runs the left-right mirror of a 2D frame through the networks but leaves the result exactly
    what the frame alone gives (no average, no uncertainty map); switched off, the networks see the frame once."""
    model = load_model(make_tiny_bundle(tmp_path / "hc", dimension=2), "cpu")
    frame = Image(np.random.default_rng(5).random((48, 40, 1)).astype(np.float32), make_ijk_to_ras((0.3, 0.3, 1)))
    model.networks = [_RecordsInputs(network) for network in model.networks]
    alone = model.segment(frame, InferenceOptions(mirror_check=False))
    assert len(model.networks[0].inputs) == 1
    checked = model.segment(frame)
    original, mirrored = model.networks[0].inputs[1:]
    torch.testing.assert_close(mirrored, torch.flip(original, dims=[2]))
    np.testing.assert_array_equal(checked.probability.array, alone.probability.array)
    np.testing.assert_array_equal(checked.labels.array, alone.labels.array)
    assert checked.uncertainty is None and not any(flag.code == "tta_disagreement_high" for flag in checked.flags)


@pytest.mark.parametrize("by_default", [False, True])
def test_a_run_that_does_not_choose_flips_as_its_model_recommends(tmp_path: Path, by_default: bool) -> None:
    """``InferenceOptions.tta`` None follows the bundle's ``tta_by_default``: the result is then exactly the one asked
    for explicitly (the same probabilities, an uncertainty map only with flips), and says which it is; an explicit
    choice overrides the model's."""
    model = load_model(make_tiny_bundle(tmp_path / "hc", dimension=2, tta_by_default=by_default), "cpu")
    frame = Image(np.random.default_rng(6).random((48, 40, 1)).astype(np.float32), make_ijk_to_ras((0.3, 0.3, 1)))
    chosen = model.segment(frame)
    explicit = {tta: model.segment(frame, InferenceOptions(tta=tta)) for tta in (False, True)}
    assert explicit[True].uncertainty is not None and explicit[False].uncertainty is None
    assert not np.array_equal(explicit[True].probability.array, explicit[False].probability.array)
    np.testing.assert_array_equal(chosen.probability.array, explicit[by_default].probability.array)
    assert (chosen.uncertainty is not None) is by_default
    assert chosen.tta is by_default and chosen.provenance()["tta"] is by_default
    assert explicit[not by_default].provenance()["tta"] is (not by_default)


def test_each_flipped_pass_is_measured_alone_for_the_aop_spread(tmp_path: Path) -> None:
    """Two passes with the head in two places spread by the difference of their analytic angles (the tangent from
    the apex to a circle) and of their circumferences; one pass alone, or no TTA, gives no spread."""
    from FetalHeadSegLib.inference.outcome import flip_spreads
    from FetalHeadSegLib.inference.roi_cascade import CascadeOutput
    from FetalHeadSegLib.measure.aop import aop_from_points

    model = load_model(make_tiny_bundle(tmp_path / "ip", dimension=2, task="intrapartum"), "cpu")
    heads = [((-5.0, 35.0), 25.0), ((-15.0, 35.0), 20.0)]
    frames = [intrapartum_labels(head_center=centre, radius=radius) for centre, radius in heads]
    angles = [aop_from_points((-30.0, 0.0), (0.0, 0.0), circle(centre, radius))[0] for centre, radius in heads]
    one_hot = [np.stack([frame.array == value for value in (0, 1, 2)]).astype(np.float32) for frame in frames]

    def output(passes: list[np.ndarray] | None) -> CascadeOutput:
        return CascadeOutput(one_hot[0], None, None, [], pass_probabilities=None if passes is None else lambda: passes)

    spreads = flip_spreads(model.bundle, frames[0], output(one_hot))
    assert angles[0] - angles[1] > 10.0
    assert spreads.aop_deg == pytest.approx(abs(angles[0] - angles[1]), abs=0.6)
    assert spreads.hc_mm == pytest.approx(2 * np.pi * (25.0 - 20.0), rel=0.03)
    assert flip_spreads(model.bundle, frames[0], output(one_hot[:1])) == (None, None)
    assert flip_spreads(model.bundle, frames[0], output(None)) == (None, None)


def test_flipped_passes_of_different_sizes_recommend_review_on_a_head_frame(tmp_path: Path) -> None:
    """A standard-plane model whose mirrored passes find heads of analytic circumferences 2 pi 12 and 2 pi 9 mm:
    the spread is their difference, and the uncalibrated policy (5 mm) recommends review for it."""
    from FetalHeadSegLib.inference.outcome import flip_spreads
    from FetalHeadSegLib.inference.roi_cascade import CascadeOutput
    from FetalHeadSegLib.measure.review import ReviewPolicy, ReviewSignals, decide

    model = load_model(make_tiny_bundle(tmp_path / "hc", dimension=2), "cpu")
    x, y = np.meshgrid(np.arange(120) * 0.25, np.arange(100) * 0.25, indexing="ij")
    frame = Image(np.zeros((120, 100, 1), np.float32), make_ijk_to_ras((0.25, 0.25, 1.0)))
    passes = []
    for radius_mm in (12.0, 9.0):
        head = ((x - 15.0) ** 2 + (y - 12.5) ** 2 <= radius_mm**2).astype(np.float32)[:, :, None]
        passes.append(np.stack([1.0 - head, head]))
    spreads = flip_spreads(
        model.bundle, frame, CascadeOutput(passes[0], None, None, [], pass_probabilities=lambda: passes)
    )
    assert spreads.aop_deg is None
    assert spreads.hc_mm == pytest.approx(2 * np.pi * 3.0, rel=0.03)
    review = decide(ReviewSignals(hc_flip_spread_mm=spreads.hc_mm), ReviewPolicy())
    assert review.reasons == ["flipped_sizes_disagree"]
    # a run without TTA hands its own measurement of the unflipped pass in: that pass is not measured again
    known = task_spec("head").measure(frame.with_array((passes[0][1] > 0.5).astype(np.uint8)), None)
    unmeasurable_first = [np.zeros_like(passes[0]), passes[1]]
    reused = flip_spreads(
        model.bundle,
        frame,
        CascadeOutput(passes[0], None, None, [], pass_probabilities=lambda: unmeasurable_first),
        known,
    )
    assert reused.hc_mm == pytest.approx(spreads.hc_mm, abs=1e-6)


@pytest.mark.parametrize("kind", ["constant", "nan"])
def test_bad_images_are_refused_before_inference(model_3d: Segmenter, kind: str) -> None:
    array = np.ones((16, 16, 16), np.float32) if kind == "constant" else np.full((16, 16, 16), np.nan, np.float32)
    with pytest.raises(InputImageError):
        model_3d.segment(Image(array, np.eye(4)), source="bad.nii.gz")


def test_unavailable_device_is_an_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        load_model(make_tiny_bundle(tmp_path / "m"), "cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        load_model(make_tiny_bundle(tmp_path / "m"), "tpu")


class _OutOfMemoryUntilMoved(torch.nn.Module):
    """Raises CUDA's out-of-memory error on every call until ``.to()`` moves it (as on a full GPU)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.moved = network, False

    def to(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.moved = True
        return super().to(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.moved:
            raise torch.cuda.OutOfMemoryError("simulated: CUDA out of memory")
        return self.network(x)


def test_a_cpu_fallback_never_moves_the_shared_model_and_provenance_tells_the_truth(tmp_path: Path) -> None:
    model = load_model(make_tiny_bundle(tmp_path / "m", preprocessing=PreprocessingConfig()), "cpu")
    image = noisy_head(spacing=(1.2, 1.2, 1.2))
    expected = model.segment(image, InferenceOptions(biometry=False))
    shared = [_OutOfMemoryUntilMoved(network) for network in model.networks]
    model.networks = list(shared)
    model.device = torch.device("cuda")  # what a GPU segmenter holds; its networks "run out of memory"
    for _ in range(2):  # the second image must not inherit the first one's fallback
        result = model.segment(image, InferenceOptions(biometry=False))
        assert result.device == "cpu" and result.provenance()["device"] == "cpu"
        assert [flag.code for flag in result.flags] == ["oom_fallback", "oom_fallback"]
        np.testing.assert_allclose(result.probability.array, expected.probability.array, atol=1e-5)
        assert all(a is b for a, b in zip(model.networks, shared, strict=True))
        assert not any(network.moved for network in shared)


def test_training_validation_and_segment_give_identical_probabilities(tmp_path: Path) -> None:
    """The two paths share one preprocessing, padding, context and forward pass: bit-for-bit the same numbers."""
    from training.data import CaseArrays, preprocess_case
    from training.validation import predict_context, predict_probabilities

    bundle = make_tiny_bundle(tmp_path / "m", preprocessing=PreprocessingConfig())
    model = load_model(bundle, "cpu")
    image = noisy_head(shape_mm=(20.0, 16.0, 13.0), spacing=(1.1, 1.2, 1.3))
    label = image.with_array(np.zeros(image.shape, np.uint8))
    values, labels, spacing = preprocess_case(image, label, bundle.preprocessing)
    arrays = CaseArrays(["case"], ["case"], [values], [labels], [spacing])
    context = predict_context(model.networks[0], bundle.networks[0], arrays, None, model.size_multiple)
    last = predict_probabilities(
        model.networks[1],
        bundle.networks[1],
        arrays.image_float(0),
        context[0].astype(np.float32) / 255.0,
        model.size_multiple,
    )
    result = model.segment(image, InferenceOptions(biometry=False))
    np.testing.assert_array_equal(result.probability.array, (1.0 - last[0]).astype(np.float32))


def test_the_bundles_head_threshold_decides_the_head(tmp_path: Path) -> None:
    """With ``postprocessing.head_threshold`` the head is where the head's probability exceeds it (then the clean-up
    every model gets), recomputed here from the probability map the result carries; without it, the argmax."""
    image = noisy_head()
    labels = {}
    for threshold in (None, 0.45):
        bundle = make_tiny_bundle(tmp_path / str(threshold), postprocessing=PostprocessingConfig(None, threshold))
        result = load_model(bundle, "cpu").segment(image, InferenceOptions(biometry=False))
        head = result.probability.array.astype(np.float64)
        probabilities = np.stack([1.0 - head, head])
        expected = clean_label_map(decide_labels(probabilities, 1, threshold), [1], probabilities)
        np.testing.assert_array_equal(result.labels.array, expected)
        labels[threshold] = result.labels.array
    assert (labels[0.45] == 1).sum() > (labels[None] == 1).sum()


def test_the_flip_flag_fires_where_the_models_calibrated_review_rule_does(tmp_path: Path) -> None:
    """A result made with flips is flagged for their disagreement beyond the model's calibrated limit, exactly where
    the review's own rule for that signal recommends review; a model without such a limit keeps the default."""
    bundle = make_tiny_bundle(tmp_path / "m")
    assert tta_disagreement_limit(bundle) == TTA_DISAGREEMENT_LIMIT
    assert tta_flags(0.06, tta_disagreement_limit(bundle))
    calibrated = replace(bundle, review_tta=ReviewPolicy(max_tta_disagreement=0.1, calibration={"cases": 10}))
    rule = next(check for check in CHECKS if check.signal == "tta_disagreement")
    for share in (0.04, 0.06, 0.09, 0.11, 0.3):
        review_fires = rule.fires(ReviewSignals(tta_disagreement=share), calibrated.review_policy(tta=True))
        assert bool(tta_flags(share, tta_disagreement_limit(calibrated))) == review_fires, share
    rule_off = replace(bundle, review_tta=ReviewPolicy(max_tta_disagreement=None, calibration={"cases": 10}))
    assert tta_disagreement_limit(rule_off) == TTA_DISAGREEMENT_LIMIT
