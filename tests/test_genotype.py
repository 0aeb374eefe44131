import json
import random

import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.spaces.genotype import DARTS_V1, DARTS_V2, Genotype, derive_genotype, load_genotype, num_edges
from hwnas.spaces.ops import PRIMITIVES


def random_genotype(rng: random.Random, steps: int = 4) -> Genotype:
    ops = [p for p in PRIMITIVES if p != "none"]

    def cell():
        return tuple((rng.choice(ops), rng.randrange(i + 2)) for i in range(steps) for _ in range(2))

    concat = tuple(range(2, steps + 2))
    return Genotype(cell(), concat, cell(), concat)


@pytest.mark.parametrize("seed", range(20))
def test_string_and_json_round_trip_exactly(seed):
    g = random_genotype(random.Random(seed), steps=random.Random(seed).choice([2, 3, 4]))
    assert Genotype.parse(str(g)) == g
    assert Genotype.from_dict(json.loads(g.to_json())["genotype"]) == g
    assert str(Genotype.parse(str(g))) == str(g)


def test_parses_the_reference_python3_print_form_with_range():
    text = str(DARTS_V2).replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2, 6)").replace(
        "reduce_concat=[2, 3, 4, 5]", "reduce_concat=range(2, 6)")
    assert "range(2, 6)" in text
    assert Genotype.parse(text) == DARTS_V2


def test_published_genotype_fields():
    assert DARTS_V2.normal[7] == ("dil_conv_3x3", 2)
    assert DARTS_V2.reduce_concat == (2, 3, 4, 5)
    assert DARTS_V1 != DARTS_V2
    assert DARTS_V2.steps == 4


def test_load_genotype_from_string_file_and_run_dir(tmp_path):
    assert load_genotype(str(DARTS_V1)) == DARTS_V1
    (tmp_path / "g.json").write_text(DARTS_V1.to_json())
    assert load_genotype(tmp_path / "g.json") == DARTS_V1
    run = tmp_path / "run"
    run.mkdir()
    (run / "genotype.json").write_text(json.dumps(DARTS_V2.record()))
    assert load_genotype(run) == DARTS_V2
    (tmp_path / "g.txt").write_text(str(DARTS_V2))
    assert load_genotype(tmp_path / "g.txt") == DARTS_V2


@pytest.mark.parametrize("bad, match", [
    ("Genotype(normal=[('conv_9x9', 0), ('skip_connect', 1)], normal_concat=[2], reduce=[('skip_connect', 0), "
     "('skip_connect', 1)], reduce_concat=[2])", "unknown operation 'conv_9x9'"),
    ("Genotype(normal=[('skip_connect', 2), ('skip_connect', 1)], normal_concat=[2], reduce=[('skip_connect', 0), "
     "('skip_connect', 1)], reduce_concat=[2])", "reads state 2"),
    ("Genotype(normal=[('skip_connect', 0)], normal_concat=[2], reduce=[], reduce_concat=[2])", "two edges per node"),
    ("Genotype(normal=[('skip_connect', 0), ('skip_connect', 1)], normal_concat=[7], reduce=[('skip_connect', 0), "
     "('skip_connect', 1)], reduce_concat=[2])", "normal_concat"),
    ("Genotype(normal=[", "cannot parse"),
    ("Genotype(normal=__import__('os').system('true'))", "unexpected expression"),
    ("Genotype(normal=[('skip_connect', 0), ('skip_connect', 1)])", "missing the field"),
])
def test_bad_genotypes_are_clear_errors(bad, match):
    with pytest.raises(HwnasError, match=match):
        Genotype.parse(bad)


def test_load_genotype_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(HwnasError, match="neither a Genotype"):
        load_genotype(tmp_path / "nope.json")


def _weights(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_derive_keeps_top_two_edges_per_node_and_never_none():
    n = num_edges(4)
    w = torch.full((n, len(PRIMITIVES)), 0.01)
    none, sep3, skip, maxp = (PRIMITIVES.index(p) for p in ("none", "sep_conv_3x3", "skip_connect", "max_pool_3x3"))
    w[:, none] = 0.9                      # `none` dominates everywhere but must never be chosen
    w[0, sep3], w[1, skip] = 0.5, 0.3     # node 0: inputs 0 and 1
    w[2, maxp], w[3, sep3], w[4, skip] = 0.2, 0.6, 0.4  # node 1: inputs 0,1,2 → keep 1 (0.6), 2 (0.4)
    g = derive_genotype(w, w)
    assert g.normal[0:2] == (("sep_conv_3x3", 0), ("skip_connect", 1))
    assert g.normal[2:4] == (("sep_conv_3x3", 1), ("skip_connect", 2))
    assert all(op != "none" for op, _ in g.normal + g.reduce)
    assert g.normal_concat == (2, 3, 4, 5)


def test_derive_decides_on_relaxed_weights_not_raw_logits():
    """On node 1 (inputs 0, 1, 2) the edge from state 0 has the largest raw non-none logit, but its
    softmax mass sits on `none`; DARTS ranks edges by the relaxed weights, so it must be dropped."""
    n, k = num_edges(2), len(PRIMITIVES)
    logits = torch.zeros(n, k)
    e0, e1, e2 = 2, 3, 4  # node 1's edges from states 0, 1, 2
    logits[e0, PRIMITIVES.index("none")], logits[e0, PRIMITIVES.index("sep_conv_3x3")] = 10.0, 5.0
    logits[e1, PRIMITIVES.index("dil_conv_3x3")] = 3.0
    logits[e2, PRIMITIVES.index("avg_pool_3x3")] = 2.0
    relaxed = derive_genotype(torch.softmax(logits, -1), torch.softmax(logits, -1), steps=2, multiplier=2)
    raw = derive_genotype(logits, logits, steps=2, multiplier=2)
    assert relaxed.normal[2:4] == (("dil_conv_3x3", 1), ("avg_pool_3x3", 2))
    assert raw.normal[2:4] == (("sep_conv_3x3", 0), ("dil_conv_3x3", 1))  # what deciding on logits would do
