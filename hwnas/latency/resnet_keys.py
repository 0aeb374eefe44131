"""ResNet18 space (for gate pruning): keys per block position and inner width, a predictor's
walk, and the pruned network itself for end-to-end calibration.

The structure is torchvision's `resnet18` (read from `torchvision.models.resnet18(weights=None)`,
never downloaded): stem conv 7×7/2 + BN + ReLU + max-pool (or, for inputs ≤ 64 px, the
CIFAR-style conv 3×3/1 + BN + ReLU without max-pool), 4 stages × 2 BasicBlocks of widths
64/128/256/512, a 1×1/2 projection shortcut in the first block of stages 2–4, avgpool + fc.

A block's residual branch (conv3×3 → BN → ReLU → conv3×3 → BN) is keyed per inner width
fraction f ∈ FRACTIONS (inner channels = round(f · width)); f = 0 removes the branch (the
block is then the identity, or ReLU(shortcut(x)) where there is a projection). A projection
shortcut may be removed too (`shortcut=False`: the block is ReLU(branch(x))); removing both
from one block leaves nothing that depends on the input (`hwnas.spaces.gated_resnet`).
The shortcut, the residual add + ReLU (glue), stem and head have keys of their own.

A pruned ResNet18 is given as a dict: block name → f, and optionally `"<block>.downsample"`
→ 0/1 (False/True) for the projection blocks (missing: kept).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.latency.space import OpKey, SpaceConfig

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
BLOCKS = tuple(f"layer{s}.{b}" for s in range(1, 5) for b in range(2))
STEM_LARGE, STEM_SMALL, SHORTCUT, ADD_RELU, HEAD = (
    "resnet_stem_7x7", "resnet_stem_3x3", "resnet_shortcut", "resnet_add_relu", "resnet_head")


def branch_op(fraction: float) -> str:
    return f"resnet_branch_{fraction:.2f}"


def op_kind(op: str) -> str:
    """Calibration groups: branch (what pruning changes), shortcut, fixed (stem, glue, head)."""
    return "branch" if op.startswith("resnet_branch_") else "shortcut" if op == SHORTCUT else "fixed"


@dataclass(frozen=True)
class BlockPosition:
    name: str
    c_in: int
    c_out: int
    stride: int
    hw: tuple[int, int]  # input resolution
    projection: bool

    @property
    def out_hw(self) -> tuple[int, int]:
        return _conv_out(self.hw[0], 3, self.stride, 1), _conv_out(self.hw[1], 3, self.stride, 1)


def _conv_out(n: int, k: int, stride: int, pad: int) -> int:
    return (n + 2 * pad - k) // stride + 1


def torchvision_resnet18(cfg: SpaceConfig) -> nn.Module:
    """torchvision's resnet18 (random weights) for `cfg`'s input channels, classes and stem."""
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=cfg.num_classes)
    if cfg.small_stem:
        model.conv1 = nn.Conv2d(cfg.in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif cfg.in_channels != 3:
        model.conv1 = nn.Conv2d(cfg.in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model


def block_positions(cfg: SpaceConfig) -> list[BlockPosition]:
    """The 8 BasicBlocks with their shapes, read from torchvision's module tree (once per space: building the
    module takes 0.1 s, and every price of a gate set needs the positions)."""
    return list(_block_positions(cfg))


@functools.lru_cache(maxsize=16)
def _block_positions(cfg: SpaceConfig) -> tuple[BlockPosition, ...]:
    model = torchvision_resnet18(cfg)
    h, w = cfg.input_h, cfg.input_w
    if not cfg.small_stem:
        h, w = _conv_out(h, 7, 2, 3), _conv_out(w, 7, 2, 3)
        h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
    blocks = []
    for name in BLOCKS:
        stage, idx = name.split(".")
        block = getattr(model, stage)[int(idx)]
        pos = BlockPosition(name, block.conv1.in_channels, block.conv2.out_channels, block.conv1.stride[0], (h, w),
                            block.downsample is not None)
        blocks.append(pos)
        h, w = pos.out_hw
    return tuple(blocks)


def _key(cfg: SpaceConfig, op: str, c_in: int, c_out: int, hw: tuple[int, int], stride: int) -> OpKey:
    return OpKey(op, c_in, c_out, hw[0], hw[1], stride, cfg.batch, cfg.dtype)


def stem_key(cfg: SpaceConfig) -> OpKey:
    op, stride = (STEM_SMALL, 1) if cfg.small_stem else (STEM_LARGE, 2)
    return _key(cfg, op, cfg.in_channels, 64, (cfg.input_h, cfg.input_w), stride)


def head_key(cfg: SpaceConfig) -> OpKey:
    last = block_positions(cfg)[-1]
    return _key(cfg, HEAD, last.c_out, cfg.num_classes, last.out_hw, 1)


def block_keys(cfg: SpaceConfig, block: BlockPosition, fraction: float, shortcut: bool = True) -> list[OpKey]:
    """Keys of one block with its branch at `fraction` (0 = branch removed) and its projection
    shortcut kept or not (`shortcut`; an identity shortcut costs nothing either way). The glue
    key stands for the add + ReLU, or the ReLU alone when one of the two paths is gone."""
    if not shortcut and fraction == 0 and block.projection:
        raise HwnasError(f"block {block.name}: branch and projection shortcut both removed: nothing is left "
                         f"that depends on the input")
    keep = block.projection and shortcut
    shortcut = [_key(cfg, SHORTCUT, block.c_in, block.c_out, block.hw, block.stride)] if keep else []
    glue = [_key(cfg, ADD_RELU, block.c_out, block.c_out, block.out_hw, 1)]
    if fraction == 0:
        return shortcut + glue if block.projection else []  # identity block: nothing runs
    if fraction not in FRACTIONS:
        raise HwnasError(f"block {block.name}: width fraction {fraction} is not one of 0, "
                         f"{', '.join(map(str, FRACTIONS))}")
    return [_key(cfg, branch_op(fraction), block.c_in, block.c_out, block.hw, block.stride)] + shortcut + glue


def resnet_keys(cfg: SpaceConfig) -> list[OpKey]:
    keys = [stem_key(cfg)]
    for block in block_positions(cfg):
        for f in FRACTIONS:
            keys += block_keys(cfg, block, f)
    keys.append(head_key(cfg))
    return list(dict.fromkeys(keys))


def downsample_name(block: str) -> str:
    return f"{block}.downsample"


def split_arch(cfg: SpaceConfig, arch: dict) -> tuple[dict[str, float], dict[str, bool]]:
    """({block: fraction}, {block: shortcut kept}) of an arch dict, validated; missing entries are whole."""
    positions = block_positions(cfg)
    shortcut_names = {downsample_name(b.name): b.name for b in positions if b.projection}
    unknown = set(arch) - set(BLOCKS) - set(shortcut_names)
    if unknown:
        raise HwnasError(f"unknown ResNet18 block(s) {sorted(unknown)}; blocks are {', '.join(BLOCKS)}, "
                         f"shortcuts {', '.join(shortcut_names)}")
    fractions = {b.name: float(arch.get(b.name, 1.0)) for b in positions}
    shortcuts = {b.name: bool(arch.get(downsample_name(b.name), True)) for b in positions}
    return fractions, shortcuts


def pruned_keys(cfg: SpaceConfig, fractions: dict) -> list[OpKey]:
    """Keys of a pruned ResNet18: `fractions` maps block name (layer1.0 … layer4.1) → f, and optionally
    `<block>.downsample` → 0/1 for a projection shortcut; missing blocks are whole."""
    fractions, shortcuts = split_arch(cfg, fractions)
    keys = [stem_key(cfg)]
    for block in block_positions(cfg):
        keys += block_keys(cfg, block, fractions[block.name], shortcuts[block.name])
    keys.append(head_key(cfg))
    return keys


def _branch(c_in: int, mid: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, mid, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(mid),
                         nn.ReLU(inplace=True), nn.Conv2d(mid, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))


def _mid(key_op: str, c_out: int) -> int:
    return max(1, round(float(key_op.rsplit("_", 1)[1]) * c_out))


class _AddReLU(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.relu(a + b)


class _Head(nn.Module):
    def __init__(self, c_in: int, num_classes: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_module(key: OpKey, cfg: SpaceConfig) -> tuple[nn.Module, list[tuple[int, ...]]]:
    """The module a key times, in eval mode, and its input shapes."""
    shape = (key.batch, key.c_in, key.h, key.w)
    if key.op == STEM_LARGE:
        m = nn.Sequential(nn.Conv2d(key.c_in, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                          nn.MaxPool2d(3, 2, 1))
    elif key.op == STEM_SMALL:
        m = nn.Sequential(nn.Conv2d(key.c_in, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
    elif key.op.startswith("resnet_branch_"):
        m = _branch(key.c_in, _mid(key.op, key.c_out), key.c_out, key.stride)
    elif key.op == SHORTCUT:
        m = nn.Sequential(nn.Conv2d(key.c_in, key.c_out, 1, stride=key.stride, bias=False), nn.BatchNorm2d(key.c_out))
    elif key.op == ADD_RELU:
        return _AddReLU().eval(), [shape, shape]
    elif key.op == HEAD:
        m = _Head(key.c_in, key.c_out)
    else:
        raise ValueError(f"not a resnet18 key: {key}")
    return m.eval(), [shape]


def inner_width(fraction: float, width: int) -> int:
    """Inner channels kept at width fraction f > 0: round(f · width), at least 1."""
    return max(1, round(fraction * width))


class PrunedBlock(nn.Module):
    """A BasicBlock whose branch may be narrower (or gone) and whose projection shortcut may be gone:
    relu(branch(x) + shortcut(x)), relu(shortcut(x)), relu(branch(x)), or x itself (no branch, identity
    shortcut; `hwnas.spaces.gated_resnet.materialise` drops such blocks instead)."""

    def __init__(self, block: BlockPosition, fraction: float, shortcut: bool = True):
        super().__init__()
        if fraction == 0 and block.projection and not shortcut:
            raise HwnasError(f"block {block.name}: a block without branch and shortcut has no output")
        self.identity_shortcut = not block.projection
        mid = inner_width(fraction, block.c_out)
        self.branch = _branch(block.c_in, mid, block.c_out, block.stride) if fraction > 0 else None
        self.downsample = (nn.Sequential(nn.Conv2d(block.c_in, block.c_out, 1, stride=block.stride, bias=False),
                                         nn.BatchNorm2d(block.c_out)) if block.projection and shortcut else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch is None:
            return x if self.identity_shortcut else torch.relu(self.downsample(x))
        out = self.branch(x)
        if self.identity_shortcut:
            return torch.relu(out + x)
        return torch.relu(out if self.downsample is None else out + self.downsample(x))


def pruned_resnet18(cfg: SpaceConfig, fractions: dict) -> nn.Module:
    """torchvision's resnet18 with each block's branch at its fraction, and projection shortcuts kept
    or not (the arch dict of `pruned_keys`), with fresh weights (for end-to-end timing)."""
    pruned_keys(cfg, fractions)  # validates names and fractions
    fr, sc = split_arch(cfg, fractions)
    model = torchvision_resnet18(cfg)
    for block in block_positions(cfg):
        stage, idx = block.name.split(".")
        getattr(model, stage)[int(idx)] = PrunedBlock(block, fr[block.name], sc[block.name])
    return model.eval()
