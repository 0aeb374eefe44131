"""Gated ResNet18: exact all-on, the one-pass relaxed forward, materialised sub-networks, Γ_valid, the cost."""
import itertools

import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.latency import resnet_keys as rk
from hwnas.latency.space import SpaceConfig
from hwnas.prune.gate_cost import GateCost
from hwnas.spaces import gated_resnet as gr
from tests.test_latency_table import synthetic

SPACE = SpaceConfig(space="resnet18", input_h=16, input_w=16, in_channels=3, batch=1)


def trained_like(seed=0):
    """A resnet18 with random, non-trivial BN statistics and affine parameters (as after training)."""
    torch.manual_seed(seed)
    model = rk.torchvision_resnet18(SPACE)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(-1.5, 1.5)
                m.bias.normal_(0, 0.3)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def x_batch(n=4, seed=1):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def random_weights(seed):
    g = torch.Generator().manual_seed(seed)
    wb = torch.softmax(torch.randn(8, len(gr.BRANCH_CHOICES), generator=g) * 2, -1)
    ws = torch.softmax(torch.randn(len(gr.PROJECTIONS), 2, generator=g) * 2, -1)
    return wb, ws


def test_all_on_is_bit_exact_torchvision():
    model = trained_like()
    x = x_batch()
    with torch.no_grad():
        want = model(x)
        gated = gr.GatedResNet18(model)
        assert torch.equal(gated(x), want)
        assert torch.equal(gated(x, *gr.GateSet().one_hot()), want)


def test_reordering_keeps_the_function_and_sorts_importance():
    model = trained_like()
    x = x_batch()
    with torch.no_grad():
        before = model(x)
        gr.reorder_by_importance(model)
        after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    blk = model.layer3[1]
    imp = blk.conv1.weight.abs().sum((1, 2, 3)) * blk.bn1.weight.abs()
    assert torch.all(imp[:-1] >= imp[1:])


def explicit_mixture(model, x, wb, ws):
    """Σ_f γ_f · branch_f(x) with each branch_f a separately sliced network, block by block."""
    def branch(blk, f, h):
        if f == 0:
            return torch.zeros_like(blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(h))))))
        k = rk.inner_width(f, blk.conv1.out_channels)
        mid = torch.relu(torch.nn.functional.batch_norm(
            torch.nn.functional.conv2d(h, blk.conv1.weight[:k], stride=blk.conv1.stride, padding=1),
            blk.bn1.running_mean[:k], blk.bn1.running_var[:k], blk.bn1.weight[:k], blk.bn1.bias[:k],
            eps=blk.bn1.eps))
        return blk.bn2(torch.nn.functional.conv2d(mid, blk.conv2.weight[:, :k], padding=1))

    m = model
    h = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    p = 0
    for i, name in enumerate(rk.BLOCKS):
        blk = m.get_submodule(name)
        mix = sum(wb[i, j] * branch(blk, f, h) for j, f in enumerate(gr.BRANCH_CHOICES))
        ident = h
        if blk.downsample is not None:
            ident = ws[p, 1] * blk.downsample(h)
            p += 1
        h = torch.relu(mix + ident)
    return m.fc(torch.flatten(m.avgpool(h), 1))


@pytest.mark.parametrize("seed", [0, 1])
def test_one_pass_relaxed_forward_equals_explicit_mixture(seed):
    model = trained_like(seed)
    gated = gr.GatedResNet18(model)
    wb, ws = random_weights(seed)
    x = x_batch(3, seed)
    with torch.no_grad():
        torch.testing.assert_close(gated(x, wb, ws), explicit_mixture(model, x, wb, ws), rtol=1e-4, atol=1e-4)


def test_relaxed_gates_get_gradients_and_training_mode_is_refused():
    model = trained_like()
    gated = gr.GatedResNet18(model)
    wb, ws = random_weights(3)
    wb.requires_grad_(True)
    ws.requires_grad_(True)
    gated(x_batch(2), wb, ws).square().sum().backward()
    assert wb.grad.abs().sum() > 0 and ws.grad.abs().sum() > 0
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        gated(x_batch(2), wb, ws)


SUBNETS = [gr.GateSet(),
           gr.GateSet((0.25, 0, 0.5, 0.75, 0.5, 1.0, 0.25, 0), (True, False, True)),
           gr.GateSet((0, 0, 0.25, 0, 0.5, 0, 0, 0), (True, True, True)),
           gr.GateSet((0, 0, 0, 0, 0, 0, 0, 0), (True, True, True)),
           gr.GateSet((1.0, 1.0, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25), (False, False, False))]


@pytest.mark.parametrize("gates", SUBNETS, ids=[g.describe() for g in SUBNETS])
def test_materialised_equals_gated_at_one_hot(gates):
    model = gr.reorder_by_importance(trained_like())
    gated = gr.GatedResNet18(model)
    x = x_batch(4)
    net = gr.materialise(model, gates)
    with torch.no_grad():
        torch.testing.assert_close(net(x), gated(x, *gates.one_hot()), rtol=1e-4, atol=1e-4)
    # physically smaller: no masks, parameters shrink with the gates, removed blocks are gone
    n_blocks = sum(1 for _ in net.modules() if isinstance(_, rk.PrunedBlock))
    assert n_blocks == sum(1 for f, n in zip(gates.fractions, rk.BLOCKS) if f > 0 or n in gr.PROJECTIONS)
    if gates != gr.GateSet():
        assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in model.parameters())
    for name, f in zip(rk.BLOCKS, gates.fractions):
        if f > 0:
            blk = [b for b in net.modules() if isinstance(b, rk.PrunedBlock)]
            assert any(b.branch[0].out_channels == rk.inner_width(f, b.branch[3].out_channels) for b in blk)


@pytest.mark.parametrize("gates", SUBNETS, ids=[g.describe() for g in SUBNETS])
def test_batch_statistics_forward_is_the_materialised_network_normalised_by_the_batch(gates):
    """bn adapt: at one-hot gates the gated forward with batch statistics is the pruned network itself with every
    BN normalising by the batch (train mode); the running statistics are not touched; soft gates get finite
    gradients (a removed branch is 0 × the full branch, no BN of an all-zero input)."""
    model = gr.reorder_by_importance(trained_like())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gated = gr.GatedResNet18(model, batch_stats=True)
    x = x_batch(8)
    net = gr.materialise(model, gates).train()
    with torch.no_grad():
        torch.testing.assert_close(gated(x, *gates.one_hot()), net(x), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(gated(x, *gates.one_hot()), gr.GatedResNet18(model)(x, *gates.one_hot()))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    wb, ws = random_weights(3)
    wb.requires_grad_(True)
    ws.requires_grad_(True)
    gated(x, wb, ws).logsumexp(1).sum().backward()
    assert torch.isfinite(wb.grad).all() and torch.isfinite(ws.grad).all() and wb.grad.abs().sum() > 0


def test_pruned_network_re_estimates_bn_except_for_the_intact_pretrained_network():
    from hwnas.prune.adapt import pruned_network

    model = gr.reorder_by_importance(trained_like())
    x = x_batch(16, seed=5)
    batches = [(x, torch.zeros(16, dtype=torch.long))]
    intact = pruned_network(model, gr.GateSet(), batches)
    torch.testing.assert_close(intact(x), model(x))                      # λ = 0: the pretrained network itself
    g = SUBNETS[1]
    adapted, frozen = pruned_network(model, g, batches), pruned_network(model, g, batches, bn="frozen")
    torch.testing.assert_close(frozen(x), gr.materialise(model, g)(x))
    bns = [m for m in adapted.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    first = bns[0]                                                      # the stem's BN sees x itself
    with torch.no_grad():
        z = adapted.conv1(x)
    torch.testing.assert_close(first.running_mean, z.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not adapted.training
    finetuned = pruned_network(model, gr.GateSet(), batches, finetuned=True)
    assert not torch.allclose(finetuned(x), model(x))                   # moved weights: statistics re-estimated


def test_invalid_gate_sets_are_rejected():
    bad = gr.GateSet((1.0, 1.0, 0, 1.0, 1.0, 1.0, 1.0, 1.0), (False, True, True))
    assert not bad.is_valid() and bad.broken_blocks() == ["layer2.0"]
    # its output does not depend on the input (what "broken" means)
    gated = gr.GatedResNet18(trained_like())
    with torch.no_grad():
        out = gated(x_batch(3), *bad.one_hot())
    torch.testing.assert_close(out, out[:1].expand_as(out))
    with pytest.raises(HwnasError, match="layer2.0"):
        gr.materialise(trained_like(), bad)
    with pytest.raises(HwnasError, match="nothing is left"):
        rk.pruned_keys(SPACE, bad.arch())
    # the other gate sets with a removed shortcut are valid
    assert gr.GateSet((1.0, 1.0, 0.25, 1.0, 1.0, 1.0, 1.0, 1.0), (False, False, False)).is_valid()
    with pytest.raises(HwnasError, match="not among"):
        gr.GateSet((0.3,) + (1.0,) * 7)


def test_cost_of_one_gate_set_is_the_table_prediction():
    table = synthetic(SPACE)
    cost = GateCost.from_table(table, SPACE)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        gates = gr.GateSet.sample(g)
        if gates.is_valid():
            assert cost.of(gates) == pytest.approx(table.predict(gates.arch()), rel=1e-6)
    assert cost.constant + cost.bound() == pytest.approx(table.predict({}), rel=1e-6)


@pytest.mark.slow
def test_expected_cost_equals_brute_force_enumeration():
    def latency(k):
        if k.op.startswith("resnet_branch_"):
            return 0.01 * k.c_in * float(k.op[-4:])
        return 0.3 if k.op == rk.SHORTCUT else 0.02

    table = synthetic(SPACE, latency=latency)
    cost = GateCost.from_table(table, SPACE)
    wb, ws = random_weights(5)
    # Blocks 0 (identity shortcut) and 2 (projection) and shortcut 0 random; the rest one-hot.
    fixed = gr.GateSet((0.5, 0.25, 0.75, 0, 1.0, 0.5, 0.25, 0.25), (True, True, False))  # valid but for blocks 0/2
    fb, fs = fixed.one_hot()
    wb = torch.cat([wb[:1], fb[1:2], wb[2:3], fb[3:]])
    ws = torch.cat([ws[:1], fs[1:]])
    total, n_broken = 0.0, 0
    for i, j, s in itertools.product(range(5), range(5), range(2)):
        fr = list(fixed.fractions)
        fr[0], fr[2] = gr.BRANCH_CHOICES[i], gr.BRANCH_CHOICES[j]
        gates = gr.GateSet(tuple(fr), (bool(s),) + fixed.shortcuts[1:])
        prob = float(wb[0, i] * wb[2, j] * ws[0, s])
        if gates.is_valid():
            price = cost.of(gates)
            assert price == pytest.approx(table.predict(gates.arch()), rel=1e-6)
        else:  # branch 2 and its projection both off: priced from the table's own sums of valid sets,
            # the set with the shortcut kept less what keeping that shortcut costs where the branch is on
            def pred(f2, s0):
                f = list(fr)
                f[2] = f2
                return table.predict(gr.GateSet(tuple(f), (s0,) + fixed.shortcuts[1:]).arch())
            price = pred(fr[2], True) - (pred(0.25, True) - pred(0.25, False))
            n_broken += 1
        total += prob * price
    assert cost.constant + float(cost.expected(wb, ws)) == pytest.approx(total, rel=1e-6)
    assert 0 < n_broken < 50  # both kinds of set are in the enumeration


def test_table_for_another_network_is_refused():
    table = synthetic(SPACE)
    other = SpaceConfig(space="resnet18", input_h=28, input_w=28, in_channels=1, batch=1)
    with pytest.raises(HwnasError, match="input_h 16 .table. vs 28"):
        GateCost.from_table(table, other)


def test_every_kept_width_is_already_a_multiple_of_16():
    """Issue #12.5 (widths the hardware likes): ResNet18's inner widths (64…512) at the gate fractions
    (¼, ½, ¾, 1) keep 16…512 channels, all multiples of 16, so rounding to 8 or 16 would change no network."""
    model = rk.torchvision_resnet18(SPACE)
    for name in rk.BLOCKS:
        width = model.get_submodule(name).conv1.out_channels
        for f in gr.BRANCH_CHOICES[1:]:
            assert rk.inner_width(f, width) % 16 == 0, (name, f)
