import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.search.arch_grad import second_order
from hwnas.search.loop import SearchConfig, run_search
from hwnas.search.objective import ArchParams, SearchObjective
from hwnas.search.relax import RelaxConfig, relax, sample_gumbel, temperature
from hwnas.spaces.genotype import load_genotype
from hwnas.spaces.supernet import Supernet, SupernetConfig

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"


def _tiny_objective(dtype=torch.double, relax_cfg=None, arch=None, cost=None):
    torch.manual_seed(0)
    cfg = SupernetConfig(channels=4, layers=3, in_channels=1, steps=2, multiplier=2)
    net = Supernet(cfg).to(dtype)
    if arch is None:
        arch = ArchParams(cfg.n_edges, cfg.n_ops)
        with torch.no_grad():
            arch.normal.normal_(0, 0.5)
            arch.reduce.normal_(0, 0.5)
    data = [(torch.randn(8, 1, 8, 8, dtype=torch.double).to(dtype), torch.randint(0, 10, (8,))) for _ in range(2)]
    return SearchObjective(net, arch.to(dtype), relax_cfg or RelaxConfig(), cost=cost), data


def _flat(ts):
    return torch.cat([t.flatten() for t in ts])


def _exact_unrolled_grad(obj, xt, yt, xv, yv, xi, seed=None):
    """d/dθ [L_val(w − ξ ∇w L_train(w, α(θ)), α(θ)) + penalty] by autograd through the unrolled step (the
    exact Hessian, no Hessian-vector product written out); θ: α, or a λ-hypernet's parameters. With `seed`,
    the relaxation's noise is drawn from that seed, as `second_order` will draw it."""
    params = [p for p in obj.arch.parameters() if p.requires_grad]
    if seed is not None:
        obj.generator = torch.Generator().manual_seed(seed)
    ra = obj.sample()
    names, ws = zip(*obj.net.named_parameters())
    loss_t, _ = obj.loss(xt, yt, ra)
    g = torch.autograd.grad(loss_t, ws, create_graph=True, allow_unused=True)  # hard: unsampled ops unused
    unrolled = {n: w if gi is None else w - xi * gi for n, w, gi in zip(names, ws, g)}
    loss_v, _ = obj.loss(xv, yv, obj.sample(like=ra), params=unrolled)
    grads = torch.autograd.grad(loss_v + obj.penalty(), params, allow_unused=True)
    return _flat([torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, grads)])


def _second_order_grad(obj, xt, yt, xv, yv, xi, seed=None, **kw):
    params = [p for p in obj.arch.parameters() if p.requires_grad]
    obj.arch.zero_grad()
    if seed is not None:
        obj.generator = torch.Generator().manual_seed(seed)
    second_order(obj, xt, yt, xv, yv, xi=xi, **kw)
    return _flat([torch.zeros_like(p) if p.grad is None else p.grad for p in params])


def _first_order_at_unrolled(obj, xt, yt, xv, yv, xi):
    """∇α L_val(w′) with w′ = w − ξ∇w L_train held fixed, and v = ∇w′ L_val(w′)."""
    names, ws = zip(*obj.net.named_parameters())
    loss_t, _ = obj.loss(xt, yt)
    g = torch.autograd.grad(loss_t, ws)
    w1 = {n: (w - xi * gi).detach().requires_grad_() for n, w, gi in zip(names, ws, g)}
    loss, _ = obj.loss(xv, yv, params=w1)
    out = torch.autograd.grad(loss, [obj.arch.normal, obj.arch.reduce, *w1.values()])
    return _flat(out[:2]), [t.detach() for t in out[2:]]


def _kink_flips(obj, x, y, d_w, eps):
    """ReLU signs and max-pool argmaxes that differ between the passes at w + ε·v and w − ε·v."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.log = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if str(func).startswith("aten.relu"):
                self.log.append(args[0] > 0)
            elif str(func).startswith("aten.max_pool2d_with_indices.default"):
                self.log.append(out[1].clone())
            return out

    logs = []
    for sign in (1.0, -1.0):
        with torch.no_grad(), Record() as rec:
            obj.loss(x, y, params={n: w + sign * eps * d for (n, w), d in zip(obj.net.named_parameters(), d_w)})
        logs.append(rec.log)
    return int(sum((a != b).sum() for a, b in zip(*logs)))


def test_second_order_default_is_the_exact_hypergradient():
    obj, ((xt, yt), (xv, yv)) = _tiny_objective()
    exact = _exact_unrolled_grad(obj, xt, yt, xv, yv, xi=0.1)
    first, _ = _first_order_at_unrolled(obj, xt, yt, xv, yv, xi=0.1)
    got = _second_order_grad(obj, xt, yt, xv, yv, xi=0.1)
    torch.testing.assert_close(got, exact, rtol=1e-10, atol=1e-12)
    assert (first - exact).abs().max() > 1e-3   # the Hessian term matters here
    # float32 (what a search runs): the same to float32 rounding
    obj32, ((xt, yt), (xv, yv)) = _tiny_objective(torch.float32)
    got32 = _second_order_grad(obj32, xt, yt, xv, yv, xi=0.1).double()
    assert float((got32 - exact).norm() / (exact - first).norm()) < 1e-3


@pytest.mark.parametrize("fd_scale", [1e-5, 1e-6, 1e-7])
def test_finite_difference_converges_where_no_kink_is_crossed(fd_scale):
    """DARTS's central difference is the exact term up to O(ε²) and rounding when no ReLU sign or max-pool
    argmax differs between w⁺ and w⁻."""
    obj, ((xt, yt), (xv, yv)) = _tiny_objective()
    exact = _exact_unrolled_grad(obj, xt, yt, xv, yv, xi=0.1)
    first, d_w = _first_order_at_unrolled(obj, xt, yt, xv, yv, xi=0.1)
    assert _kink_flips(obj, xt, yt, d_w, fd_scale / float(_flat(d_w).norm())) == 0
    fd = _second_order_grad(obj, xt, yt, xv, yv, xi=0.1, fd_scale=fd_scale)
    assert float((fd - exact).norm() / (exact - first).norm()) < 1e-6


@pytest.mark.parametrize("fd_scale", [1e-1, 1e-2, 1e-3])
def test_finite_difference_is_wrong_where_kinks_are_crossed(fd_scale):
    """At DARTS's 0.01 and its neighbours, ReLU signs and max-pool argmaxes flip between w⁺ and w⁻ (in
    proportion to ε) and each flip is a jump in ∇α L_train that the difference divides by 2ε: the Hessian
    term comes out wrong by more than its own size — why `second_order` defaults to the exact product."""
    obj, ((xt, yt), (xv, yv)) = _tiny_objective()
    exact = _exact_unrolled_grad(obj, xt, yt, xv, yv, xi=0.1)
    first, d_w = _first_order_at_unrolled(obj, xt, yt, xv, yv, xi=0.1)
    assert _kink_flips(obj, xt, yt, d_w, fd_scale / float(_flat(d_w).norm())) > 10
    fd = _second_order_grad(obj, xt, yt, xv, yv, xi=0.1, fd_scale=fd_scale)
    assert float((fd - exact).norm() / (exact - first).norm()) > 1.0


@pytest.mark.parametrize("relax_cfg", [RelaxConfig("gumbel"), RelaxConfig("gumbel", hard=True), RelaxConfig("sigmoid")],
                         ids=["gumbel", "gumbel-hard", "sigmoid"])
def test_second_order_with_noise_is_exact_for_its_draw(relax_cfg):
    """One Gumbel draw for every pass: the gradient is the exact unrolled gradient at that draw."""
    obj, ((xt, yt), (xv, yv)) = _tiny_objective(relax_cfg=relax_cfg)
    exact = _exact_unrolled_grad(obj, xt, yt, xv, yv, xi=0.1, seed=3)
    got = _second_order_grad(obj, xt, yt, xv, yv, xi=0.1, seed=3)
    torch.testing.assert_close(got, exact, rtol=1e-10, atol=1e-12)
    if relax_cfg.kind == "gumbel":   # and it is that draw's: another draw gives another gradient
        assert (_second_order_grad(obj, xt, yt, xv, yv, xi=0.1, seed=4) - exact).abs().max() > 1e-6


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_second_order_through_a_lambda_hypernet_with_a_cost(kind):
    """θ = the hypernet's parameters; the penalty λ·Tᵀγ (two targets) adds its own gradient."""
    from hwnas.search.cost import CostModel
    from hwnas.search.hypernet import make_hypernet

    g = torch.Generator().manual_seed(0)
    hyper = make_hypernet(kind, 5, 8, 2, g)
    with torch.no_grad():
        for p in hyper.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    cost = CostModel(torch.rand(2, 3, 5, 8, generator=g), [False, True, False], ["a", "b"], ["ms", "ms"]).double()
    obj, ((xt, yt), (xv, yv)) = _tiny_objective(relax_cfg=RelaxConfig("gumbel"), arch=hyper, cost=cost)
    obj.lam = torch.tensor([0.2, 0.5], dtype=torch.double)
    obj.lam_input = torch.tensor([0.4, 0.25], dtype=torch.double)
    exact = _exact_unrolled_grad(obj, xt, yt, xv, yv, xi=0.1, seed=5)
    got = _second_order_grad(obj, xt, yt, xv, yv, xi=0.1, seed=5)
    torch.testing.assert_close(got, exact, rtol=1e-10, atol=1e-12)
    obj.lam = None   # without the cost the gradient changes: the penalty's part is in it
    assert (_second_order_grad(obj, xt, yt, xv, yv, xi=0.1, seed=5) - exact).abs().max() > 1e-6


def test_second_order_reduces_to_first_order_at_zero_xi():
    obj, ((xt, yt), (xv, yv)) = _tiny_objective()
    second_order(obj, xt, yt, xv, yv, xi=0.0)
    got = torch.cat([obj.arch.normal.grad.flatten(), obj.arch.reduce.grad.flatten()])
    loss, _ = obj.loss(xv, yv)
    want = torch.cat([t.flatten() for t in torch.autograd.grad(loss, [obj.arch.normal, obj.arch.reduce])])
    torch.testing.assert_close(got, want)


def test_softmax_and_sigmoid_relaxations():
    """Against formulas written out in numpy (not torch's own softmax/sigmoid)."""
    import numpy as np

    a = torch.randn(14, 8, dtype=torch.float64)
    e = np.exp(a.numpy() - a.numpy().max(-1, keepdims=True))
    w, idx = relax(a, RelaxConfig("softmax"))
    np.testing.assert_allclose(w.numpy(), e / e.sum(-1, keepdims=True), rtol=1e-12)
    assert idx is None
    w, idx = relax(a, RelaxConfig("sigmoid"))
    np.testing.assert_allclose(w.numpy(), 1.0 / (1.0 + np.exp(-a.numpy())), rtol=1e-12)
    assert idx is None and not torch.allclose(w.sum(-1), torch.ones(14, dtype=torch.float64))
    # sigmoid weights are independent per op: moving one logit moves only its own weight
    b = a.clone()
    b[3, 5] += 2.0
    moved = relax(b, RelaxConfig("sigmoid"))[0] != w
    assert moved.sum() == 1 and moved[3, 5]


def test_gumbel_hard_is_one_hot_with_straight_through_gradient():
    a = torch.randn(14, 8, requires_grad=True)
    noise = sample_gumbel(a.shape, a.device, a.dtype, torch.Generator().manual_seed(0))
    w, idx = relax(a, RelaxConfig("gumbel", hard=True), tau=0.7, noise=noise)
    assert torch.equal(w.detach().sum(-1), torch.ones(14)) and set(w.detach().unique().tolist()) <= {0.0, 1.0}
    assert idx == (a.detach() + noise).argmax(-1).tolist()
    c = torch.randn(14, 8)
    (w * c).sum().backward()
    grad_hard = a.grad.clone()
    a.grad = None
    soft, _ = relax(a, RelaxConfig("gumbel"), tau=0.7, noise=noise)
    (soft * c).sum().backward()
    torch.testing.assert_close(grad_hard, a.grad)  # straight-through: the soft sample's gradient


def test_gumbel_samples_follow_softmax_of_alpha():
    alpha = torch.tensor([[1.0, 0.0, -1.0, 2.0]]).expand(20000, 4).contiguous()
    noise = sample_gumbel(alpha.shape, alpha.device, alpha.dtype, torch.Generator().manual_seed(1))
    _, idx = relax(alpha, RelaxConfig("gumbel", hard=True), tau=1.0, noise=noise)
    freq = torch.bincount(torch.tensor(idx), minlength=4).float() / len(idx)
    torch.testing.assert_close(freq, torch.softmax(alpha[0], 0), atol=0.01, rtol=0)


def test_temperature_anneals_exponentially_between_endpoints():
    cfg = RelaxConfig("gumbel", tau_start=5.0, tau_end=0.5)
    assert temperature(cfg, 0.0) == pytest.approx(5.0)
    assert temperature(cfg, 1.0) == pytest.approx(0.5)
    assert temperature(cfg, 0.5) == pytest.approx(math.sqrt(5.0 * 0.5))


def _tiny(**kw) -> SearchConfig:
    base = dict(dataset="digits", layers=3, channels=4, batch_size=32, epochs=2, max_steps_per_epoch=4, device="cpu")
    return SearchConfig(**{**base, **kw})


def test_search_moves_alpha_and_writes_the_run_directory(tmp_path):
    res = run_search(_tiny(epochs=3, a_lr=0.05), tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "genotype.json", "plots/alphas.png"):
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2, 3]
    assert (metrics["steps"] == 4).all() and (metrics["epoch_seconds"] > 0).all()
    assert load_genotype(run) == res.genotype
    hist = torch.load(run / "checkpoint.pt", weights_only=True)["history"]
    init = ArchParams(14, 8, generator=torch.Generator().manual_seed(0 * 1000 + 3))
    moved = (hist[-1]["normal"] - torch.softmax(init.normal.detach(), -1)).abs().max()
    assert moved > 0.01  # the architecture weights moved away from uniform


def test_existing_run_is_not_overwritten(tmp_path):
    run_search(_tiny(epochs=1), tmp_path / "run")
    with pytest.raises(HwnasError, match="--resume"):
        run_search(_tiny(epochs=1), tmp_path / "run")


class _Interrupt(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("kw", [dict(), dict(relax=RelaxConfig("gumbel", hard=True))])
def test_resume_reaches_the_uninterrupted_result(tmp_path, kw):
    full = run_search(_tiny(epochs=3, **kw), tmp_path / "full")

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_search(_tiny(epochs=3, **kw), tmp_path / "cut", on_epoch_end=stop_after_first)
    resumed = run_search(_tiny(), tmp_path / "cut", resume=True)  # config comes from the run directory
    assert resumed.genotype == full.genotype
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    torch.testing.assert_close(a["arch"], b["arch"], rtol=0, atol=0)
    for k in a["net"]:
        torch.testing.assert_close(a["net"][k], b["net"][k], rtol=0, atol=0)
    cols = ["train_loss", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full" / "metrics.csv")[cols],
                                  pd.read_csv(tmp_path / "cut" / "metrics.csv")[cols])


@pytest.mark.parametrize("kw", [
    dict(arch_grad="second"),
    dict(arch_grad="one-level"),
    dict(relax=RelaxConfig("sigmoid")),
    dict(relax=RelaxConfig("gumbel")),
    dict(relax=RelaxConfig("gumbel", hard=True), augment=True),
])
def test_every_strategy_and_relaxation_searches(tmp_path, kw):
    res = run_search(_tiny(epochs=1, **kw), tmp_path / "run")
    assert len(res.metrics) == 1 and math.isfinite(res.metrics[0]["train_loss"])
    assert len(res.genotype.normal) == 8


def test_bad_search_config_is_a_clear_error():
    with pytest.raises(HwnasError, match="arch-grad"):
        SearchConfig(arch_grad="third")
    with pytest.raises(HwnasError, match="layers"):
        SearchConfig(layers=2)


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="the shared MNIST test set is not beside the repository")
def test_search_runs_on_real_mnist(tmp_path):
    res = run_search(_tiny(dataset=f"idx:{MNIST}", epochs=1, max_steps_per_epoch=2), tmp_path / "run")
    assert res.metrics[0]["steps"] == 2 and len(res.genotype.reduce) == 8


@pytest.mark.parametrize("arch_grad", ["first", "second", "hyper-linear"])
def test_arch_steps_leave_bn_statistics_to_the_weight_step(arch_grad):
    """Issue #16.3: only the weight step's forward on a training batch may move BN running statistics;
    the α passes (validation batch, w′, w±) used to move them up to four more times per step."""
    from hwnas.evaluation import RunningStats
    from hwnas.search.loop import Search

    s = Search(_tiny(arch_grad=arch_grad, epochs=1))
    s.net.train()
    bns = [m for m in s.net.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.track_running_stats]
    before = [int(m.num_batches_tracked) for m in bns]
    (xt, yt), (xv, yv) = next(iter(s.train_loader)), next(iter(s.arch_loader))
    s.step(xt, yt, xv, yv, RunningStats())
    after = [int(m.num_batches_tracked) for m in bns]
    # every BN that the weight step reaches counts exactly one batch, none counts the α passes
    assert max(a - b for a, b in zip(after, before)) == 1


@pytest.mark.parametrize("arch_grad", ["one-level", "first"])
def test_evaluation_samples_are_never_trained_on(arch_grad):
    """Issue #16.2: a one-level search evaluated (val_acc, Λ's L̄ and S) on samples of its training loader."""
    from hwnas.search.loop import Search

    s = Search(_tiny(arch_grad=arch_grad, epochs=1))
    def rows(t):
        return {tuple(r.flatten().tolist()) for r in t.float().cpu()}
    trained = rows(s.train_loader.x)
    held = rows(s.eval_loader.x)
    # digits holds a few exact duplicate images; none of the evaluation rows may be a training row beyond them
    assert len(held & trained) <= 2 and len(s.eval_loader.x) >= 0.15 * (len(s.train_loader.x) + len(s.eval_loader.x))
