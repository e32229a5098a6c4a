"""Validation of one cascade level, and the context maps the next level learns from: the inference engine's own
preprocessing, padding, context and forward pass (``FetalHeadSegLib.inference.cascade``), so what training measures is
what ``segment`` returns."""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from FetalHeadSegLib.models.network_config import NetworkConfig
from training.config import TrainConfig
from training.data import CaseArrays


def cascade_multiple(config: TrainConfig) -> int:
    """The size multiple the inference engine pads every level's input to (the exported bundle's)."""
    from FetalHeadSegLib.inference.preprocessing import cascade_size_multiple

    pad_multiples = [config.level_preprocessing(level).pad_multiple for level in range(config.levels)]
    return cascade_size_multiple(math.lcm(*pad_multiples), [config.network.size_multiple])


def predict_probabilities(
    network: nn.Module,
    network_config: NetworkConfig,
    image: np.ndarray,
    context: np.ndarray | None,
    size_multiple: int,
) -> np.ndarray:
    """Softmax probabilities (K, X, Y, Z) of one preprocessed case (image float (X, Y, Z) in the 256 input levels):
    the inference engine's own padding and forward pass (``FetalHeadSegLib.inference.cascade.predict_unpadded``)."""
    from FetalHeadSegLib.inference.cascade import predict_unpadded

    network.eval()
    return predict_unpadded(network, network_config.spatial_dims, size_multiple, image, context)


def predict_context(
    network: nn.Module,
    network_config: NetworkConfig,
    arrays: CaseArrays,
    context: list[np.ndarray] | None,
    size_multiple: int,
) -> list[np.ndarray]:
    """The foreground probability (uint8, value / 255) of every case: the next level's context channel, in the
    same 256 levels the engine's ``context_channel`` gives."""
    from FetalHeadSegLib.inference.cascade import context_channel

    maps = []
    for index in range(len(arrays)):
        previous = None if context is None else np.asarray(context[index], np.float32) / 255.0
        probabilities = predict_probabilities(
            network, network_config, arrays.image_float(index), previous, size_multiple
        )
        maps.append(np.rint(context_channel(probabilities) * 255.0).astype(np.uint8))
    return maps


def evaluate(
    network: nn.Module,
    network_config: NetworkConfig,
    arrays: CaseArrays,
    context: list[np.ndarray] | None,
    task: str,
    size_multiple: int,
) -> dict[str, float]:
    """Mean Dice (foreground classes), HD95 (mm) and HC error (mm; head task) or AoP error (deg; intrapartum) on
    the working grid, after the same clean-up as inference."""
    from FetalHeadSegLib.core.errors import FetalHeadSegError
    from FetalHeadSegLib.core.image import Image, make_ijk_to_ras
    from FetalHeadSegLib.core.tasks import Task, task_spec
    from FetalHeadSegLib.inference.postprocessing import clean_label_map
    from FetalHeadSegLib.measure.aop import angle_of_progression
    from FetalHeadSegLib.measure.biometry import measure_biometry
    from FetalHeadSegLib.measure.metrics import segmentation_metrics

    dice, hd95, errors = [], [], []
    spec = task_spec(task)
    head_value = spec.head_label
    for index in range(len(arrays)):
        previous = None if context is None else np.asarray(context[index], np.float32) / 255.0
        probabilities = predict_probabilities(
            network, network_config, arrays.image_float(index), previous, size_multiple
        )
        values = list(range(1, probabilities.shape[0]))
        predicted = clean_label_map(np.argmax(probabilities, axis=0).astype(np.uint8), values, probabilities)
        truth = arrays.labels[index]
        spacing = arrays.spacings[index]
        is_2d = truth.shape[2] == 1
        squeeze = (lambda a: a[:, :, 0]) if is_2d else (lambda a: a)
        per_class = [
            segmentation_metrics(squeeze(predicted == v), squeeze(truth == v), spacing[:2] if is_2d else spacing)
            for v in values
        ]
        dice.append(float(np.mean([m.dice for m in per_class])))
        head_metric = per_class[values.index(head_value)] if head_value in values else per_class[0]
        if math.isfinite(head_metric.hd95_mm):
            hd95.append(head_metric.hd95_mm)
        grid = make_ijk_to_ras(spacing)
        try:
            if spec.task is Task.INTRAPARTUM:
                errors.append(
                    abs(
                        angle_of_progression(Image(predicted, grid)).aop_deg
                        - angle_of_progression(Image(truth, grid)).aop_deg
                    )
                )
            else:
                errors.append(
                    abs(
                        measure_biometry(Image(spec.head_mask(predicted), grid)).hc_mm
                        - measure_biometry(Image(spec.head_mask(truth), grid)).hc_mm
                    )
                )
        except FetalHeadSegError:
            errors.append(float("nan"))
    key = "aop_error_deg" if spec.task is Task.INTRAPARTUM else "hc_error_mm"
    return {
        "dice": float(np.mean(dice)),
        "hd95_mm": float(np.mean(hd95)) if hd95 else float("nan"),
        key: float(np.nanmean(errors)) if not all(math.isnan(e) for e in errors) else float("nan"),
    }
