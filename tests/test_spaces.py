import random

import pytest
import torch
import torch.nn.functional as F

from hwnas.spaces.genotype import DARTS_V1, DARTS_V2, Genotype
from hwnas.spaces.network import DiscreteNetwork, NetworkConfig, count_parameters
from hwnas.spaces.ops import OPS, PRIMITIVES, drop_path, make_op
from hwnas.spaces.supernet import Supernet, SupernetConfig
from tests.test_genotype import random_genotype


def closed_form_params(g: Genotype, C: int, layers: int, classes: int, in_ch: int) -> int:
    """Parameter count written from the DARTS paper's op definitions (conv weights, BN γ/β),
    independently of the modules: the reference for `count_parameters`."""
    def op(name: str, c: int, stride: int) -> int:
        k = {"3x3": 3, "5x5": 5}.get(name[-3:], 0)
        if name.startswith("sep_conv"):
            return 2 * (c * k * k + c * c) + 4 * c
        if name.startswith("dil_conv"):
            return c * k * k + c * c + 2 * c
        if name == "skip_connect" and stride == 2:
            return c * c + 2 * c       # FactorizedReduce: two c → c/2 1×1 convs + BN(c)
        return 0                       # pools, identity, none

    c_curr = 3 * C
    total = in_ch * c_curr * 9 + 2 * c_curr  # stem conv + BN
    c_pp, c_p, c_curr = c_curr, c_curr, C
    red_prev = False
    for i in range(layers):
        red = i in (layers // 3, 2 * layers // 3)
        c_curr *= 2 if red else 1
        total += (c_pp * c_curr + 2 * c_curr) + (c_p * c_curr + 2 * c_curr)  # preprocess0/1 (either kind)
        edges, concat = (g.reduce, g.reduce_concat) if red else (g.normal, g.normal_concat)
        total += sum(op(name, c_curr, 2 if red and j < 2 else 1) for name, j in edges)
        red_prev = red
        c_pp, c_p = c_p, len(concat) * c_curr
    del red_prev
    return total + c_p * classes + classes


def test_darts_v2_on_cifar10_has_the_published_parameter_count():
    # DARTS reference train.py logs "param size = 3.349342MB" for DARTS_V2, 36 channels, 20 layers.
    net = DiscreteNetwork(DARTS_V2, NetworkConfig(channels=36, layers=20, num_classes=10, in_channels=3, auxiliary=True))
    assert count_parameters(net) == 3_349_342
    assert count_parameters(net, exclude_auxiliary=False) > 3_349_342


@pytest.mark.parametrize("seed", range(8))
def test_parameter_count_matches_closed_form(seed):
    rng = random.Random(seed)
    g = random_genotype(rng)
    C, L, classes, in_ch = rng.choice([4, 8, 16, 36]), rng.choice([3, 5, 8, 20]), rng.choice([10, 100]), rng.choice([1, 3])
    net = DiscreteNetwork(g, NetworkConfig(channels=C, layers=L, num_classes=classes, in_channels=in_ch))
    assert count_parameters(net) == closed_form_params(g, C, L, classes, in_ch)


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
def test_every_registered_op_keeps_channels_and_strides(name, stride, size):
    op = make_op(name, 8, stride, affine=True)
    y = op(torch.randn(2, 8, size, size))
    expected = size if stride == 1 else (size + 1) // 2
    assert y.shape == (2, 8, expected, expected)


def test_registry_order_is_the_alpha_column_order():
    assert tuple(OPS) == PRIMITIVES and PRIMITIVES[0] == "none" and len(PRIMITIVES) == 8


@pytest.mark.parametrize("size", [8, 28, 32, 14, 7])
def test_supernet_and_discrete_network_shapes(size):
    torch.manual_seed(0)
    cfg = SupernetConfig(channels=4, layers=5, num_classes=10, in_channels=1)
    net = Supernet(cfg)
    w = torch.softmax(torch.randn(cfg.n_edges, cfg.n_ops), -1)
    assert net(torch.randn(3, 1, size, size), w, w).shape == (3, 10)
    d = DiscreteNetwork(DARTS_V1, NetworkConfig(channels=4, layers=5, num_classes=7, in_channels=1, auxiliary=True))
    d.train()
    d.drop_path_prob = 0.3
    logits, aux = d.forward_with_aux(torch.randn(3, 1, size, size))
    assert logits.shape == (3, 7) and aux.shape == (3, 7)
    d.eval()
    assert d.forward_with_aux(torch.randn(3, 1, size, size))[1] is None


def test_hard_index_path_equals_one_hot_soft_path():
    torch.manual_seed(0)
    cfg = SupernetConfig(channels=4, layers=3, in_channels=1)
    net = Supernet(cfg).double()
    idx = [random.Random(e).randrange(1, cfg.n_ops) for e in range(cfg.n_edges)]
    one_hot = torch.zeros(cfg.n_edges, cfg.n_ops, dtype=torch.double)
    one_hot[torch.arange(cfg.n_edges), idx] = 1.0
    x = torch.randn(4, 1, 8, 8, dtype=torch.double)
    torch.testing.assert_close(net(x, one_hot, one_hot, idx, idx), net(x, one_hot, one_hot))


def test_supernet_none_only_edges_contribute_nothing():
    """All weight on `none`: every node is 0, so every cell outputs zeros and the logits are the
    classifier's bias for any input (an independent reference: the head alone)."""
    torch.manual_seed(0)
    cfg = SupernetConfig(channels=4, layers=3, in_channels=1)
    net = Supernet(cfg).double().eval()
    w = torch.zeros(cfg.n_edges, cfg.n_ops, dtype=torch.double)
    w[:, 0] = 1.0
    x = torch.randn(2, 1, 8, 8, dtype=torch.double)
    bias = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1].bias
    torch.testing.assert_close(net(x, w, w), bias.expand(2, -1), atol=1e-12, rtol=0)
    # one real op on one edge of the last cell makes the output depend on the input again
    w_one = w.clone()
    w_one[0] = 0.0
    w_one[0, cfg.n_ops - 1] = 1.0
    assert not torch.allclose(net(x, w_one, w_one), bias.expand(2, -1))


def test_drop_path_zeroes_whole_samples_and_keeps_expectation():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(20000, 2, 3, 3)
    y = drop_path(x, 0.25, generator=g)
    per_sample = y.flatten(1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1))
    assert abs(y.mean().item() - 1.0) < 0.02
    assert drop_path(x, 0.0) is x


@pytest.mark.parametrize("hw", [8, 7])
def test_factorized_reduce_trains_as_it_evaluates(hw):
    """Training takes the stride-2 1×1 convolutions apart (subsample, then 1×1): the same numbers as the strided
    convolutions that eval and export run, at even and odd sizes."""
    from hwnas.spaces.ops import FactorizedReduce

    torch.manual_seed(0)
    op = FactorizedReduce(4, 6, affine=False)
    x = torch.randn(3, 4, hw, hw)
    train = op.train()(x)
    shifted = F.pad(F.relu(x)[:, :, 1:, 1:], (0, hw % 2, 0, hw % 2))
    raw = torch.cat([op.conv_1(F.relu(x)), op.conv_2(shifted)], dim=1)
    mean, var = raw.mean((0, 2, 3), keepdim=True), raw.var((0, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(train, (raw - mean) / torch.sqrt(var + op.bn.eps), atol=1e-5, rtol=1e-5)
    assert train.shape == op.eval()(x).shape == (3, 6, (hw + 1) // 2, (hw + 1) // 2)


def test_factorized_reduce_backward_on_few_channels_last_channels_survives():
    """The weight gradient of a stride-2 1×1 convolution on a channels-last input of 4 channels corrupted the heap
    in oneDNN (torch 2.14.1, AVX2 CPU: the PC-DARTS CLI test aborted its worker). In a child process, so that an
    abort fails this test instead of the run."""
    import subprocess
    import sys

    code = ("import torch\nfrom hwnas.spaces.ops import FactorizedReduce\n"
            "op = FactorizedReduce(4, 4).to(memory_format=torch.channels_last).train()\n"
            "for _ in range(50):\n"
            "    x = torch.randn(16, 4, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()\n"
            "    op(x).sum().backward()\nprint('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-500:]


def test_training_avoids_channels_last_where_onednn_would_fault():
    """`hwnas train` keeps channels-last unless the network trains a strided 1×1 convolution on 2–6 input channels
    outside FactorizedReduce (which trains around it): then contiguous, on the CPU only."""
    from torch import nn

    from hwnas.runtime import onednn_safe_format
    from hwnas.spaces.ops import FactorizedReduce

    cpu, cl = torch.device("cpu"), torch.channels_last
    downsample = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 8, 1, stride=2))
    assert onednn_safe_format(downsample, cpu, cl) == torch.contiguous_format
    assert onednn_safe_format(downsample, torch.device("cuda"), cl) == cl
    assert onednn_safe_format(downsample, cpu, torch.contiguous_format) == torch.contiguous_format
    assert onednn_safe_format(nn.Sequential(nn.Conv2d(8, 8, 1, stride=2)), cpu, cl) == cl
    assert onednn_safe_format(nn.Sequential(FactorizedReduce(4, 4)), cpu, cl) == cl
    net = DiscreteNetwork(DARTS_V2, NetworkConfig(channels=4, layers=3, num_classes=10, in_channels=1))
    assert onednn_safe_format(net, cpu, cl) == cl   # its reductions are FactorizedReduce
