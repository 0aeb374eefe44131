"""The pruned network a gate set stands for, with its BN statistics re-estimated (`hwnas prune`'s default).

A BN layer's running statistics belong to the network they were measured in. Pruning a block's inner
channels changes what every later BN sees, so the pruned network with the intact network's statistics
judges the gate set by a mismatch that a few forward passes remove. Measured on the MNIST ResNet18
(frozen weights, gate sets of a greedy removal path, 256 validation images): 4.65 ms predicted (0.75×)
at 90.2 % with the intact statistics and 98.0 % re-estimated; 3.79 ms (0.61×) at 60.2 % and 94.5 %;
3.28 ms (0.53×) at 48.4 % and 70.3 %. Re-estimating BN to rank pruned candidates is EagleEye's
"adaptive BN" (Li et al., ECCV 2020).

So, with `PruneConfig.bn == "adapt"`: the gate fit normalises with batch statistics
(`GatedResNet18(batch_stats=True)`), and every pruned network that is evaluated (Λ's samples, pareto.csv)
or exported has its running statistics re-estimated on the first `CALIBRATION_SAMPLES` images of the weights
half (no augmentation; the same images whenever the run is rebuilt). The intact network of a frozen-weight
run keeps the pretrained statistics: λ = 0 is exactly the pretrained network.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from hwnas.search.inherit import recalibrate_bn
from hwnas.spaces.gated_resnet import GateSet, materialise

CALIBRATION_SAMPLES = 512
CALIBRATION_BATCH = 128
BN_MODES = ("adapt", "frozen")


def needs_calibration(gates: GateSet, bn: str, finetuned: bool) -> bool:
    """Whether the network of `gates` gets re-estimated BN statistics: always with `adapt`, except the intact
    network with the pretrained (not fine-tuned) weights, whose statistics are its own."""
    return bn == "adapt" and (finetuned or gates != GateSet())


@torch.no_grad()
def pruned_network(model: nn.Module, gates: GateSet, calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
                   bn: str = "adapt", finetuned: bool = False) -> nn.Module:
    """`materialise(model, gates)` (a copy, eval mode), with BN statistics re-estimated on `calibration`
    when `needs_calibration`."""
    net = materialise(model, gates)
    if calibration is not None and needs_calibration(gates, bn, finetuned):
        recalibrate_bn(net, net, calibration)
    return net.eval()
