"""HyperDARTS (hwnas.search.hyperdarts): w_φ(α) at init, the best response against shared weights,
the architecture gradient against finite differences, composition with the λ-hypernet and cost,
exact resume and the CLI."""
import json

import pandas as pd
import pytest
import torch
from hwnas_cli.app import app
from typer.testing import CliRunner

from hwnas.data import DeviceLoader, load_dataset
from hwnas.latency.space import SpaceConfig
from hwnas.search.control import ControlConfig
from hwnas.search.cost import CostModel
from hwnas.search.hyperdarts import (
    BestResponse,
    best_response_params,
    build_best_response,
    hyper_arch_grad,
    hyper_weight_loss,
    modulation_targets,
)
from hwnas.search.hypernet import LinearHypernet
from hwnas.search.loop import SearchConfig, run_search
from hwnas.search.objective import ArchParams, SearchObjective
from hwnas.search.relax import RelaxConfig
from hwnas.spaces.supernet import Supernet, SupernetConfig
from tests.cli_helpers import ok

KINDS = ("hyper-linear", "hyper-mlp")
TINY = SupernetConfig(channels=4, layers=3, in_channels=1, steps=2, multiplier=2)


def _objective(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    net = Supernet(TINY).to(dtype)
    arch = ArchParams(TINY.n_edges, TINY.n_ops).to(dtype)
    with torch.no_grad():
        arch.normal.normal_(0, 0.5)
        arch.reduce.normal_(0, 0.5)
    return SearchObjective(net, arch, RelaxConfig()), arch


def _randomise(hyper: BestResponse, scale: float) -> None:
    """A φ away from its zero start, so that w_φ really depends on α."""
    with torch.no_grad():
        for p in hyper.parameters():
            p.add_(scale * torch.randn_like(p))


def _flat_grad(arch) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in arch.parameters()])


def test_targets_are_depthwise_preprocess_and_classifier():
    net = Supernet(TINY)
    targets = modulation_targets(net)
    names = [t[0] for t in targets]
    assert names[-1] == "classifier.weight" and any(".preprocess1." in n for n in names)
    params = dict(net.named_parameters())
    for name, channels, dim in targets:
        assert params[name].shape[dim] == channels
    n_dw = sum(dim == 0 for _, _, dim in targets)
    assert n_dw == TINY.layers * TINY.n_edges * 6  # sep 3/5 (two each) + dil 3/5 per edge


@pytest.mark.parametrize("kind", KINDS)
def test_best_response_is_the_shared_weights_at_init(kind):
    obj, arch = _objective()
    hyper = build_best_response(kind, obj.net)
    params = best_response_params(hyper, obj.net, *arch())
    own = dict(obj.net.named_parameters())
    for name, w in params.items():
        assert torch.equal(w, own[name]), name
    x = torch.randn(8, 1, 8, 8)
    ra = obj.sample()
    torch.testing.assert_close(obj.logits(x, ra, params), obj.logits(x, ra), rtol=0, atol=0)
    # and hidden width |α|/2 for HyperDARTS-2
    if kind == "hyper-mlp":
        assert hyper.v.shape == (TINY.n_edges * TINY.n_ops, 2 * TINY.n_edges * TINY.n_ops)


@pytest.mark.parametrize("kind", KINDS)
def test_architecture_gradient_is_exact_through_phi(kind):
    """∇α L_val(w_φ(α), α) against central differences of the same function (float64, softmax)."""
    obj, arch = _objective(torch.float64)
    hyper = build_best_response(kind, obj.net, torch.Generator().manual_seed(1))
    _randomise(hyper, 0.3)
    x, y = torch.randn(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (8,))
    hyper_arch_grad(obj, hyper, x, y)
    got = _flat_grad(arch)

    def f() -> float:
        with torch.no_grad():
            a_n, a_r = arch()
            return obj.loss(x, y, obj.relax_logits(a_n, a_r), best_response_params(hyper, obj.net, a_n, a_r))[0].item()

    # central differences, coordinate by coordinate (a random third of them). A ReLU network is only
    # piecewise smooth: ε is kept tiny so that no activation kink falls between α ± ε.
    eps, flat = 1e-7, torch.cat([p.detach().flatten() for p in arch.parameters()])
    coords = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(5))[: flat.numel() // 3]
    fd = []
    for i in coords.tolist():
        p, j = (arch.normal, i) if i < arch.normal.numel() else (arch.reduce, i - arch.normal.numel())
        values = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                p.view(-1)[j] = flat[i] + sign * eps
            values.append(f())
        with torch.no_grad():
            p.view(-1)[j] = flat[i]
        fd.append((values[0] - values[1]) / (2 * eps))
    torch.testing.assert_close(got[coords], torch.tensor(fd, dtype=torch.float64), rtol=1e-5, atol=1e-8)
    # the path through φ matters: with w_φ(α) held fixed the gradient is measurably different
    a_n, a_r = arch()
    fixed = {k: v.detach() for k, v in best_response_params(hyper, obj.net, a_n, a_r).items()}
    loss, _ = obj.loss(x, y, obj.relax_logits(a_n, a_r), fixed)
    direct = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(arch.parameters()))])
    assert (direct - got).abs().max() > 1e-4


def test_penalty_and_lambda_hypernet_compose_with_hyperdarts():
    """With α = G(λ) and a cost, the gradient into G is that of L_val(w_φ(α), α) plus that of λ·Tᵀγ."""
    obj, _ = _objective(torch.float64)
    space = SpaceConfig(space="darts", input_h=8, input_w=8, in_channels=1, channels=TINY.channels,
                        layers=TINY.layers, steps=TINY.steps, multiplier=TINY.multiplier, batch=16)
    obj.cost = CostModel.complexity("params", space).double()
    obj.arch = LinearHypernet(TINY.n_edges, TINY.n_ops, 1, torch.Generator().manual_seed(2)).double()
    with torch.no_grad():
        obj.arch.b1.normal_(0, 0.5)
    obj.lam_input = torch.tensor([0.7], dtype=torch.float64)
    hyper = build_best_response("hyper-mlp", obj.net, torch.Generator().manual_seed(1))
    _randomise(hyper, 0.3)
    x, y = torch.randn(16, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (16,))

    grads = {}
    for lam in (0.0, 1e-4):
        obj.lam = torch.tensor([lam], dtype=torch.float64)
        obj.arch.zero_grad(set_to_none=True)
        hyper_arch_grad(obj, hyper, x, y)
        grads[lam] = [p.grad.clone() for p in obj.arch.parameters()]
    # The cost term reaches only the λ-dependent part λ̃·b₁ (b₂ = α(0) learns from the loss alone).
    a_n, a_r = torch.tensordot(obj.lam_input, obj.arch.b1, dims=1) + obj.arch.b2.detach()
    penalty = 1e-4 * obj.cost.expected(torch.softmax(a_n, -1), torch.softmax(a_r, -1)).sum()
    want_b1, = torch.autograd.grad(penalty, [obj.arch.b1])
    assert want_b1.abs().max() > 0
    torch.testing.assert_close(grads[1e-4][0] - grads[0.0][0], want_b1, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(grads[1e-4][1] - grads[0.0][1], torch.zeros_like(obj.arch.b2), rtol=0, atol=1e-12)


def _train(kind: str, batches, learn_phi: bool, steps: int, sigma: float) -> float:
    """Train w (and φ when `learn_phi`) on L_train(w_φ(α̃), α̃); return the mean training loss at fresh α̃."""
    obj, _ = _objective(seed=0)
    obj.arch.normal.data.mul_(0.1)
    obj.arch.reduce.data.mul_(0.1)
    hyper = build_best_response(kind, obj.net, torch.Generator().manual_seed(2))
    w_opt = torch.optim.SGD(obj.net.parameters(), 0.05, momentum=0.9)
    h_opt = torch.optim.Adam(hyper.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(3)  # the same α̃ draws for both runs
    for i in range(steps):
        x, y = batches[i % len(batches)]
        w_opt.zero_grad()
        h_opt.zero_grad()
        hyper_weight_loss(obj, hyper, x, y, sigma, gen)[0].backward()
        w_opt.step()
        if learn_phi:
            h_opt.step()
    gen = torch.Generator().manual_seed(4)  # held-out α̃ draws
    with torch.no_grad():
        losses = [hyper_weight_loss(obj, hyper, x, y, sigma, gen)[0].item() for _ in range(6) for x, y in batches]
    return sum(losses) / len(losses)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_best_response_beats_shared_weights_at_perturbed_alpha(kind):
    """Same steps, same batches, same α̃ draws; only φ learns or not. Scored at α̃ not seen in training."""
    splits = load_dataset("digits")
    batches = list(DeviceLoader(splits.x_train[:512], splits.y_train[:512], splits.info, 128, device="cpu",
                                shuffle=False))
    with_phi = _train(kind, batches, True, 40, 1.0)
    shared = _train(kind, batches, False, 40, 1.0)
    assert with_phi < 0.95 * shared, (with_phi, shared)


def _tiny(**kw) -> SearchConfig:
    base = {"dataset": "digits", "layers": 3, "channels": 4, "batch_size": 32, "epochs": 2, "max_steps_per_epoch": 3, "device": "cpu"}
    return SearchConfig(**{**base, **kw})


class _Interrupt(Exception):
    pass


@pytest.mark.slow
def test_hyperdarts_resume_reaches_the_uninterrupted_result(tmp_path):
    kw = {"epochs": 3, "arch_grad": "hyper-mlp", "relax": RelaxConfig("gumbel", hard=True), "a_lr": 0.01}
    full = run_search(_tiny(**kw), tmp_path / "full")

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_search(_tiny(**kw), tmp_path / "cut", on_epoch_end=stop_after_first)
    resumed = run_search(_tiny(), tmp_path / "cut", resume=True)
    assert resumed.genotype == full.genotype
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    for part in ("arch", "net"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=0)
    for k in a["hyper"]["phi"]:
        torch.testing.assert_close(a["hyper"]["phi"][k], b["hyper"]["phi"][k], rtol=0, atol=0)
    assert a["hyper"]["phi"]["u"].abs().max() > 0  # φ did learn
    cols = ["train_loss", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full" / "metrics.csv")[cols],
                                  pd.read_csv(tmp_path / "cut" / "metrics.csv")[cols])


@pytest.mark.slow
def test_hyperdarts_search_with_lambda_hypernet_and_cost(tmp_path):
    ctl = ControlConfig(cost="params", hypernet="linear", warmup_epochs=1, samples=4, eval_batches=1)
    res = run_search(_tiny(epochs=1, arch_grad="hyper-linear", control=ctl), tmp_path / "run")
    assert (tmp_path / "run" / "lambda_max.json").is_file() and len(res.genotype.normal) == 8
    assert any(k.startswith("cost@max") for k in res.metrics[0])


def test_bad_hyper_config_is_a_clear_error():
    from hwnas.errors import HwnasError

    with pytest.raises(HwnasError, match="σ"):
        SearchConfig(arch_grad="hyper-mlp", hyper_sigma=-1.0)


def test_cli_search_with_hyper_linear(tmp_path):
    out = ok(CliRunner().invoke(app, ["search", "--out", str(tmp_path / "r"), "--arch-grad", "hyper-linear",
                                      "--layers", "3", "--channels", "4", "--batch-size", "32", "--epochs", "1",
                                      "--max-steps", "2", "--device", "cpu"]))
    assert "Genotype(normal=" in out
    assert json.loads((tmp_path / "r" / "config.json").read_text())["arch_grad"] == "hyper-linear"

