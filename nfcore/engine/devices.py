"""Which device a run uses, and how it is named in results (torch, but no model code)."""

from __future__ import annotations

import torch


class DeviceUnavailableError(RuntimeError):
    """The config asks for CUDA on a machine without it."""


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "device 'cuda' was asked for but no CUDA GPU is available; use cpu or auto"
        )
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
