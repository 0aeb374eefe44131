"""Fused execution of a `SearchCell` under soft op weights: the same parameters, the same math.

The per-edge path (`MixedOp`) runs every op of every edge as its own small kernel; on a CPU
at DARTS sizes that is thousands of tiny conv/BN calls per step, and the fixed cost of each
call (forward and, worse, backward) dominates the arithmetic. Here the edges are grouped
by SOURCE state instead: all out-edges of a state share its input, its ReLU and its stride,
so one kernel can do the work of all of them:

- the depthwise convs of the n out-edges become one depthwise conv over the input repeated
  n times (one conv per op kind),
- their 1×1 convs become one grouped 1×1 conv, their BNs one `F.batch_norm` over the
  concatenated channels (running statistics are written back into each edge's BN module),
- the pools have no parameters and the same input for every out-edge: computed once per
  source and shared, with each edge's pool-BN buffers updated as the per-edge path would,
- the skip at stride 2 (`FactorizedReduce`) of all out-edges is one dense 1×1 conv,
- the weighted sum over (edge, op) is one broadcast multiply + sum per kind of output.

Layout matters as much as call count here: oneDNN's depthwise conv and BN backward are
several times slower on NCHW or mixed-format tensors than on channels-last ones, so every
intermediate keeps the input's memory format (see `_repeat_blocks`, `_combine`).

Sources are processed as they become available: states 0 and 1 together (both inputs of
the cell), then each finished node. Weights are read through the modules at call time (so
`torch.func.functional_call` with substituted parameters works); nothing is cached.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.spaces.depthwise import depthwise_layers
from hwnas.spaces.ops import PRIMITIVES

_MAX, _AVG, _SKIP = PRIMITIVES.index("max_pool_3x3"), PRIMITIVES.index("avg_pool_3x3"), PRIMITIVES.index("skip_connect")
_SEP3, _SEP5 = PRIMITIVES.index("sep_conv_3x3"), PRIMITIVES.index("sep_conv_5x5")
_DIL3, _DIL5 = PRIMITIVES.index("dil_conv_3x3"), PRIMITIVES.index("dil_conv_5x5")
_CONVS = (_SEP3, _SEP5, _DIL3, _DIL5)  # channel order of the fused conv stage: the sep convs first


class _Group(NamedTuple):
    """Sources processed together; `edges[s][t]` is the edge from sources[s] to nodes[t]."""

    sources: tuple[int, ...]
    nodes: tuple[int, ...]
    edges: tuple[tuple[int, ...], ...]


@lru_cache(maxsize=None)
def _groups(steps: int) -> tuple[_Group, ...]:
    """States 0 and 1 together, then each node j-2 once it is complete (node i reads states 0..i+1)."""
    offsets = [sum(k + 2 for k in range(i)) for i in range(steps)]
    edge = lambda j, i: offsets[i] + j  # noqa: E731 — the edge index from state j into node i
    out = [_Group((0, 1), tuple(range(steps)), tuple(tuple(edge(j, i) for i in range(steps)) for j in (0, 1)))]
    for j in range(2, steps + 1):
        nodes = tuple(range(j - 1, steps))
        if nodes:
            out.append(_Group((j,), nodes, (tuple(edge(j, i) for i in nodes),)))
    return tuple(out)


def _batch_norm(x: torch.Tensor, bns: list[nn.BatchNorm2d], training: bool) -> torch.Tensor:
    """One F.batch_norm over the channel blocks of `bns` (in order); running stats go back to each module."""
    bn0 = bns[0]
    use_batch = training or not bn0.track_running_stats
    if not bn0.track_running_stats:
        return F.batch_norm(x, None, None, None, None, True, 0.0, bn0.eps)
    mean = torch.cat([b.running_mean for b in bns])
    var = torch.cat([b.running_var for b in bns])
    y = F.batch_norm(x, mean, var, None, None, use_batch, bn0.momentum, bn0.eps)  # updates mean/var in place
    if training:
        with torch.no_grad():
            torch._foreach_copy_([b.running_mean for b in bns], list(mean.chunk(len(bns))))
            torch._foreach_copy_([b.running_var for b in bns], list(var.chunk(len(bns))))
            torch._foreach_add_([b.num_batches_tracked for b in bns], 1)
    return y


def _shared_batch_norm(x: torch.Tensor, bns: list[list[nn.BatchNorm2d]], training: bool) -> torch.Tensor:
    """BN of the channel blocks of `x`, block k shared by the modules `bns[k]` (same input for each).

    Training: the output does not depend on the running stats, so it is computed once per
    block; each module's buffers get the update F.batch_norm would have made.
    Evaluation: each module normalises with its own buffers (they may differ, e.g. after
    hard-sampled steps), so the result is one block per module, in order (k, module).
    """
    bn0 = bns[0][0]
    if training:
        y = F.batch_norm(x, None, None, None, None, True, 0.0, bn0.eps)
        with torch.no_grad():
            var, mean = torch.var_mean(x.detach(), dim=(0, 2, 3), correction=1)
            m = bn0.momentum
            for k, (mu, v) in enumerate(zip(mean.chunk(len(bns)), var.chunk(len(bns)))):
                means = [b.running_mean for b in bns[k]]
                torch._foreach_mul_(means, 1.0 - m)
                torch._foreach_add_(means, [mu] * len(means), alpha=m)
                vars_ = [b.running_var for b in bns[k]]
                torch._foreach_mul_(vars_, 1.0 - m)
                torch._foreach_add_(vars_, [v] * len(vars_), alpha=m)
                torch._foreach_add_([b.num_batches_tracked for b in bns[k]], 1)
        return y
    blocks = x.chunk(len(bns), dim=1)
    rep = torch.cat([blk for k, blk in enumerate(blocks) for _ in bns[k]], dim=1)
    return _batch_norm(rep, [b for row in bns for b in row], False)


def _combine(y: torch.Tensor, w: torch.Tensor, per_edge: bool) -> torch.Tensor:
    """Σ over (op, source) of w · y → one output per target node.

    y: (B, A·S·(m if per_edge else 1)·C, H, W) in block order (op, source[, node]);
    w: (A, S, m) weights. Returns (B, m, C, H, W).
    """
    a, s, m = w.shape
    b, k, h, wd = y.shape
    g, r = a * s, (m if per_edge else 1)
    if _channels_last(y):  # work on the NHWC storage so the result stays channels-last
        yp = y.permute(0, 2, 3, 1).reshape(b, h, wd, g, r, k // (g * r))
        return (yp * w.view(g, m, 1)).sum(3).permute(0, 3, 4, 1, 2)   # (B, m, C, H, W) view of NHWmC
    return (y.view(b, g, r, -1, h, wd) * w.view(1, g, m, 1, 1, 1)).sum(1)


def _channels_last(x: torch.Tensor) -> bool:
    """Whether channels are innermost in memory (the layout oneDNN is fast on for these convs)."""
    return x.stride(1) == 1 and x.shape[1] > 1 and not x.is_contiguous()


def fused_cell_forward(cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`SearchCell.forward` for soft weights (no sampled indices), edges fused per source state."""
    states = [cell.preprocess0(s0), cell.preprocess1(s1)]
    acc: list[list[torch.Tensor]] = [[] for _ in range(cell.steps)]
    for g in _groups(cell.steps):
        stride = 2 if cell.reduction and g.sources[0] < 2 else 1
        x = states[g.sources[0]] if len(g.sources) == 1 else torch.cat([states[j] for j in g.sources], dim=1)
        out = _source_group(cell, g, x, weights, stride)  # (B, m, C, H', W')
        for t, i in enumerate(g.nodes):
            acc[i].append(out[:, t])
        i = g.sources[-1] - 1  # node i reads states 0..i+1, so it is complete once state i+1 has been processed
        if i < cell.steps:
            fmt = torch.channels_last if _channels_last(states[0]) else torch.contiguous_format
            states.append(_sum(acc[i]).contiguous(memory_format=fmt))  # a dense state, in the cell's format
    return torch.cat(states[-cell.multiplier:], dim=1)


def _sum(parts: list[torch.Tensor]) -> torch.Tensor:
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def _source_group(cell: nn.Module, g: _Group, x: torch.Tensor, weights: torch.Tensor, stride: int) -> torch.Tensor:
    """All out-edges of the sources in `g`: x is (B, S·C, H, W); returns (B, m, C, H', W') per target node."""
    training = cell.training
    n_src, m = len(g.sources), len(g.nodes)
    c = x.shape[1] // n_src
    mixed = [[cell.edges[e] for e in row] for row in g.edges]          # [s][t] MixedOp
    flat = [op for row in mixed for op in row]                          # order (s, t)
    idx = torch.tensor(g.edges, device=weights.device)                  # (S, m)
    w = weights[idx].permute(2, 0, 1)                                   # (8, S, m)
    xr = F.relu(x)

    # pools: parameter-free, same input for every out-edge → once per source
    pooled = torch.cat([F.max_pool2d(x, 3, stride, 1),
                        F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)], dim=1)  # (B, 2·S·C, H', W')
    pool_bns = [[e.ops[k][1] for e in flat[s * m:(s + 1) * m]] for k in (_MAX, _AVG) for s in range(n_src)]
    pooled = _shared_batch_norm(pooled, pool_bns, training)
    out = _combine(pooled, w[[_MAX, _AVG]], per_edge=not training)

    # skip: identity at stride 1; at stride 2 every out-edge's FactorizedReduce in one dense conv
    if stride == 1:
        out = out + _combine(x, w[[_SKIP]], per_edge=False)
    else:
        out = out + _combine(_factorized_reduce(xr, [e.ops[_SKIP] for e in flat], n_src, m, training),
                             w[[_SKIP]], per_edge=True)

    # conv ops, stage 1: dw (the input repeated once per out-edge) → grouped 1×1 → BN
    b, _, h, wd = x.shape
    xrep = _repeat_blocks(xr, n_src, m)                                # (B, S·m·C, H, W), order (s, t, c)
    body = lambda k, i: [e.ops[k].body[i] for e in flat]  # noqa: E731 — layer i of op k, order (s, t)
    y = torch.cat([depthwise_layers(xrep, body(k, 0)) for k in _CONVS], dim=1)   # (B, 4·S·m·C, H', W')
    y = F.conv2d(y, torch.cat([p.weight for k in _CONVS for p in body(k, 1)]), groups=4 * n_src * m)
    y = _batch_norm(y, [bn for k in _CONVS for bn in body(k, 2)], training)
    n_sep = 2 * n_src * m * c
    sep3, sep5, dil = y.split([n_sep // 2, n_sep // 2, y.shape[1] - n_sep], dim=1)
    out = out + _combine(dil, w[[_DIL3, _DIL5]], per_edge=True)

    # sep convs, stage 2: ReLU → dw (stride 1) → 1×1 → BN
    # one ReLU per half: a ReLU of a channel slice is a dense tensor again (a slice of one is not,
    # and oneDNN would first copy it to NCHW)
    z = torch.cat([depthwise_layers(F.relu(sep3), body(_SEP3, 4)), depthwise_layers(F.relu(sep5), body(_SEP5, 4))], dim=1)
    z = F.conv2d(z, torch.cat([p.weight for k in (_SEP3, _SEP5) for p in body(k, 5)]), groups=2 * n_src * m)
    z = _batch_norm(z, [bn for k in (_SEP3, _SEP5) for bn in body(k, 6)], training)
    return out + _combine(z, w[[_SEP3, _SEP5]], per_edge=True)


def _repeat_blocks(x: torch.Tensor, n_src: int, m: int) -> torch.Tensor:
    """(B, S·C, H, W) → (B, S·m·C, H, W): each source's C channels m times, in x's memory format.

    A plain expand+reshape would return NCHW even for a channels_last input, and oneDNN's
    depthwise conv backward is several times slower on NCHW (and on mixed formats).
    """
    b, sc, h, w = x.shape
    c = sc // n_src
    if not _channels_last(x):
        return x.reshape(b, n_src, 1, c, h, w).expand(b, n_src, m, c, h, w).reshape(b, n_src * m * c, h, w)
    nhwc = x.permute(0, 2, 3, 1).reshape(b, h, w, n_src, 1, c).expand(b, h, w, n_src, m, c)
    return nhwc.reshape(b, h, w, n_src * m * c).permute(0, 3, 1, 2)


def _factorized_reduce(xr: torch.Tensor, frs: list[nn.Module], n_src: int, m: int, training: bool) -> torch.Tensor:
    """The FactorizedReduce of every out-edge (order (s, t)) on relu'd sources xr (B, S·C, H, W)."""
    h, wd = xr.shape[-2:]
    a = xr[:, :, ::2, ::2]                                                       # what conv_1 (stride 2) sees
    b = F.pad(xr[:, :, 1::2, 1::2], (0, wd % 2, 0, h % 2))                      # conv_2 on the shifted input
    c = xr.shape[1] // n_src
    half = c // 2
    w1 = torch.stack([fr.conv_1.weight.view(half, c) for fr in frs]).view(n_src, m, half, c)
    w2 = torch.stack([fr.conv_2.weight.view(half, c) for fr in frs]).view(n_src, m, half, c)
    # dense weight: output (s, t, path, o) reads input block (path, s) only
    eye_p = torch.eye(2, dtype=w1.dtype, device=w1.device)
    eye_s = torch.eye(n_src, dtype=w1.dtype, device=w1.device)
    wst = torch.stack([w1, w2], dim=2)                                             # (S, m, 2, C/2, C)
    dense = torch.einsum("stpoc,pq,sr->stpoqrc", wst, eye_p, eye_s).reshape(n_src * m * c, 2 * n_src * c, 1, 1)
    y = F.conv2d(torch.cat([a, b], dim=1), dense)                                  # (B, S·m·C, H', W')
    return _batch_norm(y, [fr.bn for fr in frs], training)
