"""DARTS space: where each op sits in the network, the keys to measure, and the modules to time.

The walk below repeats `DiscreteNetwork`'s wiring (stem → cells with reductions at 1/3 and
2/3 → global pool + linear), so every op a genotype can place has a key:

- stem: 3×3 conv + BN, `in_channels → stem_multiplier·C`, at the input size;
- per cell: preprocess0 (ReLU-1×1 conv-BN, or FactorizedReduce after a reduction cell),
  preprocess1 (ReLU-1×1 conv-BN), the 7 non-`none` ops of `OPS` at that cell's C and input
  resolution — stride 2 on a reduction cell's edges from states 0/1, stride 1 elsewhere;
- glue the per-op sum would otherwise miss: one `add` per node (two C-channel maps) and
  one `concat` per cell (`multiplier` maps). They are measured as keys of their own;
  what remains (framework overhead between ops, fusion) is left to the calibration fit;
- head: global average pool + linear.

`none` costs 0 and has no key. Keys are deduplicated (a reduction cell's stride-1 edges sit
at the same C and resolution as the next normal cell's).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.latency.space import OpKey, SpaceConfig, half
from hwnas.spaces.genotype import Genotype
from hwnas.spaces.ops import OPS, PRIMITIVES, FactorizedReduce, ReLUConvBN, make_op
from hwnas.spaces.supernet import reduction_layers

CHOICES = tuple(p for p in PRIMITIVES if p != "none")  # the ops that get keys
STEM, PRE_RCB, PRE_FR, ADD, CONCAT, HEAD = (
    "stem_conv3x3_bn", "preprocess_relu_conv1x1_bn", "preprocess_factorized_reduce", "add", "concat",
    "head_pool_linear")


def op_kind(op: str) -> str:
    """The group an op's latency belongs to in the calibration fit: conv, pool, skip, or fixed
    (stem, preprocessing, glue and head: the same for every genotype of a space)."""
    return OPS[op].kind if op in OPS else "fixed"


@dataclass(frozen=True)
class CellPosition:
    index: int
    reduction: bool
    reduction_prev: bool
    c: int          # channels of the cell's nodes
    c_pp: int       # channels of state s0 (two cells back)
    c_p: int        # channels of state s1 (previous cell)
    hw_pp: tuple[int, int]  # resolution of s0
    hw: tuple[int, int]     # resolution of s1 = the cell's input resolution

    def edge_position(self, j: int) -> tuple[int, tuple[int, int]]:
        """(stride, input resolution) of an edge reading state j."""
        if self.reduction and j < 2:
            return 2, self.hw
        return 1, (half(self.hw[0]), half(self.hw[1])) if self.reduction else self.hw


def cell_positions(cfg: SpaceConfig) -> list[CellPosition]:
    """The cells of a `DiscreteNetwork` with this space's parameters, in order."""
    c_stem = cfg.stem_multiplier * cfg.channels
    c_pp, c_p, c = c_stem, c_stem, cfg.channels
    hw_pp = hw = (cfg.input_h, cfg.input_w)
    reduction_prev = False
    cells = []
    for i in range(cfg.layers):
        reduction = i in reduction_layers(cfg.layers)
        if reduction:
            c *= 2
        cells.append(CellPosition(i, reduction, reduction_prev, c, c_pp, c_p, hw_pp, hw))
        out_hw = (half(hw[0]), half(hw[1])) if reduction else hw
        c_pp, c_p, hw_pp, hw = c_p, cfg.multiplier * c, hw, out_hw
        reduction_prev = reduction
    return cells


def _key(cfg: SpaceConfig, op: str, c_in: int, c_out: int, hw: tuple[int, int], stride: int) -> OpKey:
    return OpKey(op, c_in, c_out, hw[0], hw[1], stride, cfg.batch, cfg.dtype)


def stem_key(cfg: SpaceConfig) -> OpKey:
    return _key(cfg, STEM, cfg.in_channels, cfg.stem_multiplier * cfg.channels, (cfg.input_h, cfg.input_w), 1)


def head_key(cfg: SpaceConfig) -> OpKey:
    last = cell_positions(cfg)[-1]
    hw = (half(last.hw[0]), half(last.hw[1])) if last.reduction else last.hw
    return _key(cfg, HEAD, cfg.multiplier * last.c, cfg.num_classes, hw, 1)


def cell_fixed_keys(cfg: SpaceConfig, cell: CellPosition) -> list[OpKey]:
    """Preprocessing and glue of one cell: everything in it that the genotype does not choose."""
    pre0 = (_key(cfg, PRE_FR, cell.c_pp, cell.c, cell.hw_pp, 2) if cell.reduction_prev
            else _key(cfg, PRE_RCB, cell.c_pp, cell.c, cell.hw_pp, 1))
    node_hw = cell.edge_position(2)[1] if cell.reduction else cell.hw
    adds = [_key(cfg, ADD, cell.c, cell.c, node_hw, 1)] * cfg.steps
    concat = _key(cfg, CONCAT, cell.c, cfg.multiplier * cell.c, node_hw, 1)
    return [pre0, _key(cfg, PRE_RCB, cell.c_p, cell.c, cell.hw, 1), *adds, concat]


def edge_key(cfg: SpaceConfig, cell: CellPosition, op: str, j: int) -> OpKey | None:
    """The key of op `op` on an edge reading state j; None for `none` (costs nothing)."""
    if op == "none":
        return None
    stride, hw = cell.edge_position(j)
    return _key(cfg, op, cell.c, cell.c, hw, stride)


def darts_keys(cfg: SpaceConfig) -> list[OpKey]:
    """Every key the space can place, deduplicated, in network order."""
    keys = [stem_key(cfg)]
    for cell in cell_positions(cfg):
        keys += cell_fixed_keys(cfg, cell)
        for j in range(cfg.steps + 1):  # the last node reads states 0..steps
            keys += [edge_key(cfg, cell, op, j) for op in CHOICES]
    keys.append(head_key(cfg))
    return list(dict.fromkeys(keys))


def genotype_keys(cfg: SpaceConfig, genotype: Genotype) -> list[OpKey]:
    """The keys of one network (with repeats: a key used twice costs twice)."""
    for cell_name, concat in (("normal", genotype.normal_concat), ("reduce", genotype.reduce_concat)):
        if len(concat) != cfg.multiplier or genotype.steps != cfg.steps:
            from hwnas.errors import HwnasError

            raise HwnasError(f"genotype {cell_name} cell has {genotype.steps} nodes and concatenates {len(concat)} "
                             f"states; this table's space has {cfg.steps} and {cfg.multiplier}")
    keys = [stem_key(cfg)]
    for cell in cell_positions(cfg):
        keys += cell_fixed_keys(cfg, cell)
        edges = genotype.reduce if cell.reduction else genotype.normal
        keys += [k for op, j in edges if (k := edge_key(cfg, cell, op, j)) is not None]
    keys.append(head_key(cfg))
    return keys


class _Add(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class _Concat(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class _Head(nn.Module):
    def __init__(self, c_in: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class _Call(nn.Module):
    """Calls an op with one positional input: the ONNX exporters and CUDA graphs want plain forwards."""

    def __init__(self, op: nn.Module):
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def darts_module(key: OpKey, cfg: SpaceConfig) -> tuple[nn.Module, list[tuple[int, ...]]]:
    """The module a key times, in eval mode, and the shapes of its inputs."""
    shape = (key.batch, key.c_in, key.h, key.w)
    if key.op in OPS:
        module, shapes = _Call(make_op(key.op, key.c_in, key.stride, affine=True)), [shape]
    elif key.op == STEM:
        module = nn.Sequential(nn.Conv2d(key.c_in, key.c_out, 3, padding=1, bias=False), nn.BatchNorm2d(key.c_out))
        shapes = [shape]
    elif key.op == PRE_RCB:
        module, shapes = ReLUConvBN(key.c_in, key.c_out, 1, 1, 0), [shape]
    elif key.op == PRE_FR:
        module, shapes = FactorizedReduce(key.c_in, key.c_out), [shape]
    elif key.op == ADD:
        module, shapes = _Add(), [shape, shape]
    elif key.op == CONCAT:
        module, shapes = _Concat(), [shape] * (key.c_out // key.c_in)
    elif key.op == HEAD:
        module, shapes = _Head(key.c_in, key.c_out), [shape]
    else:
        raise ValueError(f"not a darts key: {key}")
    return module.eval(), shapes
