"""The DARTS operations and the one name-keyed registry (`OPS`) everything uses.

The supernet, the discrete network, the genotype parser, the latency profiler's keys and
the parametrised tests all read `OPS`, so an op exists in one place only.

Every op matches the DARTS reference (Liu et al., 2019) layer for layer, so parameter
counts agree with it. The convolutional ops keep their leading ReLU as a separate flag
(`relu_first`) instead of a module so that a mixed op can apply the ReLU once for the four
conv ops that share an input (same result, three fewer passes over the activation; `hwnas.spaces.depthwise.run_op`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class Zero(nn.Module):
    """The `none` op: zeros of the output shape (stride 2 halves H and W, rounding up)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class Identity(nn.Identity):
    """`skip_connect` at stride 1 (a named class so drop-path can recognise it)."""


class ReLUConvBN(nn.Sequential):
    """ReLU → Conv(k) → BN; the cells' 1×1 preprocessing."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class _ConvOp(nn.Module):
    """A conv op whose first step is a ReLU of its input, kept apart as `relu_first`."""

    relu_first = True

    def __init__(self, body: nn.Sequential):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.relu(x))


class SepConv(_ConvOp):
    """Separable conv, applied twice: (dw k×k → pw 1×1 → BN) → ReLU → (dw k×k → pw 1×1 → BN)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.Sequential(
                nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, groups=c_in, bias=False),
                nn.Conv2d(c_in, c_in, 1, bias=False),
                nn.BatchNorm2d(c_in, affine=affine),
                nn.ReLU(inplace=False),
                nn.Conv2d(c_in, c_in, kernel, stride=1, padding=padding, groups=c_in, bias=False),
                nn.Conv2d(c_in, c_out, 1, bias=False),
                nn.BatchNorm2d(c_out, affine=affine),
            )
        )


class DilConv(_ConvOp):
    """Dilated depthwise conv → pointwise 1×1 → BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(
            nn.Sequential(
                nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation,
                          groups=c_in, bias=False),
                nn.Conv2d(c_in, c_out, 1, bias=False),
                nn.BatchNorm2d(c_out, affine=affine),
            )
        )


class FactorizedReduce(nn.Module):
    """Halve H and W with two offset stride-2 1×1 convs, each giving half the channels.

    The reference crops `x[:, :, 1:, 1:]` for the second path, which only lines up for even
    sizes; odd sizes (e.g. 7×7 after two reductions of 28×28) are padded by one pixel on the
    bottom/right so both paths give ceil(H/2). No parameters change.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        shifted = x[:, :, 1:, 1:]
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            shifted = F.pad(shifted, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        if self.training:
            # the same numbers: a 1×1 convolution at stride 2 reads every second pixel. Taken apart in training,
            # because oneDNN's weight gradient of a stride-2 1×1 convolution on a channels-last input with few
            # channels (2–6 in, torch 2.14.1 on an AVX2-only CPU) writes past its buffer and aborts the process
            # (`free(): invalid pointer`; tests/test_spaces.py). Eval and export keep the one strided convolution
            # that the tables timed.
            return self.bn(torch.cat([F.conv2d(x[:, :, ::2, ::2], self.conv_1.weight),
                                      F.conv2d(shifted[:, :, ::2, ::2], self.conv_2.weight)], dim=1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class OpSpec(NamedTuple):
    """How to build an op: `factory(C, stride, affine)` → module with C in and C out."""

    factory: Callable[[int, int, bool], nn.Module]
    kind: str  # "zero" | "pool" | "skip" | "conv": the supernet treats each kind differently


OPS: dict[str, OpSpec] = {
    "none": OpSpec(lambda c, stride, affine: Zero(stride), "zero"),
    "max_pool_3x3": OpSpec(lambda c, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1), "pool"),
    "avg_pool_3x3": OpSpec(
        lambda c, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False), "pool"
    ),
    "skip_connect": OpSpec(
        lambda c, stride, affine: Identity() if stride == 1 else FactorizedReduce(c, c, affine=affine), "skip"
    ),
    "sep_conv_3x3": OpSpec(lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine=affine), "conv"),
    "sep_conv_5x5": OpSpec(lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine=affine), "conv"),
    "dil_conv_3x3": OpSpec(lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine=affine), "conv"),
    "dil_conv_5x5": OpSpec(lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine=affine), "conv"),
}
assert tuple(OPS) == PRIMITIVES  # the registry's order is the α column order


def make_op(name: str, channels: int, stride: int, affine: bool) -> nn.Module:
    """Build the op `name`; a clear error for a name the registry does not hold."""
    try:
        spec = OPS[name]
    except KeyError:
        raise ValueError(f"unknown operation {name!r}; known: {', '.join(PRIMITIVES)}") from None
    return spec.factory(channels, stride, affine)


def drop_path(x: torch.Tensor, drop_prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero whole samples with probability `drop_prob`, rescaling the rest (DARTS's drop-path)."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep, generator=generator)
    return x * mask / keep
