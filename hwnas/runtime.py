"""Resolving the compute device, precision and memory format once, at the entry points."""
from __future__ import annotations

import torch

from hwnas.errors import HwnasError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` → CUDA when available, else CPU; an explicit CUDA request without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HwnasError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HwnasError(f"--device {name} asked for CUDA, but torch {torch.__version__} sees no GPU; use --device cpu")
    return device


def autocast_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """bf16 autocast on CUDA by default. Off on CPU by default: measured slower there for the
    small depthwise convolutions of DARTS (benchmarks/search_speed.py)."""
    if amp is None:
        amp = device.type == "cuda"
    return torch.bfloat16 if amp else None


def memory_format(device: torch.device, channels_last: bool | None) -> torch.memory_format:
    """channels_last by default: measured faster for depthwise convolutions on CPU (oneDNN) and
    for convolutions under bf16 on CUDA (cuDNN)."""
    if channels_last is None:
        channels_last = True
    return torch.channels_last if channels_last else torch.contiguous_format
