"""Depthwise convolution as the search runs it: the same numbers as `F.conv2d`, without the taps that read only padding.

A DARTS cell keeps its k×k kernels (k = 5, dilation up to 2: a reach of ±4 pixels) in the last cells, where the
feature maps are small: 2×2 and 4×4 on the 8×8 `digits`. There most taps of a kernel fall on the zero padding
for every output pixel, and oneDNN (torch 2.14, x86 CPU) is slow on exactly that geometry: a 5×5 depthwise conv with
dilation 2 on a 2×2 map took 4–7 ms forward against 0.08 ms for a 3×3 one, and its backward 20 ms. A tap whose
offset d·t − p reaches outside the input from every output pixel multiplies zeros only, in the forward pass and in
both gradients, so the conv with that tap removed is the same function of the input and of the remaining weights
(the removed weights get a zero gradient, as they do through the full conv). `depthwise` removes such taps where
they form a symmetric border of the kernel (then the output size is unchanged), and runs a kernel left with one tap
as the per-channel product it is.

Also: a conv with stride s = dilation d > 1 and padding divisible by d reads only the inputs at multiples of d
(output i, tap t reads input s·i + d·t − p = d·(i + t − p/d)): it is exactly a dense stride-1 conv of x[::d, ::d]
with padding p/d. The dilated reduction-cell convs (stride 2, dilation 2) are run that way: oneDNN's strided dilated
depthwise backward is 4–7× slower than the dense stride-1 conv on a quarter of the pixels (issue #13.3).

Used by the supernet (`hwnas.spaces.fused`, and `run_op` on `MixedOp`'s per-edge path) and by a discrete network in
training mode (`run_op`); eval mode — what export, the profilers and `hwnas measure` run — keeps the plain convolutions.
"""
from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import nn


@cache
def _useful_taps(size: int, out: int, k: int, s: int, d: int, p: int) -> int:
    """How many taps at each end of one kernel axis read only padding for every output (0 unless both ends agree)."""
    reach = [t for t in range(k) if any(0 <= s * i + d * t - p < size for i in range(out))]
    lo, hi = (reach[0], k - 1 - reach[-1]) if reach else (0, 0)
    return lo if lo == hi else 0


def depthwise(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
              dilation: tuple[int, int]) -> torch.Tensor:
    """`F.conv2d(x, weight, None, stride, padding, dilation, groups=weight.shape[0])` for a depthwise weight (C, 1, k, k)."""
    (s, s_w), (p, p_w), (d, d_w) = stride, padding, dilation
    if (s, p, d) == (s_w, p_w, d_w) and s == d > 1 and p % d == 0:
        x, stride, padding, dilation = x[:, :, ::d, ::d], (1, 1), (p // d, p // d), (1, 1)
    k_h, k_w = weight.shape[-2:]
    h, w = x.shape[-2:]
    out = [(n + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for n, pp, dd, kk, ss in
           ((h, padding[0], dilation[0], k_h, stride[0]), (w, padding[1], dilation[1], k_w, stride[1]))]
    cut_h = _useful_taps(h, out[0], k_h, stride[0], dilation[0], padding[0])
    cut_w = _useful_taps(w, out[1], k_w, stride[1], dilation[1], padding[1])
    if cut_h or cut_w:
        weight = weight[:, :, cut_h:k_h - cut_h, cut_w:k_w - cut_w]
        padding = (padding[0] - dilation[0] * cut_h, padding[1] - dilation[1] * cut_w)
        if weight.shape[-2:] == (1, 1) and padding == (0, 0) and stride == (1, 1):
            return x * weight.view(1, -1, 1, 1)   # one tap left: a per-channel scale (keeps x's memory format)
    return F.conv2d(x, weight, None, stride, padding, dilation, groups=weight.shape[0])


def depthwise_layers(x: torch.Tensor, convs: list[nn.Conv2d]) -> torch.Tensor:
    """One depthwise conv whose channel blocks use the weights of `convs` (all the same shape and geometry)."""
    c0 = convs[0]
    weight = torch.cat([cv.weight for cv in convs]) if len(convs) > 1 else c0.weight
    return depthwise(x, weight, c0.stride, c0.padding, c0.dilation)


def is_depthwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels


def run_body(body: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """`body(x)` for a conv op's layers, its depthwise convs through `depthwise`."""
    for layer in body:
        x = depthwise_layers(x, [layer]) if is_depthwise(layer) else layer(x)
    return x


def run_op(op: nn.Module, x: torch.Tensor, x_relu: torch.Tensor | None = None) -> torch.Tensor:
    """`op(x)`, with a conv op's depthwise convs through `depthwise` and its leading ReLU taken from `x_relu` (relu(x),
    computed once for the ops that share an input) where given."""
    if getattr(op, "relu_first", False):
        return run_body(op.body, F.relu(x) if x_relu is None else x_relu)
    return op(x)
