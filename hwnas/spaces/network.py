"""The discrete network of a genotype (the DARTS "augment" network), with auxiliary head and drop-path.

Layer for layer the reference `NetworkCIFAR`, so parameter counts agree with it; the input
channels are a parameter (1 for MNIST) and the auxiliary head also works below 8×8.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.spaces.depthwise import run_op
from hwnas.spaces.genotype import Genotype
from hwnas.spaces.ops import FactorizedReduce, Identity, ReLUConvBN, drop_path, make_op
from hwnas.spaces.supernet import reduction_layers


@dataclass(frozen=True)
class NetworkConfig:
    channels: int = 36
    layers: int = 20
    num_classes: int = 10
    in_channels: int = 3
    auxiliary: bool = False
    stem_multiplier: int = 3


class Cell(nn.Module):
    def __init__(self, genotype: Genotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        edges, concat = (genotype.reduce, genotype.reduce_concat) if reduction else (genotype.normal, genotype.normal_concat)
        self.indices = [j for _, j in edges]
        self.concat = list(concat)
        self.multiplier = len(concat)
        self.ops = nn.ModuleList(make_op(name, c, 2 if reduction and j < 2 else 1, affine=True) for name, j in edges)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self.ops) // 2):
            s = None
            for k in (2 * i, 2 * i + 1):
                op = self.ops[k]
                x = states[self.indices[k]]
                # training: depthwise convs without the taps that read only padding (same numbers, faster on small
                # maps: hwnas.spaces.depthwise); eval mode, which export and the profilers run, keeps the plain convs
                h = run_op(op, x) if self.training else op(x)
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                s = h if s is None else s + h
            states.append(s)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS's CIFAR auxiliary head. The reference pools an 8×8 map with AvgPool(5, stride 3) to 2×2;
    any other size is pooled adaptively to 2×2 (identical parameters, so counts still agree)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 128, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(128)
        self.conv2 = nn.Conv2d(128, 768, 2, bias=False)
        self.bn2 = nn.BatchNorm2d(768)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if x.shape[-2:] == (8, 8):
            x = F.avg_pool2d(x, 5, stride=3, padding=0, count_include_pad=False)
        else:
            x = F.adaptive_avg_pool2d(x, 2)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))  # (B, 768, 1, 1)
        return self.classifier(torch.flatten(x, 1))


class DiscreteNetwork(nn.Module):
    """Stem → cells of the genotype → global pool → linear; `drop_path_prob` is set by the trainer."""

    def __init__(self, genotype: Genotype, cfg: NetworkConfig):
        super().__init__()
        self.cfg = cfg
        self.genotype = genotype
        self.drop_path_prob = 0.0
        c_curr = cfg.stem_multiplier * cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, cfg.channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        self.aux_position = reduction_layers(cfg.layers)[1]
        c_aux = None
        for i in range(cfg.layers):
            reduction = i in reduction_layers(cfg.layers)
            if reduction:
                c_curr *= 2
            cell = Cell(genotype, c_pp, c_p, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self.aux_position:
                c_aux = c_p
        self.auxiliary_head = AuxiliaryHead(c_aux, cfg.num_classes) if cfg.auxiliary else None
        self.classifier = nn.Linear(c_p, cfg.num_classes)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, auxiliary logits or None): the auxiliary head runs only when training."""
        aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(torch.flatten(F.adaptive_avg_pool2d(s1, 1), 1))
        return logits, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one sample (shape `input_shape`, no batch) through `model` in eval mode, as torch counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    return float(counter.get_total_flops())


def count_parameters(model: nn.Module, exclude_auxiliary: bool = True) -> int:
    """Parameters, without the auxiliary head by default (as the DARTS reference reports them)."""
    return sum(p.numel() for n, p in model.named_parameters() if not (exclude_auxiliary and "auxiliary" in n))
