"""Networks: the seed-faithful USegNet-DS, the named variants, shapes in 2D and 3D, size checks."""

from __future__ import annotations

import pytest
import torch

from FetalHeadSegLib.models.network_config import PRESETS, SEED_USEGNET_DS, NetworkConfig
from FetalHeadSegLib.models.networks import build_network, count_parameters

from tiny_models import tiny_network


def test_seed_usegnet_ds_matches_the_method_description() -> None:
    """method.md §1.1: 20.46 M parameters; stage 2 adds 864 (one more input channel in conv1_1)."""
    stage1 = build_network(SEED_USEGNET_DS)
    assert count_parameters(stage1) == pytest.approx(20.46e6, rel=5e-4)
    stage2 = build_network(SEED_USEGNET_DS.with_in_channels(2))
    assert count_parameters(stage2) - count_parameters(stage1) == 864
    norms = [m for m in stage1.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    assert norms and all(m.affine for m in norms)
    assert all(
        m.bias is None for m in stage1.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size != (1, 1, 1)
    )


@pytest.mark.parametrize("shape", [(8, 16, 24), (16, 8, 8)])
def test_deep_supervision_heads_coarse_to_fine(shape: tuple[int, int, int]) -> None:
    network = build_network(tiny_network(3)).eval()
    outputs = network.forward_with_aux(torch.zeros(1, 1, *shape))
    expected = [tuple(s // 4 for s in shape), tuple(s // 2 for s in shape), shape]
    assert [tuple(o.shape[2:]) for o in outputs] == expected
    assert torch.equal(outputs[-1], network(torch.zeros(1, 1, *shape)))


@pytest.mark.parametrize("name", ["usegnet-light", "dilated-unet-2d", "mobilenetv2-unet-2d"])
def test_variants_give_two_class_logits_at_input_size(name: str) -> None:
    config = PRESETS[name]
    shape = (32, 64, 16) if config.spatial_dims == 3 else (64, 96)
    output = build_network(config).eval()(torch.zeros(1, config.in_channels, *shape))
    assert tuple(output.shape) == (1, 2, *shape)


def test_sizes_that_are_not_multiples_are_refused() -> None:
    network = build_network(tiny_network(3))
    with pytest.raises(ValueError, match="multiple of 4"):
        network(torch.zeros(1, 1, 10, 12, 12))


def test_config_round_trip_and_validation() -> None:
    for config in PRESETS.values():
        assert NetworkConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="one entry per level"):
        NetworkConfig(channels=(8, 16), kernel_sizes=(3,))
    with pytest.raises(ValueError, match="unknown network settings"):
        NetworkConfig.from_dict({"layers": 3})
