"""Compute devices: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, resolved in one place."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from FetalHeadSegLib.core.errors import DeviceError

if TYPE_CHECKING:
    import torch


class Device(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``device``: ``auto`` is CUDA when available, else the CPU (MPS only on request).

    Raises:
        DeviceError: the device is unknown or not available here.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    kind = name.split(":")[0]
    choices = ", ".join(d.value for d in Device)
    if kind not in {d.value for d in Device}:
        raise DeviceError(f"unknown device {device!r}; use one of {choices} (or cuda:N)")
    if kind == Device.AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == Device.CUDA and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} was requested but CUDA is not available; use --device cpu")
    if kind == Device.MPS and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r} was requested but Apple MPS is not available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise DeviceError(f"invalid device {device!r}: {err}") from err
