"""Issue #12.5: kept channel counts on a grid the hardware likes (`--channel-multiple N`).

The gate choices keep a quarter, half, three quarters or all of a block's 64–512 inner channels, so every kept count
is already a multiple of 16; N = 32 and 64 remove the choices off their grid. These tests need no training."""
from collections import Counter

import pytest
import torch

from hwnas.config import CHANNEL_MULTIPLES
from hwnas.errors import HwnasError
from hwnas.prune.gate_hypernet import GateHypernet
from hwnas.prune.gate_sampling import argmax_gates, gate_probabilities, relax_gates
from hwnas.prune.prune_lambda import cheapest_gates, valid_gate_sets
from hwnas.prune_api import prune_config
from hwnas.search.relax import RelaxConfig
from hwnas.spaces.gated_resnet import (
    BLOCK_WIDTHS,
    BLOCKS,
    BRANCH_CHOICES,
    PROJECTIONS,
    GateSet,
    allowed_choices,
    materialise,
    round_gates,
)


def test_the_quarter_widths_are_multiples_of_16_so_8_and_16_change_nothing():
    widths = {c for f in BRANCH_CHOICES for c in GateSet((f,) * len(BLOCKS)).channels()}
    assert sorted(widths) == [0, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512]
    assert all(w % 16 == 0 for w in widths)
    for n in (1, 2, 4, 8, 16):
        assert bool(allowed_choices(n).all())
    # 32: layer1 loses 16 and 48; 64: layer1 keeps 0 or 64, layer2 0, 64 or 128; the rest unchanged
    kept = {n: {b: [c for c, a in zip(BRANCH_CHOICES, allowed_choices(n)[i]) if a] for i, b in enumerate(BLOCKS)}
            for n in (32, 64)}
    assert kept[32]["layer1.0"] == [0.0, 0.5, 1.0] and kept[32]["layer2.0"] == list(BRANCH_CHOICES)
    assert kept[64]["layer1.1"] == [0.0, 1.0] and kept[64]["layer2.1"] == [0.0, 0.5, 1.0]
    assert kept[64]["layer3.0"] == list(BRANCH_CHOICES)


@pytest.mark.parametrize("n", CHANNEL_MULTIPLES)
def test_rounding_lands_on_the_allowed_choices(n):
    gen = torch.Generator().manual_seed(n)
    for _ in range(200):
        g = GateSet.sample(gen)
        r = round_gates(g, n)
        assert r.fits(n) and r.shortcuts == g.shortcuts and r.is_valid() == g.is_valid()
        assert round_gates(r, n) == r                                   # idempotent
        assert [c > 0 for c in r.channels()] == [c > 0 for c in g.channels()]   # no branch removed or restored
        for c, rc in zip(g.channels(), r.channels()):
            assert abs(c - rc) <= n / 2 or (c < n and rc == n)         # nearest multiple, at least N
        if n <= 16:
            assert r == g


@pytest.mark.parametrize("value", [0, 3, 24, 48, 128, -8])
def test_a_multiple_off_the_divisors_of_64_is_refused_at_once(value):
    with pytest.raises(HwnasError, match="channel-multiple"):
        prune_config(table="t.csv", channel_multiple=value)
    assert prune_config(table="t.csv").channel_multiple == 1
    assert prune_config(table="t.csv", channel_multiple=32).channel_multiple == 32


def test_a_run_made_before_the_option_reads_as_no_rounding():
    from hwnas.config import PruneConfig

    d = prune_config(table="t.csv").to_dict()
    del d["channel_multiple"]
    assert PruneConfig.from_dict(d).channel_multiple == 1


@pytest.mark.parametrize("n", [32, 64])
def test_the_hypernet_never_samples_nor_picks_a_width_off_the_grid(n):
    """Logits that favour every off-grid choice: no hard sample, no probability, no argmax lands there; gradients
    stay finite."""
    h = GateHypernet("linear", 3.0, torch.Generator().manual_seed(0), channel_multiple=n)
    off = ~allowed_choices(n)
    with torch.no_grad():
        b2 = h.net.b2.view(-1)
        b2[: off.numel()][off.flatten()] = 50.0
    cfg = RelaxConfig("gumbel", hard=True, tau_start=1.0, tau_end=1.0)
    gen = torch.Generator().manual_seed(1)
    for lam in (0.0, 0.3, 1.0):
        bl, sl = h(torch.tensor([lam]))
        wb, _ = relax_gates(bl, sl, cfg, 1.0, gen)
        assert float(wb.detach()[off].abs().sum()) == 0.0
        (wb * torch.arange(5.0)).sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in h.parameters() if p.grad is not None)
        probs, _ = gate_probabilities(*h.penalty_logits(torch.tensor([lam])))
        assert float(probs.detach()[off].sum()) == 0.0
        g = argmax_gates(*h(torch.tensor([lam])))
        assert g.fits(n) and g.is_valid()
    plain = GateHypernet("linear", 3.0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain.net.b2.copy_(h.net.b2)
    assert not argmax_gates(*plain(torch.tensor([0.0]))).fits(n)   # the same logits without the option: off-grid


def test_theorem_samples_and_the_cheapest_set_keep_the_grid():
    from hwnas.prune.gate_cost import GateCost

    sets, _ = valid_gate_sets(40, seed=0, channel_multiple=64)
    assert all(g.fits(64) and g.is_valid() for g in sets)
    assert not all(g.fits(64) for g in valid_gate_sets(40, seed=0)[0])
    # a cost that makes layer1's quarter width the cheapest choice
    t_branch = torch.ones(len(BLOCKS), len(BRANCH_CHOICES))
    t_branch[:, 1] = 0.0
    cost = GateCost(t_branch, torch.zeros(len(PROJECTIONS), 2), 0.0)
    assert cheapest_gates(cost).channels()[0] == 16
    cheap = cheapest_gates(cost, 64)
    assert cheap.fits(64) and cheap.is_valid()


def conv_shapes(path) -> list[tuple[int, ...]]:
    """(out, in, kh, kw) of every Conv node's weight in an ONNX file, read from the graph."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    init = {t.name: tuple(numpy_helper.to_array(t).shape) for t in m.graph.initializer}
    consts = {o: tuple(numpy_helper.to_array(a.t).shape) for n in m.graph.node if n.op_type == "Constant"
              for a in n.attribute if a.name == "value" for o in n.output}
    return [init.get(n.input[1]) or consts[n.input[1]] for n in m.graph.node if n.op_type == "Conv"]


@pytest.mark.parametrize("n", [1, 64])
def test_the_exported_onnx_has_the_rounded_widths(tmp_path, n):
    """A gate set with layer1 at a quarter and layer2 at three quarters, rounded to N and exported: every Conv of
    the ONNX graph has multiples of N in and out (but the first conv's image channels)."""
    from hwnas.export import export_onnx_dynamic
    from hwnas.latency.resnet_keys import torchvision_resnet18
    from hwnas.latency.space import SpaceConfig

    space = SpaceConfig(space="resnet18", input_h=8, input_w=8, in_channels=1, batch=1)
    g = round_gates(GateSet((0.25, 0.75, 0.75, 0.25, 0.5, 1.0, 0.25, 0.0)), n)
    net = materialise(torchvision_resnet18(space).eval(), g)
    export_onnx_dynamic(net, (1, 8, 8), tmp_path / "m.onnx")
    shapes = conv_shapes(tmp_path / "m.onnx")
    assert shapes[0][1] == 1 and len(shapes) == 1 + 2 * sum(c > 0 for c in g.channels()) + 3
    assert all(s[0] % n == 0 for s in shapes) and all(s[1] % n == 0 for s in shapes[1:])
    expected = Counter([64] + [w for w in BLOCK_WIDTHS[2::2]])   # stem, the three projection shortcuts
    for c, w in zip(g.channels(), BLOCK_WIDTHS):
        expected.update([c, w] if c else [])                        # a kept branch: conv1 → c, conv2 → w
    assert Counter(s[0] for s in shapes) == expected
    assert (16 in expected) == (n == 1)
