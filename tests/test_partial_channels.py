"""PC-DARTS partial channels (hwnas.spaces.partial, --partial-channels K): the edge, the shuffle, the fused cell
against the per-edge one, edge normalisation β in the search and the genotype, and a CLI run end to end."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hwnas_cli.app import app
from typer.testing import CliRunner

from hwnas.errors import HwnasError
from hwnas.search.loop import SearchConfig
from hwnas.search_run import search_config
from hwnas.spaces import partial
from hwnas.spaces.ops import PRIMITIVES
from hwnas.spaces.supernet import MixedOp, Supernet, SupernetConfig
from tests.cli_helpers import fails_cleanly, ok
from tests.supernet_pairs import reference_and_fused

ATOL = 1e-10


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-9)


def _pc_darts_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """channel_shuffle as PC-DARTS's model_search.py writes it."""
    batchsize, num_channels, height, width = x.data.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


def _weights(seed: int, n_edges: int = 14, edges: bool = True):
    g = torch.Generator().manual_seed(seed)
    w = [torch.randn(n_edges, 8, generator=g, dtype=torch.float64).softmax(-1).requires_grad_() for _ in range(2)]
    b = [torch.randn(n_edges, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2)]
    return w, b


def _manual(net: Supernet, x: torch.Tensor, wn, wr, cell_fn) -> torch.Tensor:
    """The supernet's forward with each cell run by `cell_fn(cell, s0, s1, w)`."""
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        s0, s1 = s1, cell_fn(cell, s0, s1, wr if cell.reduction else wn)
    return net.classifier(torch.flatten(F.adaptive_avg_pool2d(s1, 1), 1))


@pytest.mark.parametrize("fused", [False, True])
def test_k1_is_the_full_channel_cell(fused: bool) -> None:
    """With K = 1 and unit edge weights both partial paths compute the existing cell, outputs and gradients."""
    torch.manual_seed(0)
    net = Supernet(SupernetConfig(channels=4, layers=3, in_channels=1, fused=fused)).double()
    x = torch.randn(4, 1, 7, 7, dtype=torch.float64)
    (wn, wr), _ = _weights(1)
    ones = torch.ones(14, dtype=torch.float64)
    fns = {"existing": lambda c, s0, s1, w: c(s0, s1, w),
           "per-edge": lambda c, s0, s1, w: partial.per_edge_forward(c, s0, s1, w, None, ones, 1),
           "fused": lambda c, s0, s1, w: partial.fused_forward(c, s0, s1, w, None, 1)}
    results = {}
    for name, fn in fns.items():
        out = _manual(net, x, wn, wr, fn)
        results[name] = (out, torch.autograd.grad(out.square().sum(), [wn, wr, *net.parameters()]))
    for name in ("per-edge", "fused"):
        _close(results[name][0], results["existing"][0])
        for a, b in zip(results[name][1], results["existing"][1]):
            _close(a, b)


def test_shuffle_is_pc_darts_and_keeps_the_layout() -> None:
    x = torch.randn(2, 12, 5, 5)
    for k in (2, 3, 4):
        y = partial.channel_shuffle(x, k)
        torch.testing.assert_close(y, _pc_darts_shuffle(x, k), atol=0, rtol=0)
        cp = 12 // k
        for g in range(k):
            for j in range(cp):
                assert torch.equal(y[:, j * k + g], x[:, g * cp + j])
        cl = partial.channel_shuffle(x.contiguous(memory_format=torch.channels_last), k)
        assert cl.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(cl, y, atol=0, rtol=0)
        torch.testing.assert_close(partial.channel_shuffle(y, cp), x, atol=0, rtol=0)  # the inverse


@pytest.mark.parametrize("stride,size", [(1, 6), (2, 6), (2, 7)])
def test_edge_bypasses_the_other_channels_unchanged(stride: int, size: int) -> None:
    """Before the shuffle: channels [:C/K] are the mixed op of x[:, :C/K], the rest x[:, C/K:] as they were
    (max-pooled 2×2 at stride 2, to the ops' output size ceil(H/2))."""
    torch.manual_seed(0)
    c, k = 8, 4
    cp = c // k
    edge = MixedOp(cp, stride).double()
    x = torch.randn(3, c, size, size, dtype=torch.float64)
    w = torch.randn(8, dtype=torch.float64).softmax(0)
    y = partial.partial_edge(edge, x, F.relu(x), w, None, k, stride)
    out = -(-size // stride)
    assert y.shape == (3, c, out, out)
    unshuffled = partial.channel_shuffle(y, c // k)
    _close(unshuffled[:, :cp], edge(x[:, :cp], F.relu(x[:, :cp]), w))
    rest = x[:, cp:] if stride == 1 else F.max_pool2d(x[:, cp:], 2, 2, ceil_mode=True)
    assert torch.equal(unshuffled[:, cp:], rest)
    if stride == 1:
        assert torch.equal(y[:, 1::k], x[:, cp:cp * 2])  # shuffled: bypassed channel j of group 1 at j·K + 1


def _pair(k: int, channels_last: bool = False) -> tuple[Supernet, Supernet]:
    ref, fused = reference_and_fused(SupernetConfig(channels=8, layers=3, in_channels=1, partial_channels=k), seed=k)
    if channels_last:
        ref, fused = (n.to(memory_format=torch.channels_last) for n in (ref, fused))
    return ref, fused


@pytest.mark.parametrize("k,size,channels_last", [(2, 8, False), (4, 7, False), (4, 8, True)])
def test_fused_partial_matches_per_edge(k: int, size: int, channels_last: bool) -> None:
    """The fused partial cell (edge weights folded into the op weights, bypass and shuffle once per node) is the
    per-edge PC-DARTS cell: outputs, gradients of w, β and every weight, BN buffers, eval mode."""
    ref, fused = _pair(k, channels_last)
    x = torch.randn(5, 1, size, size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    (wn, wr), (bn, br) = _weights(2)
    results = []
    for net in (ref, fused):
        out = net(x, wn, wr, None, None, partial.node_softmax(bn, 4), partial.node_softmax(br, 4))
        loss = F.cross_entropy(out, torch.arange(5)) + out.square().mean()
        results.append((out.detach(), torch.autograd.grad(loss, [wn, wr, bn, br, *net.parameters()])))
    _close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        _close(a, b)
    assert results[1][1][2].abs().sum() > 0 and results[1][1][3].abs().sum() > 0  # β gets gradients
    sd_ref, sd_fused = ref.state_dict(), fused.state_dict()
    for key, v in sd_ref.items():
        torch.testing.assert_close(v, sd_fused[key], atol=ATOL, rtol=1e-9, msg=key)
    ref.eval()
    fused.eval()
    with torch.no_grad():
        _close(ref(x, wn, wr, None, None, partial.node_softmax(bn, 4), partial.node_softmax(br, 4)),
               fused(x, wn, wr, None, None, partial.node_softmax(bn, 4), partial.node_softmax(br, 4)))


def test_a_none_edge_of_a_sub_network_is_off() -> None:
    """Hard indices: an edge set to `none` passes nothing (its bypass neither), so a one-hot architecture is the
    genotype's sub-network; a node with every input off is zero."""
    torch.manual_seed(0)
    net = Supernet(SupernetConfig(channels=4, layers=3, in_channels=1, partial_channels=2)).double()
    cell = net.cells[0]
    s = torch.randn(2, 12, 6, 6, dtype=torch.float64)
    none, skip = PRIMITIVES.index("none"), PRIMITIVES.index("skip_connect")
    idx = [none] * 14
    w = F.one_hot(torch.tensor(idx), 8).double()
    out = partial.per_edge_forward(cell, s, s, w, idx, None, 2)
    assert torch.equal(out, torch.zeros_like(out))
    idx[0] = skip  # node 0 reads state 0 through skip_connect (C/K channels) and its bypass: shuffled state 0
    w = F.one_hot(torch.tensor(idx), 8).double()
    out = partial.per_edge_forward(cell, s, s, w, idx, None, 2)
    _close(out[:, :4], partial.channel_shuffle(cell.preprocess0(s), 2))
    assert torch.equal(out[:, 4:], torch.zeros_like(out[:, 4:]))


def test_cpu_evaluation_runs_per_edge(monkeypatch) -> None:
    """Without gradients on the CPU (an epoch's evaluation) the full-channel supernet runs per edge (the faster
    path there), with the fused path's result; with gradients it runs fused."""
    from hwnas.spaces import fused as fused_module
    from hwnas.spaces import supernet

    torch.manual_seed(0)
    net = Supernet(SupernetConfig(channels=4, layers=3, in_channels=1)).double().eval()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    (wn, wr), _ = _weights(4)
    with torch.no_grad():
        monkeypatch.setattr(supernet, "FUSED_WITHOUT_GRAD", True)
        fused_out = net(x, wn, wr)
        monkeypatch.setattr(supernet, "FUSED_WITHOUT_GRAD", False)
        calls = []
        monkeypatch.setattr(supernet, "fused_cell_forward",
                            lambda *a: calls.append(1) or fused_module.fused_cell_forward(*a))
        _close(net(x, wn, wr), fused_out)
        assert not calls
    net(x, wn, wr)
    assert calls


def _search(**kw):
    from hwnas.search.loop import Search

    return Search(search_config(layers=3, channels=4, batch_size=16, epochs=1, max_steps=2, device="cpu",
                                partial_channels=2, **kw))


def test_beta_is_learnt_with_alpha_and_decides_the_edges() -> None:
    from hwnas.evaluation import RunningStats

    s = _search()
    assert {n for n, _ in s.arch.named_parameters()} == {"normal", "reduce", "edges.normal", "edges.reduce"}
    assert any(p is s.arch.edges.normal for g in s.a_opt.param_groups for p in g["params"])
    before = s.arch.edges.normal.detach().clone()
    (xt, yt), (xv, yv) = next(iter(s.train_loader)), next(iter(s.arch_loader))
    s.step(xt, yt, xv, yv, RunningStats())
    assert not torch.equal(before, s.arch.edges.normal.detach())  # β got a gradient and an Adam step
    # Every op equally strong: the edges are β's. PC-DARTS ranks node i's inputs j by β̂_ij · max_o w_ijo.
    with torch.no_grad():
        s.arch.normal.zero_()
        s.arch.reduce.zero_()
        beta = torch.randn(14, generator=torch.Generator().manual_seed(3))
        s.arch.edges.normal.copy_(beta)
        s.arch.edges.reduce.copy_(-beta)
    g = s.genotype()
    start = 0
    for i in range(4):
        block = beta[start:start + i + 2]
        assert {j for _, j in g.normal[2 * i:2 * i + 2]} == set(block.topk(2).indices.tolist())
        assert {j for _, j in g.reduce[2 * i:2 * i + 2]} == set((-block).topk(2).indices.tolist())
        start += i + 2


def test_bad_k_is_a_one_line_error() -> None:
    with pytest.raises(HwnasError, match="--partial-channels 3 must .* divide --channels 8"):
        SearchConfig(channels=8, partial_channels=3)
    with pytest.raises(HwnasError, match="--partial-channels 0"):
        SearchConfig(partial_channels=0)
    fails_cleanly(CliRunner().invoke(app, ["search", "--out", "/nonexistent/x", "--partial-channels", "3"]),
                  "--partial-channels 3", first_line=True)


@pytest.mark.slow
def test_resumed_partial_run_matches_an_uninterrupted_one(tmp_path) -> None:
    from hwnas.search.loop import run_search

    cfg = search_config(layers=3, channels=4, batch_size=16, epochs=2, max_steps=2, device="cpu", partial_channels=2)
    full = run_search(cfg, tmp_path / "full")

    class Stop(Exception):
        pass

    def stop(row):
        raise Stop

    with pytest.raises(Stop):
        run_search(cfg, tmp_path / "cut", on_epoch_end=stop)
    resumed = run_search(cfg, tmp_path / "cut", resume=True)
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["partial_channels"] == 2
    assert str(resumed.genotype) == str(full.genotype)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["arch"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["arch"]
    assert set(a) == {"normal", "reduce", "edges.normal", "edges.reduce"}
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)


@pytest.mark.slow
def test_cli_hypernet_run_with_partial_channels_paretos_and_exports(tmp_path) -> None:
    """`hwnas search --partial-channels 4` with a λ-hypernet, then `pareto` and `export` of the run: the exported
    network is the genotype's full-channel network."""
    runner, run = CliRunner(), tmp_path / "run"
    ok(runner.invoke(app, ["search", "--out", str(run), "--layers", "3", "--channels", "8", "--batch-size", "16",
                           "--epochs", "1", "--max-steps", "2", "--device", "cpu", "--partial-channels", "4",
                           "--cost", "params", "--hypernet", "linear", "--lambda-warmup-epochs", "1",
                           "--lambda-samples", "2"]))
    assert json.loads((run / "config.json").read_text())["partial_channels"] == 4
    ok(runner.invoke(app, ["pareto", str(run), "--lambdas", "2", "--front-steps", "1", "--finetune-steps", "0"]))
    assert (run / "pareto.csv").is_file()
    ok(runner.invoke(app, ["export", str(run), "--lambda", "0", "--out", str(tmp_path / "m.onnx"), "--no-measure"]))
    report = json.loads((tmp_path / "m.onnx.json").read_text())
    from hwnas.search_run import SearchRun
    from hwnas.spaces.network import count_parameters

    assert report["params"] == count_parameters(SearchRun(run).network(0.0))
