"""The fused cell path (hwnas.spaces.fused) against the per-edge MixedOp reference, in float64."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.func import functional_call

from hwnas.spaces import supernet
from hwnas.spaces.supernet import Supernet, SupernetConfig
from tests.supernet_pairs import reference_and_fused

ATOL = 1e-10


@pytest.fixture(autouse=True)
def _fused_without_grad(monkeypatch):
    """Forward passes without gradients run per edge on the CPU (faster there); here the fused path is tested."""
    monkeypatch.setattr(supernet, "FUSED_WITHOUT_GRAD", True)


def _pair(layers: int, seed: int = 0) -> tuple[Supernet, Supernet]:
    return reference_and_fused(SupernetConfig(channels=4, layers=layers, in_channels=1, steps=4), seed)


def _weights(kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        logits = torch.randn(14, 8, generator=g, dtype=torch.float64)
        w = logits.softmax(-1) if kind == "softmax" else logits.sigmoid()  # sigmoid: rows do not sum to 1
        w[torch.rand(14, 8, generator=g) < 0.2] = 0.0  # some exactly-zero weights
        out.append(w.requires_grad_())
    return out[0], out[1]


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-9)


@pytest.mark.parametrize("layers,size,kind", [(3, 8, "softmax"), (3, 7, "sigmoid"), (5, 8, "sigmoid"),
                                              (5, 7, "softmax")])
def test_fused_matches_per_edge(layers: int, size: int, kind: str) -> None:
    ref, fused = _pair(layers)
    x = torch.randn(6, 1, size, size, dtype=torch.float64)
    y = torch.randint(0, 10, (6,))
    results = []
    for net in (ref, fused):
        wn, wr = _weights(kind, seed=1)
        out = net(x, wn, wr)
        loss = torch.nn.functional.cross_entropy(out, y) + out.square().mean()
        grads = torch.autograd.grad(loss, [wn, wr, *net.parameters()])
        results.append((out.detach(), grads))
    _close(results[0][0], results[1][0])
    for ga, gb in zip(results[0][1], results[1][1]):
        _close(ga, gb)
    # the train-mode forward left every BN buffer (running stats, batch counters) as the reference did
    sd_ref, sd_fused = ref.state_dict(), fused.state_dict()
    for k in sd_ref:
        torch.testing.assert_close(sd_ref[k], sd_fused[k], atol=ATOL, rtol=1e-9, msg=k)
    # eval mode: every edge normalises with its own buffers
    ref.eval()
    fused.eval()
    wn, wr = _weights(kind, seed=2)
    with torch.no_grad():
        _close(ref(x, wn, wr), fused(x, wn, wr))


def test_functional_call_with_substituted_params() -> None:
    ref, fused = _pair(3, seed=3)
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    params = {n: (p + 0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype)).requires_grad_()
              for n, p in ref.named_parameters()}
    outs, grads = [], []
    for net in (ref, fused):
        wn, wr = _weights("softmax", seed=5)
        out = functional_call(net, params, (x, wn, wr), strict=False)
        outs.append(out)
        grads.append(torch.autograd.grad(out.sum(), [wn, wr, *params.values()]))
    _close(outs[0], outs[1])
    for ga, gb in zip(*grads):
        _close(ga, gb)
    # and the substitution really took effect (weights are read at call time, not cached)
    with torch.no_grad():
        plain = fused(x, *_weights("softmax", seed=5))
    assert not torch.allclose(plain, outs[1].detach())


def test_hard_indices_use_per_edge_path() -> None:
    """A hard sample evaluates w[i]·op_i on each edge: the same as the full soft mixture (the reference
    path, no indices) with every other op's weight set to 0 — values and gradients to w."""
    ref, fused = _pair(3, seed=6)
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    wn, wr = (torch.randn(14, 8, generator=g, dtype=torch.float64).softmax(-1).requires_grad_() for _ in range(2))
    idx_n, idx_r = (torch.randint(1, 8, (14,), generator=g).tolist() for _ in range(2))  # any op, not the argmax
    hard = fused(x, wn, wr, idx_n, idx_r)
    grads_hard = torch.autograd.grad(hard.square().sum(), [wn, wr])
    mask_n, mask_r = (torch.nn.functional.one_hot(torch.tensor(i), 8).double() for i in (idx_n, idx_r))
    soft = ref(x, wn * mask_n, wr * mask_r)
    grads_soft = torch.autograd.grad(soft.square().sum(), [wn, wr])
    _close(hard, soft)
    for a, b in zip(grads_hard, grads_soft):
        _close(a, b)
        assert (a[(mask_n if a is grads_hard[0] else mask_r) == 0] == 0).all()  # only the sampled op's weight learns


def test_flag_leaves_state_dict_unchanged() -> None:
    cfg = SupernetConfig(channels=4, layers=5, in_channels=1)
    a = Supernet(dataclasses.replace(cfg, fused=False)).state_dict()
    b = Supernet(dataclasses.replace(cfg, fused=True)).state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_channels_last_float32_close() -> None:
    """The benchmark layout: channels_last float32 agrees with the reference to float32 rounding."""
    ref, fused = _pair(3, seed=8)
    ref, fused = (n.float().to(memory_format=torch.channels_last) for n in (ref, fused))
    x = torch.randn(4, 1, 8, 8).to(memory_format=torch.channels_last)
    wn, wr = (w.detach().float() for w in _weights("sigmoid", seed=9))
    with torch.no_grad():
        torch.testing.assert_close(ref(x, wn, wr), fused(x, wn, wr), atol=1e-4, rtol=1e-4)
