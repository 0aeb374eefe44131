"""HyperDARTS: a hypernetwork φ models the best-response weights w_φ(α), so that the architecture
gradient ∇α L_val(w_φ(α), α) is exact through φ (no unrolled step, no finite differences).

DARTS approximates w*(α) = argmin_w L_train(w, α) by one unrolled SGD step and carries that
error (and, with its finite-difference Hessian, that approximation's) into every α update. Here, as in self-tuning
networks (MacKay et al., 2019), the best response is *learnt*: φ is fitted on the training
split at architectures drawn around the current α, and α is then stepped on the validation
split through w_φ(α) by plain autograd.

The form of w_φ(α): structured, per-channel modulation of the shared weights
-----------------------------------------------------------------------------
A hypernetwork that emitted every supernet weight would be several hundred times the size of
the network. As in self-tuning networks, φ instead *rescales* shared weights per channel:

    w_φ(α)[m, c] = w[m, c] · (1 + s_{m,c}(α)),     s_{m,c}(α) = d_{m,c} · g_m(α)

- m runs over the modulated tensors, c over their channels. g: R^{|α|} → R^M gives one gain per
  tensor, d (M tensors × channels) is a learnt channel profile per tensor: a rank-1 per-tensor
  factorisation of a per-channel modulation, so the hypernet's output is M numbers, not Σ C.
- hyper-linear (HyperDARTS-1): g(α) = U vec(α) + c.
  hyper-mlp (HyperDARTS-2):    g(α) = U σ(V vec(α) + b) + c, hidden width |α| / 2.
  U and c are zero-initialised, so w_φ(α) = w at the start (the search starts as first-order DARTS).
- What is modulated, and why there: the DARTS ops end in BatchNorm(affine=False), and in
  training mode BN removes any per-output-channel scale of the conv that feeds it. So:
  * the depthwise convs inside the sep/dil convs, per output channel: their channels are mixed
    by the following pointwise conv, so a per-channel scale changes what the op computes. A
    *uniform* scale would still be normalised away (and g, d would sit at a saddle with zero
    gradient), so their profile d starts random, N(0, 1);
  * the cells' 1×1 preprocessing convs, per *input* channel: their input is the previous
    cell's concatenated node outputs, whose scales move with the op weights relax(α); this is
    where the next cell can re-weight them;
  * the classifier, per input feature (no BN after it; with d = 1 it is an α-dependent
    temperature). These two start with d = 1.

For the default MNIST supernet (8 channels, 5 cells) that is M = 433 tensors and 9,480 channels:
107k φ parameters for hyper-linear and 84k for hyper-mlp (`BestResponse.size()`; the supernet
has 394k), against about 1M for a per-channel output layer and far more for emitting every weight.

Training alternates (`Search.step`): the α step (`hyper_arch_grad`), then the weight/φ step
(`hyper_weight_loss`): on a training batch, α̃ = α + σ·ε with ε ~ N(0, I), and L_train(w_φ(α̃), α̃)
is minimised w.r.t. w and φ. σ (`SearchConfig.hyper_sigma`, 0.5 by default) sets the
neighbourhood over which φ learns the best response: the α step only needs w_φ's slope near
the current α, but a radius much below the scale on which relaxed weights change (α logits of
order 1; softmax(α ± 0.5) moves op weights by about ±50 % relative) gives φ almost no signal
to learn that slope from among the minibatch noise.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from hwnas.search.arch_grad import _accumulate, _arch_params
from hwnas.search.objective import SearchObjective

HYPER_GRADS = {"hyper-linear": "linear", "hyper-mlp": "mlp"}  # --arch-grad → hypernet form


def modulation_targets(net: nn.Module) -> list[tuple[str, int, int]]:
    """(parameter name, channels, channel dim) of every tensor w_φ modulates: the depthwise conv
    weights of the conv ops (per output channel) and the classifier weight (per input feature)."""
    out = []
    for name, m in net.named_modules():
        if not isinstance(m, nn.Conv2d):
            continue
        if m.groups > 1 and m.groups == m.in_channels == m.out_channels:
            out.append((f"{name}.weight", m.out_channels, 0))    # depthwise weight (C, 1, k, k)
        elif ".preprocess" in name:
            out.append((f"{name}.weight", m.in_channels, 1))     # 1×1 weight (C, C_in, 1, 1)
    out.append(("classifier.weight", net.classifier.in_features, 1))  # weight (classes, C)
    return out


class BestResponse(nn.Module):
    """φ: architecture logits → per-channel scales s(α) of the target tensors (see the module docstring)."""

    def __init__(self, kind: str, targets: list[tuple[str, int, int]], n_arch: int,
                 generator: torch.Generator | None = None):
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise ValueError(f"unknown best-response form {kind!r}; choose linear or mlp")
        self.kind = kind
        self.names = [t[0] for t in targets]
        self.channels = [t[1] for t in targets]
        self.dims = [t[2] for t in targets]
        n_in = n_arch
        if kind == "mlp":
            hidden = max(1, n_arch // 2)
            self.v = nn.Parameter(torch.randn(hidden, n_arch, generator=generator) / math.sqrt(n_arch))
            self.b = nn.Parameter(torch.zeros(hidden))
            n_in = hidden
        self.u = nn.Parameter(torch.zeros(len(targets), n_in))            # zero: w_φ(α) = w at the start
        self.c = nn.Parameter(torch.zeros(len(targets)))
        # channel profiles d: random for depthwise weights (a uniform scale there is normalised away by the BN
        # after the pointwise conv, a saddle where g and d get no gradient), uniform for input channels
        profiles = [torch.randn(n, generator=generator) if dim == 0 else torch.ones(n)
                    for n, dim in zip(self.channels, self.dims)]
        self.direction = nn.Parameter(torch.cat(profiles))
        self.register_buffer("repeats", torch.tensor(self.channels), persistent=False)

    def size(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def gains(self, a_n: torch.Tensor, a_r: torch.Tensor) -> torch.Tensor:
        """g(α): one gain per target tensor, (M,)."""
        a = torch.cat([a_n.flatten(), a_r.flatten()]).to(self.u.dtype)  # vec(α), (|α|,)
        h = a if self.kind == "linear" else torch.sigmoid(self.v @ a + self.b)
        return self.u @ h + self.c

    def forward(self, a_n: torch.Tensor, a_r: torch.Tensor,
                weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{name: w ⊙ (1 + s(α))} for the target tensors, given the shared weights {name: w}."""
        s = torch.repeat_interleave(self.gains(a_n, a_r), self.repeats) * self.direction  # (Σ C,)
        out = {}
        for name, dim, s_m in zip(self.names, self.dims, s.split(self.channels)):
            w = weights[name]
            shape = [1] * w.dim()
            shape[dim] = -1
            out[name] = w * (1 + s_m.to(w.dtype).view(shape))
        return out


def build_best_response(arch_grad: str, net: nn.Module, generator: torch.Generator | None = None) -> BestResponse:
    """φ for `--arch-grad hyper-linear|hyper-mlp` on the supernet `net` (dtype and device of its weights)."""
    p = next(net.parameters())
    n_arch = 2 * net.cfg.n_edges * net.cfg.n_ops  # normal and reduction cell
    return BestResponse(HYPER_GRADS[arch_grad], modulation_targets(net), n_arch, generator).to(p.device, p.dtype)


def best_response_params(hyper: BestResponse, net: nn.Module, a_n: torch.Tensor,
                         a_r: torch.Tensor) -> dict[str, torch.Tensor]:
    """The substituted parameters of w_φ(α) for `SearchObjective.loss(..., params=)` (only the modulated ones:
    the rest are the module's own)."""
    params = dict(net.named_parameters())
    return hyper(a_n, a_r, {n: params[n] for n in hyper.names})


def perturbed_logits(a: torch.Tensor, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    """α̃ = α + σ·ε, ε ~ N(0, I), drawn on the CPU generator (reproducible and resumable), detached."""
    eps = torch.randn(a.shape, generator=generator, dtype=torch.float64)
    return a.detach() + sigma * eps.to(device=a.device, dtype=a.dtype)


def hyper_weight_loss(obj: SearchObjective, hyper: BestResponse, x: torch.Tensor, y: torch.Tensor, sigma: float,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_train(w_φ(α̃), α̃), logits) at a perturbed α̃ around the current α; differentiable in w and φ only."""
    a_n, a_r = obj.arch(obj.lam_input)
    a_n, a_r = perturbed_logits(a_n, sigma, generator), perturbed_logits(a_r, sigma, generator)
    ra = obj.relax_logits(a_n, a_r)
    return obj.loss(x, y, ra, params=best_response_params(hyper, obj.net, a_n, a_r))


def hyper_arch_grad(obj: SearchObjective, hyper: BestResponse, x_val: torch.Tensor,
                    y_val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """∇α [L_val(w_φ(α), α) + λ·Tᵀγ] into α's `.grad` (through a λ-hypernet when α = G(λ)), exact through φ;
    returns the validation loss and logits like `first_order`."""
    a_n, a_r = obj.arch(obj.lam_input)
    ra = obj.relax_logits(a_n, a_r)
    loss, logits = obj.loss(x_val, y_val, ra, params=best_response_params(hyper, obj.net, a_n, a_r))
    alphas = _arch_params(obj)
    _accumulate(alphas, torch.autograd.grad(loss + obj.penalty(ra), alphas, allow_unused=True))
    return loss.detach(), logits.detach()
