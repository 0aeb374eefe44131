"""The cost penalty under every relaxation, λ/Λ as the hypernet sees it, and Λ with several cost targets,
each against a reference written out here (numpy formulas, Monte Carlo, brute force)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.search.control import ControlConfig, LambdaSchedule, estimate_lambda_max
from hwnas.search.cost import CostModel
from hwnas.search.objective import NONE, ArchParams, SearchObjective
from hwnas.search.relax import RelaxConfig

E, O = 5, 8
REDUCTION = [False, True, False, True]


def _objective(relax: RelaxConfig, lam=(0.7, 0.2), exclude_none=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    arch = ArchParams(E, O, generator=g).double()
    with torch.no_grad():
        arch.normal.copy_(torch.randn(E, O, generator=g, dtype=torch.double))
        arch.reduce.copy_(torch.randn(E, O, generator=g, dtype=torch.double))
    # eighths: the cost model's per-cell-type sums (kept in float32) are then exact, and so is the reference
    T = torch.randint(0, 64, (len(lam), len(REDUCTION), E, O), generator=g).double() / 8
    cost = CostModel(T, REDUCTION, [f"t{d}" for d in range(len(lam))], ["ms"] * len(lam)).double()
    obj = SearchObjective(nn.Module(), arch, relax, torch.Generator().manual_seed(seed + 1), cost=cost,
                          exclude_none=exclude_none)
    obj.lam = torch.tensor(lam, dtype=torch.double)
    return obj, T.numpy()


def _cells(T: np.ndarray, p_n: np.ndarray, p_r: np.ndarray) -> np.ndarray:
    """Σ_l Σ_e Σ_o T[d, l, e, o] p_type(l)[e, o] per target, cell by cell."""
    return sum(np.einsum("deo,eo->d", T[:, l], p_r if red else p_n) for l, red in enumerate(REDUCTION))


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("relax", [RelaxConfig("gumbel"), RelaxConfig("gumbel", hard=True)], ids=["soft", "hard"])
def test_gumbel_penalty_is_the_deployed_networks_expected_cost(relax):
    """Under Gumbel the network deployed from a draw is argmax(α + g) per edge; the penalty is λ times its
    expected cost — checked against the formula and a Monte Carlo over Gumbel draws made with numpy — the same
    for every draw (no sampling noise), with the formula's gradient."""
    obj, T = _objective(relax)
    a_n, a_r = obj.arch.normal.detach().numpy(), obj.arch.reduce.detach().numpy()
    lam = obj.lam.numpy()
    want = float(lam @ _cells(T, _softmax(a_n), _softmax(a_r)))
    pen = obj.penalty(obj.sample())
    assert float(pen.detach()) == pytest.approx(want, rel=1e-12)
    assert float(obj.penalty(obj.sample()).detach()) == float(pen.detach())   # another draw, the same penalty
    rng = np.random.default_rng(0)
    n = 20000
    draws = []
    for _ in range(n // 1000):
        gn = -np.log(-np.log(rng.uniform(size=(1000, E, O))))
        gr = -np.log(-np.log(rng.uniform(size=(1000, E, O))))
        on_n = np.eye(O)[(a_n + gn).argmax(2)]      # (1000, E, O) one-hot deployed ops
        on_r = np.eye(O)[(a_r + gr).argmax(2)]
        draws.append(np.einsum("dleo,kleo->kd", T, np.stack([on_r if r else on_n for r in REDUCTION], 1)) @ lam)
    draws = np.concatenate(draws)
    assert float(pen.detach()) == pytest.approx(draws.mean(), abs=4 * draws.std() / math.sqrt(n))
    # gradient of λ·Σ T p with p = softmax(α): ∂/∂α_eo = Σ_d λ_d Σ_l T_l,eo · p_eo − p_eo Σ_o' T_l,eo' p_eo'
    pen.backward()
    for alpha, grad, red in ((a_n, obj.arch.normal.grad, False), (a_r, obj.arch.reduce.grad, True)):
        p = _softmax(alpha)
        t = np.einsum("d,dleo->eo", lam, T[:, [l for l, r in enumerate(REDUCTION) if r == red]])
        np.testing.assert_allclose(grad.numpy(), p * (t - (t * p).sum(1, keepdims=True)), rtol=1e-10, atol=1e-14)


def test_sigmoid_penalty_prices_each_op_by_its_own_gate():
    obj, T = _objective(RelaxConfig("sigmoid"))
    a_n, a_r = obj.arch.normal.detach().numpy(), obj.arch.reduce.detach().numpy()
    lam = obj.lam.numpy()
    s_n, s_r = 1 / (1 + np.exp(-a_n)), 1 / (1 + np.exp(-a_r))
    pen = obj.penalty(obj.sample())
    assert float(pen.detach()) == pytest.approx(float(lam @ _cells(T, s_n, s_r)), rel=1e-12)
    pen.backward()
    t_n = np.einsum("d,dleo->eo", lam, T[:, [0, 2]])
    np.testing.assert_allclose(obj.arch.normal.grad.numpy(), t_n * s_n * (1 - s_n), rtol=1e-10)


def test_penalty_with_none_excluded_and_several_targets():
    """`none` out: the expected weights renormalise over the other ops; targets add as Σ_d λ_d·T_dᵀγ."""
    obj, T = _objective(RelaxConfig("gumbel", hard=True), lam=(0.3, 0.0, 1.5), exclude_none=True)
    keep = [o for o in range(O) if o != NONE]
    p_n, p_r = np.zeros((E, O)), np.zeros((E, O))
    p_n[:, keep] = _softmax(obj.arch.normal.detach().numpy()[:, keep])
    p_r[:, keep] = _softmax(obj.arch.reduce.detach().numpy()[:, keep])
    per_target = _cells(T, p_n, p_r)
    assert float(obj.penalty().detach()) == pytest.approx(0.3 * per_target[0] + 1.5 * per_target[2], rel=1e-12)


def test_lambda_schedule_gives_the_hypernet_lambda_over_lambda_max():
    obj = SearchObjective(nn.Module(), ArchParams(E, O), RelaxConfig())
    sched = LambdaSchedule(ControlConfig(cost="params", hypernet="linear"), 2, torch.device("cpu"), seed=0)
    # before Λ is known (the warm-up) only λ = 0 is allowed, seen as 0
    sched.apply(obj, torch.zeros(2))
    assert obj.lam_input.tolist() == [0.0, 0.0]
    with pytest.raises(RuntimeError, match="before Λ"):
        sched.apply(obj, torch.tensor([0.1, 0.0]))
    sched.set_lambda_max([2.0, 0.5])
    sched.apply(obj, torch.tensor([1.0, 0.125]))
    assert obj.lam.tolist() == [1.0, 0.125] and obj.lam_input.tolist() == [0.5, 0.25]
    seen = []
    for _ in range(200):
        sched.apply(obj)
        lam, inp = obj.lam.double(), obj.lam_input.double()
        assert inp.tolist() == pytest.approx([lam[0].item() / 2.0, lam[1].item() / 0.5], rel=1e-6)
        assert float(inp.sum()) <= 1 + 1e-6 and float(inp.min()) >= 0   # Σ λ_d/Λ_d ≤ 1: Theorem 1's region
        seen.append(lam.tolist())
    assert max(s[0] for s in seen) > 1.0 and max(s[1] for s in seen) > 0.25   # both targets reach far in
    # the schedule's generator is its state: a reloaded copy continues with the same λ
    copy = LambdaSchedule(ControlConfig(cost="params", hypernet="linear"), 2, torch.device("cpu"), seed=9)
    copy.load_state_dict(sched.state_dict())
    sched.apply(obj)
    a = obj.lam.clone()
    copy.apply(obj)
    assert torch.equal(obj.lam, a)


def test_a_hypernet_search_starts_at_lambda_zero_for_its_zero_share_then_samples_and_resumes_there():
    obj = SearchObjective(nn.Module(), ArchParams(E, O), RelaxConfig())
    cfg = ControlConfig(cost="params", hypernet="mlp", zero_share=0.3)
    sched = LambdaSchedule(cfg, 1, torch.device("cpu"), seed=0, total_steps=20)
    sched.set_lambda_max([4.0])
    sched.apply(obj, torch.tensor([2.0]))           # an explicit λ (evaluation) is not a step of the schedule
    drawn = []
    for i in range(10):
        sched.apply(obj)
        drawn.append(obj.lam.item())
        if i == 7:
            state = sched.state_dict()
    assert drawn[:6] == [0.0] * 6 and all(0 < v <= 4.0 for v in drawn[6:])   # round(0.3 × 20) = 6 steps at λ = 0
    again = LambdaSchedule(cfg, 1, torch.device("cpu"), seed=5, total_steps=20)
    again.load_state_dict(state)                    # a resumed search continues where the schedule was
    again.apply(obj)
    assert obj.lam.item() == drawn[8]
    # a fixed-λ search and a share of 0 sample from the first step; a share of 1 is refused (no λ > 0 ever)
    zero = LambdaSchedule(ControlConfig(cost="params", hypernet="mlp", zero_share=0.0), 1, torch.device("cpu"), 0, 20)
    zero.set_lambda_max([4.0])
    zero.apply(obj)
    assert obj.lam.item() > 0
    with pytest.raises(HwnasError, match="zero-share"):
        ControlConfig(cost="params", hypernet="mlp", zero_share=1.0)


def test_the_zero_phase_runs_before_lambda_max_is_known():
    """Λ is estimated when the λ = 0 phase ends: until then the schedule counts its steps at λ = 0 without Λ."""
    obj = SearchObjective(nn.Module(), ArchParams(E, O), RelaxConfig())
    sched = LambdaSchedule(ControlConfig(cost="params", hypernet="mlp", zero_share=0.3), 1, torch.device("cpu"),
                           seed=0, total_steps=20)
    done = []
    for _ in range(6):
        done.append(sched.zero_phase_done())
        sched.apply(obj)
        assert obj.lam.item() == 0.0 and obj.lam_input.item() == 0.0
    assert done == [False] * 6 and sched.zero_phase_done()     # now Λ is needed
    sched.set_lambda_max([4.0])
    sched.apply(obj)
    assert 0 < obj.lam.item() <= 4.0


def test_runs_made_before_the_zero_share_resume_without_it():
    from hwnas.config import SearchConfig

    old = SearchConfig(control=ControlConfig(cost="params", hypernet="linear")).to_dict()
    del old["control"]["zero_share"]
    assert SearchConfig.from_dict(old).control.zero_share == 0.0
    assert SearchConfig().control.zero_share == 0.25


def test_fixed_lambda_is_given_to_every_target_and_no_hypernet_input():
    obj = SearchObjective(nn.Module(), ArchParams(E, O), RelaxConfig())
    LambdaSchedule(ControlConfig(cost="params", lam=0.3), 1, torch.device("cpu"), seed=0).apply(obj)
    assert obj.lam.tolist() == [pytest.approx(0.3)] and obj.lam_input is None


@pytest.mark.parametrize("exclude_none", [True, False])
def test_lambda_max_with_two_targets(exclude_none):
    """Λ per target on a tiny supernet with two cost targets: each cheapest architecture is the cheapest one
    on its own target (by a per-edge minimum written out here), its λ rule is the brute-force first λ at which
    it beats every kept sample, and Theorem 1's Λ_d = (L̄ − S)/Tᵀ1_d uses that target's bound."""
    from hwnas.spaces.supernet import Supernet, SupernetConfig

    cfg = SupernetConfig(channels=4, layers=3, in_channels=1)
    torch.manual_seed(0)
    obj = SearchObjective(Supernet(cfg), ArchParams(cfg.n_edges, cfg.n_ops), RelaxConfig(), exclude_none=exclude_none)
    g = torch.Generator().manual_seed(2)
    T = torch.rand(2, 3, cfg.n_edges, cfg.n_ops, generator=g)
    T[..., NONE] = 0.0
    T[1] = T[1] ** 3 * 5   # a second target that ranks the ops differently
    cost = CostModel(T, [False, True, True], ["a", "b"], ["ms", "ms"])
    batches = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))]
    ctl = ControlConfig(cost="params", hypernet="linear", samples=6, eval_batches=1, exclude_none=exclude_none)
    rec = estimate_lambda_max(obj, cost, lambda: iter(batches), 10, ctl, seed=0)
    Tn, Tr = T[:, 0].numpy(), T[:, 1:].sum(1).numpy()
    allowed = [o for o in range(cfg.n_ops) if not (exclude_none and o == NONE)]
    for d in range(2):
        cheapest = Tn[d][:, allowed].min(1).sum() + Tr[d][:, allowed].min(1).sum()
        assert rec["cheapest"]["cost"][d] == pytest.approx(cheapest, rel=1e-6)
        bound = Tn[d].max(1).sum() + Tr[d].max(1).sum()
        assert rec["cost_bound"][d] == pytest.approx(bound, rel=1e-6)
        assert rec["lambda_max_theorem"][d] == pytest.approx(
            (rec["label_entropy"] - rec["worst_valid_loss"]) / bound, rel=1e-6)
        l_c, t_c = rec["cheapest"]["loss"][d], rec["cheapest"]["cost"][d]
        pairs = [(la, c[d]) for la, c in zip(rec["sampled"]["loss"], rec["sampled"]["cost"])]
        floor = 0.25 * max(t - t_c for _, t in pairs)
        kept = [(la, t) for la, t in pairs if t - t_c >= floor and la < l_c]
        if kept:   # brute force over a fine grid: the first λ at which the cheapest wins against every kept sample
            top = 2 * max((l_c - la) / (t - t_c) for la, t in kept)
            grid = np.linspace(0, top, 400001)
            ok = np.all(l_c + grid[:, None] * t_c <= np.array([la for la, _ in kept]) + grid[:, None] *
                        np.array([t for _, t in kept]), axis=1)
            assert rec["lambda_cheapest_optimal"][d] == pytest.approx(grid[np.argmax(ok)], abs=2 * top / 400000)
        else:
            assert math.isnan(rec["lambda_cheapest_optimal"][d])
    rule = rec["lambda_cheapest_optimal"]
    if exclude_none and all(math.isfinite(r) and r > 0 for r in rule):
        assert rec["lambda_max"] == pytest.approx([ctl.lambda_margin * r for r in rule])
    elif not exclude_none and min(rec["lambda_max_theorem"]) > 0:
        assert rec["lambda_max"] == pytest.approx(rec["lambda_max_theorem"])
    else:
        assert rec["lambda_max"] == pytest.approx([rec["label_entropy"] / b for b in rec["cost_bound"]])
    assert len(rec["lambda_max"]) == 2 and rec["cost_names"] == ["a", "b"]
