"""A found architecture's accuracy with the weights it inherits from the supernet.

The supernet's BN running statistics belong to the mixture (or to the random single paths)
it was trained as, not to any one sub-network, and its classifier saw that mixture's
features: evaluated as it is, a derived sub-network scores far below what it is worth
(24 % against 97 % relaxed on the digits quickstart). The same two repairs are applied to
every architecture along λ, so the numbers compare:

1. an optional short fine-tune of the sub-network alone (`steps` SGD steps on the weights
   half of the search split, the same batches in the same order for every architecture,
   cosine-annealed from the search's initial weight learning rate), on a copy: the supernet
   is not changed;
2. BN recalibration: running statistics reset and re-estimated (cumulative average) on
   `recal_batches` training batches, then evaluation in eval mode, as the network would be
   deployed.

The result is what `pareto.csv` reports as `val_acc`; its rank agreement with training each
network from scratch is measured in `benchmarks/pareto_rank.py`.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from hwnas.evaluation import evaluate
from hwnas.search.lambda_max import one_hot
from hwnas.search.objective import RelaxedArch
from hwnas.spaces.genotype import Genotype, edge_ops


@dataclass(frozen=True)
class InheritConfig:
    steps: int = 20            # fine-tune steps of each sub-network (0: BN recalibration only)
    recal_batches: int = 10    # training batches that re-estimate BN statistics
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.recal_batches < 1:
            raise ValueError("fine-tune steps must be non-negative and BN recalibration batches positive")


def _batches(loader: DeviceLoader, n: int):
    """n batches, cycling through epochs when the split is short."""
    return itertools.islice(itertools.chain.from_iterable(iter(loader) for _ in range(n)), n)


def recalibrate_bn(net: nn.Module, forward, batches) -> None:
    """Reset every BN's running statistics and re-estimate them as a cumulative average over `batches`."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    net.train()
    with torch.no_grad():
        for x, _ in batches:
            forward(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.eval()


def inherited_accuracy(search, genotype: Genotype, cfg: InheritConfig = InheritConfig()) -> tuple[float, float]:
    """(loss, accuracy) on the search's validation split of `genotype` with inherited, recalibrated
    (and, with cfg.steps, briefly fine-tuned) weights. The supernet itself is left untouched.
    (For HyperDARTS, set λ beforehand: the inherited weights are w_φ(α(λ)).)"""
    ops_n, ops_r = edge_ops(genotype)
    n_ops = search.net.cfg.n_ops
    device = search.device
    ra = RelaxedArch(one_hot(ops_n, n_ops, device), one_hot(ops_r, n_ops, device), ops_n, ops_r)
    net = copy.deepcopy(search.net)
    params = search.eval_params()
    if params is not None:  # HyperDARTS: start from the best-response weights
        net.load_state_dict(params, strict=False)
    forward = lambda x: net(x, ra.w_normal, ra.w_reduce, ra.idx_normal, ra.idx_reduce)  # noqa: E731
    if cfg.steps > 0:
        lr = search.cfg.w_lr
        opt = torch.optim.SGD(net.parameters(), lr, momentum=search.cfg.w_momentum,
                              weight_decay=search.cfg.w_weight_decay)
        net.train()
        loader = search.recal_loader(cfg.seed * 1000 + 11)
        for k, (x, y) in enumerate(_batches(loader, cfg.steps)):
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * k / cfg.steps))
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(forward(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), search.cfg.grad_clip)
            opt.step()
    recalibrate_bn(net, forward, _batches(search.recal_loader(cfg.seed * 1000 + 12), cfg.recal_batches))
    return evaluate(forward, search.eval_loader)
