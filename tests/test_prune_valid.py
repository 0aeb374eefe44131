"""Γ_valid is built into the gate parametrisation (issue #12.2): relaxed samples and deterministic gate sets
are never broken, the sampling distribution is the per-gate one conditioned on validity, and the most probable
gate set is the brute-force best valid one."""
import itertools

import numpy as np
import pytest
import torch

from hwnas.config import RelaxConfig
from hwnas.prune.gate_sampling import PROJ_BLOCKS, argmax_gates, gate_probabilities, relax_gates
from hwnas.spaces import gated_resnet as gr

HARD = RelaxConfig("gumbel", hard=True, tau_start=1.0, tau_end=1.0)


def broken_favouring_logits(seed=0):
    """Random logits whose per-gate argmax removes layer2.0's branch and its projection shortcut (broken)."""
    g = torch.Generator().manual_seed(seed)
    bl, sl = torch.randn(8, 5, generator=g), torch.randn(3, 2, generator=g)
    bl[2] = torch.tensor([2.0, 0.5, 0.0, -0.5, 1.0])   # layer2.0: "branch removed" the most probable ...
    sl[0] = torch.tensor([1.5, 0.0])                    # ... and "shortcut removed" too
    return bl, sl


def test_per_gate_argmax_of_these_logits_is_broken():
    bl, sl = broken_favouring_logits()
    naive = gr.GateSet.from_indices(bl.argmax(1).tolist(), sl.argmax(1).tolist())
    assert not naive.is_valid()   # what the old, per-gate argmax exported (and refused)


@pytest.mark.parametrize("seed", range(5))
def test_argmax_is_the_best_valid_gate_set_by_brute_force(seed):
    bl, sl = broken_favouring_logits(seed)
    got = argmax_gates(bl, sl)
    assert got.is_valid()
    # Independent reference: the log-probability of a gate set under independent per-gate softmaxes is the
    # sum of its logits minus constants, so the most probable valid set maximises that sum; enumerate the
    # choices of every gate that takes part in a projection block (the others are free: their own argmax).
    lb, ls = torch.log_softmax(bl, 1).numpy(), torch.log_softmax(sl, 1).numpy()
    best, best_score = None, -np.inf
    for choice in itertools.product(range(5), range(2), range(5), range(2), range(5), range(2)):
        branch = bl.argmax(1).tolist()
        shortcut = []
        for p, i in enumerate(PROJ_BLOCKS):
            branch[i], s = choice[2 * p], choice[2 * p + 1]
            shortcut.append(s)
        cand = gr.GateSet.from_indices(branch, shortcut)
        if not cand.is_valid():
            continue
        score = sum(lb[b, f] for b, f in enumerate(branch)) + sum(ls[p, s] for p, s in enumerate(shortcut))
        if score > best_score:
            best, best_score = cand, score
    assert got == best


def test_hard_samples_are_valid_and_follow_the_conditioned_distribution():
    bl, sl = broken_favouring_logits()
    gen = torch.Generator().manual_seed(1)
    n = 4000
    counts = np.zeros((5, 2))
    for _ in range(n):
        wb, ws = relax_gates(bl, sl, HARD, 1.0, gen)
        assert torch.all((wb == 0) | (wb == 1)) and torch.all(wb.sum(1) == 1) and torch.all(ws.sum(1) == 1)
        g = gr.GateSet.from_indices(wb.argmax(1).tolist(), ws.argmax(1).tolist())
        assert g.is_valid()
        counts[int(wb[2].argmax()), int(ws[0].argmax())] += 1
    # Reference: independent per-gate categoricals (numpy softmax), conditioned on the pair being valid.
    pb, ps = np.exp(bl[2].numpy()) / np.exp(bl[2].numpy()).sum(), np.exp(sl[0].numpy()) / np.exp(sl[0].numpy()).sum()
    joint = np.outer(pb, ps)
    joint[0, 0] = 0.0
    joint /= joint.sum()
    assert counts[0, 0] == 0
    se = np.sqrt(joint * (1 - joint) / n)
    assert np.all(np.abs(counts / n - joint) < 4 * se + 1e-3)


def test_marginal_probabilities_match_the_conditioned_distribution():
    bl, sl = broken_favouring_logits(3)
    wb, ws = gate_probabilities(bl, sl)
    pb, ps = torch.softmax(bl[2], 0).numpy(), torch.softmax(sl[0], 0).numpy()
    joint = np.outer(pb, ps)
    joint[0, 0] = 0.0
    joint /= joint.sum()
    np.testing.assert_allclose(wb[2].numpy(), joint.sum(1), rtol=1e-5)
    np.testing.assert_allclose(ws[0].numpy(), joint.sum(0), rtol=1e-5)
    np.testing.assert_allclose(wb[0].numpy(), torch.softmax(bl[0], 0).numpy(), rtol=1e-6)  # a plain block


def test_soft_samples_are_finite_and_pass_gradients():
    bl, sl = broken_favouring_logits()
    bl.requires_grad_(True)
    sl.requires_grad_(True)
    soft = RelaxConfig("gumbel", hard=False, tau_start=1.0, tau_end=1.0)
    wb, ws = relax_gates(bl, sl, soft, 0.7, torch.Generator().manual_seed(0))
    assert torch.isfinite(wb).all() and torch.isfinite(ws).all()
    torch.testing.assert_close(wb.sum(1), torch.ones(8))
    (wb[:, 1:].sum() + ws[:, 1].sum()).backward()
    assert torch.isfinite(bl.grad).all() and torch.isfinite(sl.grad).all() and bl.grad.abs().sum() > 0
