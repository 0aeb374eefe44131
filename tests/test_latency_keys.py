import random

import pytest
import torch

from hwnas.latency import darts_keys as dk
from hwnas.latency import resnet_keys as rk
from hwnas.latency.space import OpKey, SpaceConfig
from hwnas.spaces.network import DiscreteNetwork, NetworkConfig
from hwnas.spaces.ops import PRIMITIVES
from tests.test_genotype import random_genotype

TINY = SpaceConfig(channels=4, layers=3, input_h=8, input_w=8, in_channels=1, batch=2)
CHOICES = [p for p in PRIMITIVES if p != "none"]


def _k(op, ci, co, hw, s):
    return OpKey(op, ci, co, hw, hw, s, 2, "float32")


def test_darts_keys_match_a_hand_derived_list():
    # channels 4, 3 cells, reductions at cells 1 and 2; stem 3·4 = 12 channels; 8x8 input.
    expected = {_k(dk.STEM, 1, 12, 8, 1), _k(dk.HEAD, 64, 10, 2, 1)}
    # cell 0 (normal, C=4 at 8x8): both preprocessings are RCB 12→4 (one key)
    expected |= {_k(dk.PRE_RCB, 12, 4, 8, 1), _k(dk.ADD, 4, 4, 8, 1), _k(dk.CONCAT, 4, 16, 8, 1)}
    expected |= {_k(op, 4, 4, 8, 1) for op in CHOICES}
    # cell 1 (reduce, C=8): s0 12 ch, s1 16 ch at 8x8; stride-2 edges at 8x8, stride-1 at 4x4
    expected |= {_k(dk.PRE_RCB, 12, 8, 8, 1), _k(dk.PRE_RCB, 16, 8, 8, 1), _k(dk.ADD, 8, 8, 4, 1),
                 _k(dk.CONCAT, 8, 32, 4, 1)}
    expected |= {_k(op, 8, 8, 8, 2) for op in CHOICES} | {_k(op, 8, 8, 4, 1) for op in CHOICES}
    # cell 2 (reduce after reduce, C=16): s0 16 ch at 8x8 (FactorizedReduce), s1 32 ch at 4x4
    expected |= {_k(dk.PRE_FR, 16, 16, 8, 2), _k(dk.PRE_RCB, 32, 16, 4, 1), _k(dk.ADD, 16, 16, 2, 1),
                 _k(dk.CONCAT, 16, 64, 2, 1)}
    expected |= {_k(op, 16, 16, 4, 2) for op in CHOICES} | {_k(op, 16, 16, 2, 1) for op in CHOICES}
    keys = dk.darts_keys(TINY)
    assert len(keys) == len(set(keys)) == 48
    assert set(keys) == expected


@pytest.mark.parametrize("seed", range(10))
def test_every_genotype_op_has_a_key_and_shapes_match_the_network(seed):
    g = random_genotype(random.Random(seed))
    keys = set(dk.darts_keys(TINY))
    used = dk.genotype_keys(TINY, g)
    assert set(used) <= keys
    assert len(used) == 1 + 3 * (2 + 8 + 4 + 1) + 1  # stem, per cell (2 pre + 8 ops + 4 adds + concat), head
    # The key shapes are the shapes the real network feeds its ops: hook every op of the cells.
    net = DiscreteNetwork(g, NetworkConfig(channels=4, layers=3, in_channels=1)).eval()
    seen = []
    for cell in net.cells:
        for op, j in zip(cell.ops, cell.indices):
            op.register_forward_hook(lambda m, inp, out, j=j: seen.append((tuple(inp[0].shape), tuple(out.shape))))
    with torch.no_grad():
        net(torch.randn(2, 1, 8, 8))
    op_keys = [k for k in used if k.op in CHOICES]
    assert len(op_keys) == len(seen)
    for key, (shape_in, shape_out) in zip(op_keys, seen):
        assert shape_in == (2, key.c_in, key.h, key.w)
        assert shape_out[2] == (key.h + 1) // key.stride if key.stride == 2 else key.h


@pytest.mark.parametrize("key_index", [0, 1, 2, 3, 12, 47])
def test_darts_modules_run_at_their_key_shapes(key_index):
    key = dk.darts_keys(TINY)[key_index]
    module, shapes = dk.darts_module(key, TINY)
    out = module(*[torch.randn(s) for s in shapes])
    assert out.shape[0] == 2 and out.shape[1] == key.c_out


def test_resnet18_keys_cifar_and_imagenet():
    cifar = SpaceConfig(space="resnet18", input_h=32, input_w=32, in_channels=3, batch=1)
    keys = rk.resnet_keys(cifar)
    branches = [k for k in keys if k.op.startswith("resnet_branch_")]
    # every block position × every fraction; layer1.0 and layer1.1 have the same shapes, so share keys
    assert len(branches) == 7 * 4
    assert sum(k.op == rk.SHORTCUT for k in keys) == 3  # stages 2–4
    assert keys[0].op == rk.STEM_SMALL and keys[-1] == OpKey(rk.HEAD, 512, 10, 4, 4, 1, 1, "float32")
    imagenet = SpaceConfig(space="resnet18", input_h=224, input_w=224, in_channels=3, num_classes=1000, batch=1)
    blocks = rk.block_positions(imagenet)
    assert [b.hw[0] for b in blocks] == [56, 56, 56, 28, 28, 14, 14, 7]
    assert rk.stem_key(imagenet).op == rk.STEM_LARGE
    # A pruned network's keys: removed identity blocks cost nothing, removed projection blocks keep the shortcut.
    pruned = rk.pruned_keys(cifar, {"layer1.0": 0, "layer2.0": 0, "layer3.1": 0.5})
    assert sum(k.op == rk.SHORTCUT for k in pruned) == 3
    assert sum(k.op.startswith("resnet_branch_") for k in pruned) == 6
    assert branch_ops(pruned).count("resnet_branch_0.50") == 1


def branch_ops(keys):
    return [k.op for k in keys if k.op.startswith("resnet_branch_")]


def test_pruned_resnet_runs_and_matches_torchvision_when_whole():
    cfg = SpaceConfig(space="resnet18", input_h=32, input_w=32, in_channels=3, batch=1)
    whole = rk.pruned_resnet18(cfg, {})
    from torchvision.models import resnet18

    n_params = sum(p.numel() for p in whole.parameters())
    ref = resnet18(weights=None, num_classes=10)
    # small stem: conv 3x3 (64·3·9) instead of 7x7 (64·3·49)
    assert n_params == sum(p.numel() for p in ref.parameters()) - 64 * 3 * 49 + 64 * 3 * 9
    pruned = rk.pruned_resnet18(cfg, {"layer2.0": 0, "layer4.1": 0.25})
    assert pruned(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(Exception, match="layer9"):
        rk.pruned_keys(cfg, {"layer9.0": 1.0})
