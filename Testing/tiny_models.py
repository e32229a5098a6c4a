"""Tiny random-weight model bundles for tests: real networks and bundle files, seconds to build and run."""

from __future__ import annotations

from pathlib import Path

import torch

from FetalHeadSegLib.core.tasks import Task, task_spec
from FetalHeadSegLib.inference.cascade import CascadeConfig
from FetalHeadSegLib.inference.postprocessing import PostprocessingConfig
from FetalHeadSegLib.inference.preprocessing import PreprocessingConfig
from FetalHeadSegLib.models.bundle import ModelBundle, write_bundle
from FetalHeadSegLib.models.network_config import NetworkConfig
from FetalHeadSegLib.models.networks import build_network


def tiny_network(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2) -> NetworkConfig:
    return NetworkConfig(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=(4, 8, 8),
        kernel_sizes=(3, 3, 3),
        convs_per_level=(1, 1, 1),
        up_channels=(4, 8),
        decoder_channels=((4, 4), (8, 8)),
    )


def make_tiny_bundle(
    folder: Path,
    dimension: int = 3,
    levels: int = 2,
    task: str = "head",
    seed: int = 0,
    preprocessing: PreprocessingConfig | None = None,
    model_id: str = "tiny-test-model",
    cascade: CascadeConfig | None = None,
    postprocessing: PostprocessingConfig | None = None,
    tta_by_default: bool = False,
) -> ModelBundle:
    """A bundle of ``levels`` tiny USegNets with random weights (a fixed seed)."""
    torch.manual_seed(seed)
    spec = task_spec(task)
    classes = spec.classes
    configs = [tiny_network(dimension, 1 if level == 0 else 2, classes) for level in range(levels)]
    description = ModelBundle(
        path=folder,
        id=model_id,
        version="0.0.1",
        name="tiny test model",
        dimension=dimension,
        task=Task(task),
        networks=configs,
        preprocessing=preprocessing or PreprocessingConfig(max_size=48),
        labels=list(spec.labels),
        tile_size=32,
        cascade=cascade or CascadeConfig(),
        postprocessing=postprocessing or PostprocessingConfig(),
        model_card={"note": "random weights, for tests only"},
        tta_by_default=tta_by_default,
    )
    return write_bundle(folder, description, [build_network(config).state_dict() for config in configs])
