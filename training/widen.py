"""A trained network's weights made to fit a wider network that first computes what it did: more input channels
(a cascade level's context, starting at zero), or for a USegNet more channels everywhere, same topology
(Net2WiderNet: Chen, Goodfellow and Shlens, "Net2Net: accelerating learning via knowledge transfer", ICLR 2016).

Every channel of the wider network copies a channel of the narrower one (new channel ``j`` copies old channel
``j mod C``); a layer that reads copied channels divides their weights by the number of copies, so the wider network
computes exactly what the narrower one did. InstanceNorm normalises each channel on its own, so a copy keeps its
original's statistics. Copies would stay equal under training, so small noise is added to the copied convolutions'
weights to let them drift apart (``noise``, relative to each tensor's standard deviation).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from FetalHeadSegLib.models.network_config import Architecture, NetworkConfig


def _layout(config: NetworkConfig) -> dict[str, tuple[tuple[int, ...], int, bool]]:
    """Per weight name: the sizes of the parts of its input channels (a concatenation has two), its output channels,
    and whether it is a transposed convolution (input and output swapped in the tensor). Norm parameters have
    no input parts."""
    layout: dict[str, tuple[tuple[int, ...], int, bool]] = {}

    def conv(name: str, parts: tuple[int, ...], out: int, transposed: bool = False) -> None:
        layout[f"{name}.0.weight"] = (parts, out, transposed)
        layout[f"{name}.1.weight"] = ((), out, False)
        layout[f"{name}.1.bias"] = ((), out, False)

    levels = len(config.channels)
    c_in = config.in_channels
    for level in range(levels):
        for index in range(config.convs_per_level[level]):
            conv(f"encoder.{level}.{index}", (c_in,), config.channels[level])
            c_in = config.channels[level]
    below = config.channels[-1]
    for level in reversed(range(levels - 1)):
        first, second = config.decoder_channels[level]
        conv(f"up.{level}", (below,), config.up_channels[level], transposed=True)
        conv(f"decoder.{level}.0", (config.up_channels[level], config.channels[level]), first)
        conv(f"decoder.{level}.1", (first,), second)
        below = second
    layout["head.weight"] = ((config.decoder_channels[0][1],), config.out_channels, False)
    layout["head.bias"] = ((), config.out_channels, False)
    if config.deep_supervision:
        heads = {levels - 1: config.channels[-1]} | {
            level: config.decoder_channels[level][1] for level in range(1, levels - 1)
        }
        for level, channels in heads.items():
            layout[f"aux_heads.{level}.weight"] = ((channels,), config.out_channels, False)
            layout[f"aux_heads.{level}.bias"] = ((), config.out_channels, False)
    return layout


def check_widenable(narrow: NetworkConfig, wide: NetworkConfig) -> None:
    """Raise ValueError unless ``wide`` is ``narrow`` with at least as many channels everywhere."""
    if narrow.architecture is not Architecture.USEGNET or wide.architecture is not Architecture.USEGNET:
        raise ValueError("only a USegNet can be widened")
    same = ("spatial_dims", "in_channels", "out_channels", "kernel_sizes", "convs_per_level", "dilations")
    differ = [key for key in same if getattr(narrow, key) != getattr(wide, key)]
    if differ or narrow.deep_supervision != wide.deep_supervision or len(narrow.channels) != len(wide.channels):
        raise ValueError(f"the networks differ in more than their widths ({', '.join(differ) or 'levels'})")
    sizes = zip(_layout(narrow).values(), _layout(wide).values(), strict=True)
    if any(out_n > out_w or any(map(int.__gt__, in_n, in_w)) for (in_n, out_n, _), (in_w, out_w, _) in sizes):
        raise ValueError("the wider network has fewer channels than the narrower one somewhere")


def _copies(old: int, new: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which old channel each new channel copies, and how many copies that old channel has."""
    source = torch.arange(new) % old
    return source, torch.bincount(source, minlength=old)[source]


def widen_state(
    state: dict[str, torch.Tensor],
    narrow: NetworkConfig,
    wide: NetworkConfig,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """``state`` (weights of a ``narrow`` USegNet) made to fit a ``wide`` one, computing the same function when
    ``noise`` is 0.

    Raises:
        ValueError: the networks differ in more than their widths, or ``wide`` is narrower somewhere.
    """
    check_widenable(narrow, wide)
    narrow_layout, wide_layout = _layout(narrow), _layout(wide)
    widened = {}
    for key, value in state.items():
        (parts_old, out_old, transposed), (parts_new, out_new, _) = narrow_layout[key], wide_layout[key]
        out_dim, in_dim = (1, 0) if transposed else (0, 1)
        source, _ = _copies(out_old, out_new)
        tensor = value.float().index_select(out_dim if value.ndim > 1 else 0, source)
        if parts_old:
            pieces, offset = [], 0
            for old, new in zip(parts_old, parts_new, strict=True):
                source, copies = _copies(old, new)
                shape = [1] * tensor.ndim
                shape[in_dim] = new
                pieces.append(tensor.index_select(in_dim, offset + source) / copies.view(shape).to(tensor.dtype))
                offset += old
            tensor = torch.cat(pieces, dim=in_dim)
            if noise > 0 and tensor.shape != value.shape:
                scale = noise * float(value.float().std())
                tensor = tensor + scale * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
        widened[key] = tensor.to(value.dtype)
    return widened


WIDEN_NOISE = 0.01
"""Noise added to the weights of a network widened from a narrower one (relative to each tensor's standard
deviation), so that the copies can learn different things."""


def fit_state(
    state: dict[str, torch.Tensor],
    source: NetworkConfig,
    target: NetworkConfig,
    target_state: dict[str, torch.Tensor],
    seed: int,
) -> dict[str, torch.Tensor]:
    """``state`` (weights of a trained ``source`` network) made to fit a ``target`` network: its channels widened
    where ``target`` is wider (:func:`widen_state`, with :data:`WIDEN_NOISE` drawn from ``seed``), then the input
    channels ``target`` adds (:func:`widen_inputs`); unchanged where they already fit.

    Raises:
        ValueError: the networks differ in more than their widths.
        ConfigError: a tensor still does not fit.
    """
    if (source.channels, source.up_channels, source.decoder_channels) != (
        target.channels,
        target.up_channels,
        target.decoder_channels,
    ):
        generator = torch.Generator().manual_seed(seed)
        state = widen_state(state, source, replace(target, in_channels=source.in_channels), WIDEN_NOISE, generator)
    return widen_inputs(state, target_state)


def widen_inputs(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights of a network with fewer input channels, made to fit ``target``: the new input channels (a cascade
    level's context) start at zero, so the widened network first computes exactly what the source did.

    Raises:
        ConfigError: a tensor differs in any other way.
    """
    from FetalHeadSegLib.core.errors import ConfigError

    widened = {}
    for key, value in state.items():
        want = target.get(key)
        if want is None or want.shape == value.shape:
            widened[key] = value
            continue
        if value.ndim < 2 or value.shape[0] != want.shape[0] or value.shape[2:] != want.shape[2:]:
            raise ConfigError(
                f"finetune_from: weight {key} has shape {tuple(value.shape)}, expected {tuple(want.shape)}"
            )
        extra = torch.zeros((value.shape[0], want.shape[1] - value.shape[1], *value.shape[2:]), dtype=value.dtype)
        widened[key] = torch.cat([value, extra], dim=1)
    return widened
