"""The segmentation networks in PyTorch: USegNet (seed, 2D/3D), its cascade, a MobileNetV2-style 2D U-Net, and
the average of several networks' probabilities (an ensemble's cascade level).

Tensors are (N, C, X, Y[, Z]). Every network returns 2-class (or C-class) logits; ``forward()`` gives the main
output only, ``forward_with_aux()`` the deep-supervision outputs coarse to fine, the main output last.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from FetalHeadSegLib.models.network_config import Architecture, NetworkConfig


def _layers(spatial_dims: int) -> tuple[Any, Any, Any, Any]:
    if spatial_dims == 3:
        return nn.Conv3d, nn.ConvTranspose3d, nn.InstanceNorm3d, nn.MaxPool3d
    return nn.Conv2d, nn.ConvTranspose2d, nn.InstanceNorm2d, nn.MaxPool2d


def _conv_block(dims: int, c_in: int, c_out: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    """Convolution ("same" padding, no bias) + InstanceNorm (affine) + ReLU."""
    conv, _, norm, _ = _layers(dims)
    return nn.Sequential(
        conv(c_in, c_out, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
        norm(c_out, affine=True),
        nn.ReLU(inplace=True),
    )


def _up_block(dims: int, c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    """Stride-2 transposed convolution giving exactly twice the size, + InstanceNorm + ReLU."""
    _, transposed, norm, _ = _layers(dims)
    return nn.Sequential(
        transposed(c_in, c_out, kernel, stride=2, padding=kernel // 2, output_padding=1, bias=False),
        norm(c_out, affine=True),
        nn.ReLU(inplace=True),
    )


def check_input_size(shape: tuple[int, ...], multiple: int) -> None:
    """Raise ValueError unless every spatial size is a multiple of ``multiple``.

    Example: with 3 poolings (multiple 8), a 100x120x90 volume must be padded to 104x120x96 first.
    """
    bad = [size for size in shape if size % multiple]
    if bad:
        raise ValueError(f"spatial size {tuple(shape)} must be a multiple of {multiple} in every axis; pad it first")


class USegNet(nn.Module):
    """The seed's USegNet, parametric in levels, channels, kernels and dimension (``method.md`` §1.1)."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        if config.architecture is not Architecture.USEGNET:
            raise ValueError(f"USegNet cannot build architecture {config.architecture!r}")
        self.config = config
        self.checkpointing = False  # trade compute for memory in training (torch.utils.checkpoint per block)
        dims, levels = config.spatial_dims, len(config.channels)
        conv, _, _, pool = _layers(dims)
        self.encoder = nn.ModuleList()
        c_in = config.in_channels
        for level in range(levels):
            dilations = config.dilations[level] if config.dilations else (1,) * config.convs_per_level[level]
            blocks = []
            for index in range(config.convs_per_level[level]):
                blocks.append(
                    _conv_block(dims, c_in, config.channels[level], config.kernel_sizes[level], dilations[index])
                )
                c_in = config.channels[level]
            self.encoder.append(nn.Sequential(*blocks))
        self.pool = pool(2, 2)
        self.up = nn.ModuleDict()
        self.decoder = nn.ModuleDict()
        below = config.channels[-1]
        for level in reversed(range(levels - 1)):
            kernel = config.kernel_sizes[level]
            first, second = config.decoder_channels[level]
            self.up[str(level)] = _up_block(dims, below, config.up_channels[level], kernel)
            self.decoder[str(level)] = nn.Sequential(
                _conv_block(dims, config.up_channels[level] + config.channels[level], first, kernel),
                _conv_block(dims, first, second, kernel),
            )
            below = second
        self.head = conv(config.decoder_channels[0][1], config.out_channels, 1)
        self.aux_heads = nn.ModuleDict()
        if config.deep_supervision:
            self.aux_heads[str(levels - 1)] = conv(config.channels[-1], config.out_channels, 1)
            for level in range(1, levels - 1):
                self.aux_heads[str(level)] = conv(config.decoder_channels[level][1], config.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Main logits, shape (N, out_channels, *spatial)."""
        return self._run(x, with_aux=False)[-1]

    def forward_with_aux(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Auxiliary logits coarse to fine (1/8, 1/4, 1/2 for the seed), then the main logits."""
        if not self.config.deep_supervision:
            raise ValueError("this network has no deep-supervision heads")
        return self._run(x, with_aux=True)

    def _run(self, x: torch.Tensor, with_aux: bool) -> list[torch.Tensor]:
        check_input_size(tuple(x.shape[2:]), self.config.size_multiple)
        levels = len(self.config.channels)
        skips = []
        for level, block in enumerate(self.encoder):
            x = self._block(block, x if level == 0 else self.pool(x))
            skips.append(x)
        outputs = [self.aux_heads[str(levels - 1)](x)] if with_aux else []
        for level in reversed(range(levels - 1)):
            x = self._block(self.decoder[str(level)], torch.cat([self.up[str(level)](x), skips[level]], dim=1))
            if with_aux and level > 0:
                outputs.append(self.aux_heads[str(level)](x))
        outputs.append(self.head(x))
        return outputs

    def _block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and self.training:
            from torch.utils.checkpoint import checkpoint

            return checkpoint(block, x, use_reentrant=False)
        return block(x)


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise (stride s), 1x1 linear projection; residual if shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


# (expansion t, channels c, repeats n, first stride s) of MobileNetV2 (Sandler et al., CVPR 2018).
_MOBILENETV2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2UNet(nn.Module):
    """2D U-Net whose encoder is MobileNetV2 (taps at strides 2-32: 16, 24, 32, 96, 1280 channels at width 1),
    with the standard U-Net decoder (nearest up-sampling, two 3x3 conv-BN-ReLU per block) and a 3x3 head.
    Built from scratch: no pretrained weights are downloaded."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        if config.architecture is not Architecture.MOBILENETV2_UNET:
            raise ValueError(f"MobileNetV2UNet cannot build architecture {config.architecture!r}")
        self.config = config

        def width(channels: int) -> int:
            return max(8, int(round(channels * config.width_multiplier / 8)) * 8)

        stem = width(32)
        blocks: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(config.in_channels, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU6(inplace=True)
            )
        ]
        c_in, self.tap_indices, tap_channels = stem, [], []
        for expansion, channels, repeats, stride in _MOBILENETV2_SETTINGS:
            for index in range(repeats):
                blocks.append(_InvertedResidual(c_in, width(channels), stride if index == 0 else 1, expansion))
                c_in = width(channels)
            if channels in (16, 24, 32, 96):
                self.tap_indices.append(len(blocks) - 1)
                tap_channels.append(c_in)
        last = max(1280, width(1280)) if config.width_multiplier > 1 else 1280
        blocks.append(nn.Sequential(nn.Conv2d(c_in, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)))
        self.tap_indices.append(len(blocks) - 1)
        tap_channels.append(last)
        self.encoder = nn.ModuleList(blocks)
        skips = [*reversed(tap_channels[:-1]), 0]
        self.decoder = nn.ModuleList()
        below = tap_channels[-1]
        for skip, channels in zip(skips, config.decoder_widths, strict=True):
            self.decoder.append(
                nn.Sequential(
                    nn.Conv2d(below + skip, channels, 3, padding=1, bias=False),
                    nn.BatchNorm2d(channels),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                    nn.BatchNorm2d(channels),
                    nn.ReLU(inplace=True),
                )
            )
            below = channels
        self.head = nn.Conv2d(below, config.out_channels, 3, padding=1)

    @property
    def encoder_parameters(self) -> list[nn.Parameter]:
        """The encoder's parameters (frozen in decoder-only fine-tuning)."""
        return list(self.encoder.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(tuple(x.shape[2:]), 32)
        taps = []
        for index, block in enumerate(self.encoder):
            x = block(x)
            if index in self.tap_indices:
                taps.append(x)
        x = taps[-1]
        skips = [*reversed(taps[:-1]), None]
        for block, skip in zip(self.decoder, skips, strict=True):
            x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(x if skip is None else torch.cat([x, skip], dim=1))
        return self.head(x)


def build_network(config: NetworkConfig) -> nn.Module:
    """The network described by ``config``."""
    builders: dict[Architecture, type[nn.Module]] = {
        Architecture.USEGNET: USegNet,
        Architecture.MOBILENETV2_UNET: MobileNetV2UNet,
    }
    return builders[config.architecture](config)


class AveragedProbabilities(nn.Module):
    """Several networks of one cascade level as one: ``forward`` returns the log of the mean of their softmax
    probabilities, so the softmax that every caller applies to a network's output gives that mean exactly.

    The members take the same input and give the same classes; their architectures may differ.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an average needs at least two networks, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([torch.softmax(member(x).float(), dim=1) for member in self.members]).mean(dim=0)
        return torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
