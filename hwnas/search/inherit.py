"""A found architecture's accuracy with the weights it inherits from the supernet.

The supernet's BN running statistics belong to the mixture (or to the random single paths)
it was trained as, not to any one sub-network, and its classifier saw that mixture's
features: evaluated as it is, a derived sub-network scores far below what it is worth
(24 % against 97 % relaxed on the digits quickstart). And a λ-hypernet's supernet trains
mostly at cheap cells (α(λ) reaches them early in [0, Λ], and λ is uniform), so with what
they inherit the expensive networks of a front score *below* the cheap ones, the reverse of
training them from scratch (MNIST, mlp hypernet: Kendall τ −0.14 against training from
scratch). The same repairs are applied to every architecture along λ, so the numbers compare:

1. a front fine-tune (`front_finetune`, `front_steps` per network, `hwnas.config.FRONT_STEPS` =
   400 by default): a copy of the supernet is trained on the front's distinct networks in turn,
   each the same number of steps, every shared weight learning from all that use it. The longer
   it is, the less the supernet's own training mix shows: on an MNIST mlp search with margin 3
   the two cheapest networks inherited *more* than four costlier ones after 40 steps each
   (τ 0.14 against the 3-seed mean from scratch), τ 0.43 / 0.50–0.57 / 0.29–0.79 after 100 / 200 /
   400 (one search, the ranges over pareto's batch orders: after 400 steps the front's inherited
   accuracies lie within 0.6 points, where the batch order decides their order; on an earlier search
   20–60 steps gave 0.50–0.79; on the quickstart's digits search 400 steps rank at τ 0.89);
2. an optional short fine-tune of each sub-network alone (`steps`, 0 by default; the same
   batches in the same order for every architecture);
3. BN recalibration: running statistics reset and re-estimated (cumulative average) on
   `recal_batches` training batches, then evaluation in eval mode, as the network would be
   deployed.

Fine-tunes are SGD on the weights half of the search split, cosine-annealed from the search's
initial weight learning rate, on copies: the supernet is not changed. The result is what
`pareto.csv` reports as `val_acc`; its rank agreement with training each network from scratch
is measured in `benchmarks/pareto_rank.py`.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from hwnas.config import FRONT_STEPS
from hwnas.evaluation import evaluate, merged
from hwnas.search.lambda_max import one_hot
from hwnas.search.objective import RelaxedArch
from hwnas.spaces.genotype import Genotype, edge_ops


@dataclass(frozen=True)
class InheritConfig:
    steps: int = 0             # fine-tune steps of each sub-network alone
    recal_batches: int = 10    # training batches that re-estimate BN statistics
    seed: int = 0
    front_steps: int = FRONT_STEPS  # per network: shared steps on the front's networks in turn first (`front_finetune`)

    def __post_init__(self) -> None:
        if self.steps < 0 or self.recal_batches < 1 or self.front_steps < 0:
            raise ValueError("fine-tune steps must be non-negative and BN recalibration batches positive")


def _batches(loader: DeviceLoader, n: int):
    """n batches, cycling through epochs when the split is short."""
    return itertools.islice(itertools.chain.from_iterable(iter(loader) for _ in range(n)), n)


def recalibrate_bn(net: nn.Module, forward, batches) -> None:
    """Reset every BN's running statistics and re-estimate them as a cumulative average over `batches`
    (merged into forwards of up to `hwnas.evaluation.MERGE_SAMPLES` samples: each chunk's statistics are one
    term of the average)."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    net.train()
    with torch.no_grad():
        for x, _ in merged(batches):
            forward(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.eval()


def _sgd(search, net: nn.Module) -> torch.optim.Optimizer:
    c = search.cfg
    return torch.optim.SGD(net.parameters(), c.w_lr, momentum=c.w_momentum, weight_decay=c.w_weight_decay)


def _relaxed(search, genotype: Genotype) -> RelaxedArch:
    ops_n, ops_r = edge_ops(genotype)
    n_ops, device = search.net.cfg.n_ops, search.device
    return RelaxedArch(one_hot(ops_n, n_ops, device), one_hot(ops_r, n_ops, device), ops_n, ops_r)


def _train(search, net: nn.Module, archs: list[RelaxedArch], steps: int, seed: int) -> None:
    """`steps` cosine-annealed SGD steps of `net`, step k on architecture k mod len(archs)."""
    lr = search.cfg.w_lr
    opt = _sgd(search, net)
    net.train()
    for k, (x, y) in enumerate(_batches(search.recal_loader(seed), steps)):
        ra = archs[k % len(archs)]
        for group in opt.param_groups:
            group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * k / steps))
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(x, ra.w_normal, ra.w_reduce, ra.idx_normal, ra.idx_reduce), y)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), search.cfg.grad_clip)
        opt.step()


def front_finetune(search, genotypes: list[Genotype], steps: int, seed: int = 0) -> nn.Module:
    """A copy of the supernet whose shared weights are trained `steps` SGD steps on the given sub-networks in turn
    (round robin: each gets the same number of steps, and every shared weight learns from all that use it).

    Why: a λ-hypernet's supernet is trained at α(λ) for λ uniform in [0, Λ], and α(λ) reaches the cheap cells
    early, so the expensive networks of the front get a few percent of the weight steps; evaluated with what they
    inherit they score below the cheap ones, the reverse of training them from scratch. Training the weights on
    the front itself, equally, removes that bias before each network is judged."""
    net = copy.deepcopy(search.net)
    if steps > 0:
        _train(search, net, [_relaxed(search, g) for g in genotypes], steps, seed * 1000 + 13)
    return net


def inherited_accuracy(search, genotype: Genotype, cfg: InheritConfig = InheritConfig(),
                       net: nn.Module | None = None, scratch: nn.Module | None = None) -> tuple[float, float]:
    """(loss, accuracy) on the search's validation split of `genotype` with inherited, recalibrated
    (and, with cfg.steps, briefly fine-tuned) weights: the supernet's, or `net`'s (e.g. `front_finetune`'s).
    Neither is changed. (For HyperDARTS, set λ beforehand: the inherited weights are w_φ(α(λ)).)

    The work is done on a copy: `scratch`, a module of the same structure whose parameters and buffers are
    overwritten here (a state-dict copy: 0.1 s for a 5-cell digits supernet against 0.5 s for a deep copy), or a
    fresh deep copy."""
    ra = _relaxed(search, genotype)
    src = search.net if net is None else net
    if scratch is not None:
        scratch.load_state_dict(src.state_dict())
        net = scratch
    else:
        net = copy.deepcopy(src)
    params = search.eval_params()
    if params is not None:  # HyperDARTS: start from the best-response weights
        net.load_state_dict(params, strict=False)
    forward = lambda x: net(x, ra.w_normal, ra.w_reduce, ra.idx_normal, ra.idx_reduce)  # noqa: E731
    if cfg.steps > 0:
        _train(search, net, [ra], cfg.steps, cfg.seed * 1000 + 11)
    recalibrate_bn(net, forward, _batches(search.recal_loader(cfg.seed * 1000 + 12), cfg.recal_batches))
    return evaluate(forward, merged(search.eval_loader))  # eval-mode BN: merging changes nothing
