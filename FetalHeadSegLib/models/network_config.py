"""Network configurations: plain data (no torch), so bundles can be read and validated without torch.

``usegnet`` is the seed's USegNet (``method.md`` §1.1) made parametric: per resolution level an encoder block,
and per decoder level a transposed-convolution up-sampling plus two convolutions on [up-sampled, skip].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Architecture(StrEnum):
    """The network families :func:`FetalHeadSegLib.models.networks.build_network` can build."""

    USEGNET = "usegnet"
    """The seed's USegNet, 2D or 3D, optional deep supervision and dilation."""
    MOBILENETV2_UNET = "mobilenetv2-unet"
    """A MobileNetV2 encoder with a U-Net decoder (2D)."""


ARCHITECTURES = tuple(architecture.value for architecture in Architecture)


@dataclass(frozen=True)
class NetworkConfig:
    """A segmentation network.

    Attributes:
        architecture: ``usegnet`` (2D/3D, optional deep supervision and dilation) or ``mobilenetv2-unet`` (2D).
        spatial_dims: 2 or 3.
        in_channels: 1 for the image, 2 for image plus the previous cascade level's foreground probability.
        out_channels: number of classes, background included.
        channels: encoder channels per level, full resolution first (usegnet).
        kernel_sizes: convolution kernel per level (usegnet).
        convs_per_level: encoder convolutions per level (usegnet).
        up_channels: output channels of the up-sampling into each decoder level, finest first (usegnet).
        decoder_channels: the two convolutions' output channels at each decoder level, finest first (usegnet).
        dilations: dilation of each encoder convolution per level; () means 1 everywhere (usegnet).
        deep_supervision: auxiliary heads at 1/2, 1/4, ... resolution (usegnet).
        decoder_widths: channels of the five decoder blocks, coarsest first (mobilenetv2-unet).
        width_multiplier: scales the MobileNetV2 encoder's channels (mobilenetv2-unet).
    """

    architecture: Architecture = Architecture.USEGNET
    spatial_dims: int = 3
    in_channels: int = 1
    out_channels: int = 2
    channels: tuple[int, ...] = (32, 64, 128, 128)
    kernel_sizes: tuple[int, ...] = (3, 3, 5, 5)
    convs_per_level: tuple[int, ...] = (2, 3, 3, 3)
    up_channels: tuple[int, ...] = (32, 64, 128)
    decoder_channels: tuple[tuple[int, int], ...] = ((64, 32), (64, 32), (128, 128))
    dilations: tuple[tuple[int, ...], ...] = ()
    deep_supervision: bool = True
    decoder_widths: tuple[int, ...] = (256, 128, 64, 32, 16)
    width_multiplier: float = 1.0

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; expected one of {ARCHITECTURES}")
        object.__setattr__(self, "architecture", Architecture(self.architecture))
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.in_channels < 1 or self.out_channels < 2:
            raise ValueError("in_channels must be >= 1 and out_channels >= 2")
        if self.architecture is Architecture.MOBILENETV2_UNET:
            if self.spatial_dims != 2 or len(self.decoder_widths) != 5:
                raise ValueError("mobilenetv2-unet is 2D and needs five decoder_widths")
            return
        levels = len(self.channels)
        if levels < 2 or len(self.kernel_sizes) != levels or len(self.convs_per_level) != levels:
            raise ValueError("channels, kernel_sizes and convs_per_level need one entry per level (at least 2)")
        if len(self.up_channels) != levels - 1 or len(self.decoder_channels) != levels - 1:
            raise ValueError("up_channels and decoder_channels need one entry per decoder level (levels - 1)")
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel sizes must be odd, got {self.kernel_sizes}")
        if self.dilations and (
            len(self.dilations) != levels
            or any(len(d) != n for d, n in zip(self.dilations, self.convs_per_level, strict=True))
        ):
            raise ValueError("dilations need one tuple per level with one value per convolution")

    @property
    def size_multiple(self) -> int:
        """Every spatial size of the input must be a multiple of this (2 ** number of poolings)."""
        return 32 if self.architecture is Architecture.MOBILENETV2_UNET else 2 ** (len(self.channels) - 1)

    @property
    def has_aux_heads(self) -> bool:
        """True when training sees deep-supervision heads besides the main output (a USegNet with them)."""
        return self.architecture is Architecture.USEGNET and self.deep_supervision

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        """Inverse of :meth:`to_dict` (lists become tuples); unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown network settings: {sorted(unknown)}")
        values = dict(data)
        for key in ("channels", "kernel_sizes", "convs_per_level", "up_channels", "decoder_widths"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        if "decoder_channels" in values:
            values["decoder_channels"] = tuple((int(a), int(b)) for a, b in values["decoder_channels"])
        if "dilations" in values:
            values["dilations"] = tuple(tuple(int(v) for v in level) for level in values["dilations"])
        return cls(**values)

    def with_in_channels(self, in_channels: int) -> NetworkConfig:
        return NetworkConfig.from_dict({**self.to_dict(), "in_channels": in_channels})


SEED_USEGNET_DS = NetworkConfig()
"""The seed-faithful USegNet-DS of ``method.md`` §1.1 (3D, 20.46 M parameters)."""

LIGHT_USEGNET = NetworkConfig(
    channels=(8, 16, 32, 32),
    kernel_sizes=(3, 3, 3, 3),
    convs_per_level=(2, 2, 2, 2),
    up_channels=(8, 16, 32),
    decoder_channels=((16, 8), (16, 8), (32, 32)),
)
"""A light variant for CPUs (not the seed's): same topology, 4x narrower, 3^3 kernels, two convolutions per level."""

DILATED_UNET_2D = NetworkConfig(
    spatial_dims=2,
    channels=(32, 64, 128, 256),
    kernel_sizes=(3, 3, 3, 3),
    convs_per_level=(2, 2, 2, 2),
    up_channels=(32, 64, 128),
    decoder_channels=((32, 32), (64, 64), (128, 128)),
    dilations=((1, 2), (1, 2), (1, 1), (1, 1)),
    deep_supervision=False,
)
"""The 2D dilated-convolution U-Net (``method.md`` §2.2): the second convolution of levels 1-2 has dilation 2."""

MOBILENETV2_UNET_2D = NetworkConfig(architecture=Architecture.MOBILENETV2_UNET, spatial_dims=2, deep_supervision=False)
"""U-Net with a MobileNetV2-style encoder (``method.md`` §2.1), grey input, no pretrained weights."""

PRESETS = {
    "usegnet-ds": SEED_USEGNET_DS,
    "usegnet-light": LIGHT_USEGNET,
    "dilated-unet-2d": DILATED_UNET_2D,
    "mobilenetv2-unet-2d": MOBILENETV2_UNET_2D,
}
"""Named configurations. ``usegnet-ds`` is the seed method; the others are named variants."""
