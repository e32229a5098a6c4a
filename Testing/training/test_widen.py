"""Widening a trained USegNet (Net2WiderNet): the wider network starts computing exactly what the narrower one did."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from FetalHeadSegLib.models.network_config import LIGHT_USEGNET, NetworkConfig
from FetalHeadSegLib.models.networks import build_network
from training.widen import widen_state

NARROW_2D = NetworkConfig(
    spatial_dims=2,
    in_channels=2,
    channels=(4, 8, 8),
    kernel_sizes=(3, 3, 3),
    convs_per_level=(2, 1, 2),
    up_channels=(4, 8),
    decoder_channels=((4, 4), (8, 8)),
)


def _random(config: NetworkConfig) -> torch.nn.Module:
    network = build_network(config).eval()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.3)
    return network


@pytest.mark.parametrize(
    ("narrow", "widths"),
    [
        # every channel doubled, 3D (the light USegNet to 16-32-64-64)
        (
            LIGHT_USEGNET,
            {
                "channels": (16, 32, 64, 64),
                "up_channels": (16, 32, 64),
                "decoder_channels": ((32, 16), (32, 16), (64, 64)),
            },
        ),
        # uneven: some channels copied once, some twice, some not at all; the decoder's concatenation split apart
        (NARROW_2D, {"channels": (6, 20, 9), "up_channels": (7, 8), "decoder_channels": ((5, 12), (9, 8))}),
    ],
)
def test_a_wider_usegnet_starts_with_every_output_of_the_narrower_one(narrow: NetworkConfig, widths: dict) -> None:
    torch.manual_seed(0)
    wide = dataclasses.replace(narrow, **widths)
    source, target = _random(narrow), build_network(wide).eval()
    target.load_state_dict(widen_state(source.state_dict(), narrow, wide))
    image = torch.randn(1, narrow.in_channels, *([16] * narrow.spatial_dims))
    with torch.no_grad():
        for before, after in zip(source.forward_with_aux(image), target.forward_with_aux(image), strict=True):
            torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))


def test_noise_lets_the_copies_differ_and_changes_the_output_a_little() -> None:
    torch.manual_seed(1)
    wide = dataclasses.replace(
        NARROW_2D, channels=(8, 16, 16), up_channels=(8, 16), decoder_channels=((8, 8), (16, 16))
    )
    source = _random(NARROW_2D)
    state = widen_state(source.state_dict(), NARROW_2D, wide, noise=0.01, generator=torch.Generator().manual_seed(0))
    first = state["encoder.0.0.0.weight"]
    assert not torch.equal(first[:4], first[4:])  # the copies are no longer equal...
    torch.testing.assert_close(first[:4], first[4:], rtol=0, atol=0.1 * float(first.std()))  # ...but nearly
    assert torch.equal(state["encoder.0.0.1.weight"][:4], state["encoder.0.0.1.weight"][4:])  # norms stay copies
    target = build_network(wide).eval()
    target.load_state_dict(state)
    image = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        change = (target(image) - source(image)).abs().max() / source(image).abs().max()
    assert 0 < change < 0.1


def test_only_a_wider_network_of_the_same_topology_can_be_widened() -> None:
    state = build_network(NARROW_2D).state_dict()
    with pytest.raises(ValueError, match="kernel_sizes"):
        widen_state(state, NARROW_2D, dataclasses.replace(NARROW_2D, kernel_sizes=(5, 3, 3)))
    with pytest.raises(ValueError, match="fewer channels"):
        widen_state(state, NARROW_2D, dataclasses.replace(NARROW_2D, channels=(2, 8, 8)))
