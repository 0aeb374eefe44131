"""Architecture-gradient strategies: how ∇α is obtained at each search step.

- first order: ∇α L_val(w, α), treating w as fixed (DARTS-1st).
- second order: the gradient of L_val(w′, α) with w′ = w − ξ ∇w L_train(w, α) (one unrolled
  step, without the optimiser's momentum and weight decay, as in the design notes):
      ∇α L_val(w′, α) − ξ · ∇²_{α,w} L_train(w, α) · ∇w′ L_val(w′, α)
  The Hessian-vector term is exact by default: ∇α ⟨∇w L_train(w, α), v⟩ with v = ∇w′ L_val(w′, α),
  by double backprop. DARTS's central finite difference (∇α L_train(w⁺, α) − ∇α L_train(w⁻, α)) / (2ε),
  w± = w ± ε v, ε = fd_scale/‖v‖ (DARTS: fd_scale 0.01), is kept as `fd_scale=` and is not the
  default because on a ReLU network it is not the term: between w⁺ and w⁻ ReLU signs and max-pool
  argmaxes flip, in proportion to ε, and each flip is a jump in ∇α L_train that the difference divides
  by 2ε. On the default supernet (digits, 8 channels, 5 cells, batch 64, batch-statistics BN as the
  α passes run, 30 warm-up steps, 3 seeds; `benchmarks/second_order_fd.py`) about 15,000 units flip
  at fd_scale 0.01, and the term's relative error in float32 is 2.7 at 0.01 (0.9–2.8 over the seeds),
  0.85 at 0.1 (the least wrong scale, barely better than leaving the term out), 6.9 at 1e-3 and 13 at
  1e-4; only where nothing flips (1e-6 here) does it converge (2e-9 in float64), and float32 rounding
  then gives 4.1. The exact product's error is 2e-6 in float32. Tests: `tests/test_search.py`.
  One Gumbel draw is shared by all passes.
- one-level: α and w follow the same training loss; handled by the search loop, since α
  steps together with w there.
- hyper-linear / hyper-mlp (HyperDARTS): ∇α L_val(w_φ(α), α) through a learnt best-response
  hypernetwork φ; see `hwnas.search.hyperdarts`.

Each function writes α's gradient into `.grad` and returns the validation loss and logits
that it computed (for metrics without an extra forward pass).

The supernet runs its α passes in train mode (batch statistics, as DARTS does), which would
also move the BN running statistics — with the validation batch and the w′, w± passes, up to
four times per step — and the eval-mode validation accuracy reads those statistics. The search
loop therefore runs every α step inside `bn_stats_kept`: only weight steps on training batches
update them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from hwnas.config import ARCH_GRADS  # noqa: F401  (its home; imported from here too)
from hwnas.search.objective import SearchObjective


@contextmanager
def bn_stats_kept(net: nn.Module) -> Iterator[None]:
    """Run a block with the BN running statistics (mean, variance, batch count) restored afterwards."""
    saved = [(b, b.detach().clone()) for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def _arch_params(obj: SearchObjective) -> list[torch.Tensor]:
    return [p for p in obj.arch.parameters() if p.requires_grad]


def _accumulate(params: list[torch.Tensor], grads: tuple[torch.Tensor | None, ...]) -> None:
    for p, g in zip(params, grads):
        if g is None:
            continue
        p.grad = g.detach().clone() if p.grad is None else p.grad + g


def first_order(obj: SearchObjective, x_val: torch.Tensor, y_val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ra = obj.sample()
    loss, logits = obj.loss(x_val, y_val, ra)
    alphas = _arch_params(obj)
    _accumulate(alphas, torch.autograd.grad(loss + obj.penalty(ra), alphas, allow_unused=True))
    return loss.detach(), logits.detach()


def second_order(obj: SearchObjective, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
                 y_val: torch.Tensor, xi: float, fd_scale: float | None = None,
                 reduce: Callable[[list[torch.Tensor]], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Second-order DARTS: α's gradient of L_val(w − ξ∇w L_train(w, α), α), written into `.grad`.

    The Hessian-vector term ∇²_{α,w} L_train · v (v = ∇w′ L_val(w′)) is exact by double backprop when
    `fd_scale` is None (the default), else DARTS's central finite difference at w ± ε·v with
    ε = fd_scale/‖v‖ (see the module docstring for why the default is not a finite difference).

    `reduce` (data-parallel runs: `hwnas.distributed.average_`) averages a list of tensors over the processes in
    place; the unroll needs the global batch's ∇w L_train (for w′) and ∇w′ L_val (v) mid-way. The α gradient
    written here is then this process's share, to be averaged like any other gradient: ∇α ⟨g_r, v⟩ averaged
    over the slices r is ∇α ⟨ḡ, v⟩, since ⟨·, v⟩ is linear."""
    names, weights = zip(*[(n, p) for n, p in obj.net.named_parameters() if p.requires_grad])
    alphas = _arch_params(obj)
    ra = obj.sample()
    exact = fd_scale is None

    # w′ = w − ξ ∇w L_train(w, α), detached from α: its α-dependence is the Hessian term below. For the
    # exact term the graph of ∇w L_train is kept, to be differentiated once more (in α) along v.
    loss_t, _ = obj.loss(x_train, y_train, ra)
    g_w = torch.autograd.grad(loss_t, weights, allow_unused=True, create_graph=exact)
    g_step = [None if g is None else g.detach() for g in g_w]
    if reduce is not None:  # the global batch's ∇w L_train (copies: g_w stays in the graph of the exact term)
        g_step = [None if g is None else g.clone() for g in g_step]
        reduce(g_step)
    unrolled = {n: (w - xi * g if g is not None else w).detach().requires_grad_()
                for n, w, g in zip(names, weights, g_step)}

    ra_v = obj.sample(like=ra)
    loss_v, logits_v = obj.loss(x_val, y_val, ra_v, params=unrolled)
    # The cost term depends on α only: it adds to ∇α directly and cancels out of the Hessian term.
    grads = torch.autograd.grad(loss_v + obj.penalty(ra_v), [*alphas, *unrolled.values()], allow_unused=True)
    d_alpha, d_w = grads[: len(alphas)], grads[len(alphas):]
    d_w = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, d_w)]
    if reduce is not None:
        reduce(d_w)  # v of the global batch: the direction (and ε) must be the same on every process

    if exact:
        dot = sum((g * d).sum() for g, d in zip(g_w, d_w) if g is not None and g.requires_grad)
        hvps = torch.autograd.grad(dot, alphas, allow_unused=True) if torch.is_tensor(dot) else (None,) * len(alphas)
    else:
        norm = torch.sqrt(sum((g.float() ** 2).sum() for g in d_w))
        eps = fd_scale / (norm + 1e-12)  # a tensor: no host synchronisation

        def grad_alpha_at(sign: float) -> tuple[torch.Tensor | None, ...]:
            shifted = {n: (w + sign * eps * d).detach() for n, w, d in zip(names, weights, d_w)}
            loss, _ = obj.loss(x_train, y_train, obj.sample(like=ra), params=shifted)
            return torch.autograd.grad(loss, alphas, allow_unused=True)

        g_plus, g_minus = grad_alpha_at(+1.0), grad_alpha_at(-1.0)
        hvps = tuple(None if gp is None else (gp - gm) / (2 * eps) for gp, gm in zip(g_plus, g_minus))
    total = []
    for da, hvp, a in zip(d_alpha, hvps, alphas):
        da = torch.zeros_like(a) if da is None else da
        total.append(da if hvp is None else da - xi * hvp)
    _accumulate(alphas, tuple(total))
    return loss_v.detach(), logits_v.detach()
