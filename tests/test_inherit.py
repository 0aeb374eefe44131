"""The inherited-weight evaluation of a front (hwnas.search.inherit): what the front fine-tune trains."""
import re

import torch

from hwnas.search.inherit import InheritConfig, front_finetune, inherited_accuracy
from hwnas.search.loop import Search, quick_config
from hwnas.spaces.genotype import Genotype, edge_ops
from hwnas.spaces.ops import PRIMITIVES

A = Genotype.parse("Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('max_pool_3x3', 0), "
                   "('sep_conv_3x3', 2), ('skip_connect', 0), ('avg_pool_3x3', 3), ('skip_connect', 1), "
                   "('dil_conv_3x3', 4)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
                   "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('skip_connect', 2), "
                   "('max_pool_3x3', 1), ('skip_connect', 2), ('skip_connect', 3)], reduce_concat=[2, 3, 4, 5])")
B = Genotype.parse("Genotype(normal=[('skip_connect', 0), ('skip_connect', 1), ('skip_connect', 0), "
                   "('skip_connect', 1), ('skip_connect', 0), ('skip_connect', 1), ('skip_connect', 0), "
                   "('skip_connect', 1)], normal_concat=[2, 3, 4, 5], reduce=[('sep_conv_5x5', 0), "
                   "('sep_conv_5x5', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('skip_connect', 2), "
                   "('max_pool_3x3', 1), ('skip_connect', 2), ('skip_connect', 3)], reduce_concat=[2, 3, 4, 5])")


def test_front_finetune_trains_exactly_the_fronts_ops_and_leaves_the_supernet_alone():
    torch.manual_seed(0)
    search = Search(quick_config(epochs=1))
    before = {n: p.detach().clone() for n, p in search.net.named_parameters()}
    net = front_finetune(search, [A, B], steps=4)
    for n, p in search.net.named_parameters():  # the supernet itself is untouched
        assert torch.equal(p, before[n]), n
    used = {False: set(), True: set()}  # (edge, op) pairs some front network uses, per cell kind
    for g in (A, B):
        ops_n, ops_r = edge_ops(g)
        used[False] |= set(enumerate(ops_n))
        used[True] |= set(enumerate(ops_r))
    after = dict(net.named_parameters())
    moved, still = 0, 0
    for n, p in before.items():
        m = re.match(r"cells\.(\d+)\.edges\.(\d+)\.ops\.(\d+)\.", n)
        if m is None:  # stem, preprocessing, classifier: shared by every network, trained
            assert not torch.equal(after[n], p), n
            continue
        cell, edge, op = map(int, m.groups())
        if (edge, op) in used[search.net.cells[cell].reduction]:
            moved += not torch.equal(after[n], p)
        else:  # an op no network of the front uses gets no step (no gradient, so no weight decay either)
            assert torch.equal(after[n], p), f"{n} ({PRIMITIVES[op]}) is used by no front network but moved"
            still += 1
    assert moved > 0 and still > 0


def test_inherited_accuracy_evaluates_a_given_net_without_changing_it():
    torch.manual_seed(0)
    search = Search(quick_config(epochs=1))
    net = front_finetune(search, [A], steps=2)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    loss, acc = inherited_accuracy(search, A, InheritConfig(steps=0, front_steps=0), net=net)
    assert 0.0 <= acc <= 1.0 and loss > 0
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
