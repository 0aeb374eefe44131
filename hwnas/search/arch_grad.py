"""Architecture-gradient strategies: how ∇α is obtained at each search step.

- first order: ∇α L_val(w, α), treating w as fixed (DARTS-1st).
- second order: the gradient of L_val(w′, α) with w′ = w − ξ ∇w L_train(w, α) (one unrolled
  step, without the optimiser's momentum and weight decay, as in the design notes):
      ∇α L_val(w′, α) − ξ · ∇²_{α,w} L_train(w, α) · ∇w′ L_val(w′, α)
  where the mixed second derivative times a vector is the central finite difference
      (∇α L_train(w⁺, α) − ∇α L_train(w⁻, α)) / (2ε),  w± = w ± ε ∇w′ L_val(w′, α),
  ε = 0.01 / ‖∇w′ L_val‖ (DARTS's choice). One Gumbel draw is shared by all four passes.
  A ReLU network is only piecewise smooth, and a step of norm 0.01 crosses activation
  kinks, so this is an approximation of the exact hypergradient (which tests check it
  converges to as `fd_scale` shrinks), not merely a rounding of it.
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

from collections.abc import Iterator
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
                 y_val: torch.Tensor, xi: float, fd_scale: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    names, weights = zip(*[(n, p) for n, p in obj.net.named_parameters() if p.requires_grad])
    alphas = _arch_params(obj)
    ra = obj.sample()

    # w′ = w − ξ ∇w L_train(w, α), detached from α: its α-dependence is the Hessian term below.
    loss_t, _ = obj.loss(x_train, y_train, ra)
    g_w = torch.autograd.grad(loss_t, weights, allow_unused=True)
    unrolled = {n: (w - xi * g if g is not None else w).detach().requires_grad_() for n, w, g in zip(names, weights, g_w)}

    ra_v = obj.sample(like=ra)
    loss_v, logits_v = obj.loss(x_val, y_val, ra_v, params=unrolled)
    # The cost term depends on α only: it adds to ∇α directly and cancels out of the Hessian term.
    grads = torch.autograd.grad(loss_v + obj.penalty(ra_v), [*alphas, *unrolled.values()], allow_unused=True)
    d_alpha, d_w = grads[: len(alphas)], grads[len(alphas):]
    d_w = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, d_w)]

    norm = torch.sqrt(sum((g.float() ** 2).sum() for g in d_w))
    eps = fd_scale / (norm + 1e-12)  # a tensor: no host synchronisation

    def grad_alpha_at(sign: float) -> tuple[torch.Tensor | None, ...]:
        shifted = {n: (w + sign * eps * d).detach() for n, w, d in zip(names, weights, d_w)}
        loss, _ = obj.loss(x_train, y_train, obj.sample(like=ra), params=shifted)
        return torch.autograd.grad(loss, alphas, allow_unused=True)

    g_plus, g_minus = grad_alpha_at(+1.0), grad_alpha_at(-1.0)
    total = []
    for da, gp, gm, a in zip(d_alpha, g_plus, g_minus, alphas):
        da = torch.zeros_like(a) if da is None else da
        hvp = (torch.zeros_like(a) if gp is None else gp - gm) / (2 * eps)
        total.append(da - xi * hvp)
    _accumulate(alphas, tuple(total))
    return loss_v.detach(), logits_v.detach()
