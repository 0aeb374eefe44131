"""Resolving the compute device, precision and memory format once, at the entry points."""
from __future__ import annotations

import os
import sys

import torch

from hwnas.errors import HwnasError

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc's mallopt parameters (malloc.h)
_kept = None


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the system (once per process).

    glibc serves every allocation above its mmap threshold (at most 32 MiB, often 128 KiB) with a fresh
    mmap and unmaps it on free, so a CPU training step whose activations are tens of MB each page-faults
    on every one of them again at every step: 142,000 minor faults per DARTS search step at the
    #13 configuration, about 7 % of the step (`benchmarks/search_speed.py`; PyTorch's CPU tuning guide
    suggests jemalloc/tcmalloc for the same reason). Raising the mmap and trim thresholds keeps the
    heap's pages: 0 faults per step and the same peak RSS — the process just does not shrink between
    steps. Called by the CPU entry points (search, train, prune); `HWNAS_KEEP_FREED_MEMORY=0` turns it
    off; a no-op where the C library is not glibc. Returns whether it is in effect.
    """
    global _kept
    if _kept is None:
        _kept = False
        if sys.platform.startswith("linux") and os.environ.get("HWNAS_KEEP_FREED_MEMORY", "1") != "0":
            import ctypes

            try:
                libc = ctypes.CDLL("libc.so.6")
                _kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
            except (OSError, AttributeError):  # musl or another libc: nothing to tune
                _kept = False
    return _kept


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` → CUDA when available, else CPU; an explicit CUDA request without a GPU is a clear error.
    On the CPU, freed memory is kept for reuse from here on (`keep_freed_memory`)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HwnasError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HwnasError(f"--device {name} asked for CUDA, but torch {torch.__version__} sees no GPU; use --device cpu")
    if device.type == "cpu":
        keep_freed_memory()
    return device


def autocast_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """bf16 autocast on CUDA by default. Off on CPU by default: measured slower there for the
    small depthwise convolutions of DARTS (benchmarks/search_speed.py)."""
    if amp is None:
        amp = device.type == "cuda"
    return torch.bfloat16 if amp else None


def onednn_safe_format(model: torch.nn.Module, device: torch.device, fmt: torch.memory_format) -> torch.memory_format:
    """`fmt`, or the contiguous format for a CPU network that trains a strided 1×1 convolution on 2–6 input channels:
    oneDNN's weight gradient of that convolution on a channels-last input writes past its buffer and aborts the
    process (torch 2.14.1, AVX2-only AMD EPYC, 2026-12-07; 1 and 7–24 channels fine). `FactorizedReduce` trains
    around it itself, so its convolutions do not count; a pruned ResNet18's downsample could meet it."""
    from hwnas.spaces.ops import FactorizedReduce

    if fmt != torch.channels_last or device.type != "cpu":
        return fmt
    handled = {id(c) for m in model.modules() if isinstance(m, FactorizedReduce) for c in (m.conv_1, m.conv_2)}
    risky = any(isinstance(m, torch.nn.Conv2d) and id(m) not in handled and m.kernel_size == (1, 1)
                and m.stride != (1, 1) and 2 <= m.in_channels <= 6 for m in model.modules())
    return torch.contiguous_format if risky else fmt


def memory_format(device: torch.device, channels_last: bool | None) -> torch.memory_format:
    """channels_last by default: measured faster for depthwise convolutions on CPU (oneDNN) and
    for convolutions under bf16 on CUDA (cuDNN)."""
    if channels_last is None:
        channels_last = True
    return torch.channels_last if channels_last else torch.contiguous_format
