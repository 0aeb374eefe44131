"""Do ops timed *in context* rank whole networks better than ops timed alone? (issue #11, item 5)

A table times every op alone: one ONNX Runtime session per op, inputs and outputs bound, the session call
taken off. Inside a network an op pays no call, its input is already in cache, and the graph optimiser may
fuse it with its neighbours. This script times each *edge* key of a DARTS table (the ops a genotype
chooses; the stem, preprocessing, glue and head are the same in every network and cannot change a ranking)
inside a fixed surrounding graph, by difference:

    par    y = op₁(x) + op₂(x) + … + op_N(x)  (N independent copies reading one input, as a cell's edges read
           its states): marginal = (T_N − T_1) / (N − 1), one op and one add;
    chain  x → op₁ → op₂ → … → op_N  (stride-1 keys; stride-2 keys fall back to `par`): one op whose input was
           just written by the op before it.

Each context's per-network sum of marginals is then ranked against the whole networks an earlier
`benchmarks/latency_holdout.py` run measured with its own independent loop, beside the table's sum and the
hold-out's own noise floor (its even rounds ranked against its odd rounds). Only the ranking is compared, so the
machine's level at the hold-out's time does not matter.

    python benchmarks/in_context_ops.py --table t.csv --holdout results/latency_holdout-X.json [--holdout …]

Measured 2026-12-07 (quickstart configuration: mobile, 8×8, C 8, 5 cells; AMD EPYC 2-core VM; README #11.5):
neither context ranks better than the table's ops timed alone.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save

from hwnas.latency import darts_keys as dk
from hwnas.latency.backends import BackendConfig, make_backend
from hwnas.latency.stats import interleaved
from hwnas.latency.table import LatencyTable
from hwnas.spaces.genotype import load_genotype


class Parallel(nn.Module):
    def __init__(self, ops: list[nn.Module]):
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, x):
        y = self.ops[0](x)
        for op in self.ops[1:]:
            y = y + op(x)
        return y


class Chain(nn.Module):
    def __init__(self, ops: list[nn.Module]):
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, x):
        for op in self.ops:
            x = op(x)
        return x


def edge_keys(space) -> list:
    return sorted((k for k in dk.darts_keys(space) if k.op in dk.CHOICES), key=str)


def marginals(table: LatencyTable, context: str, copies: int) -> dict[str, dict]:
    """Per edge key: the op timed with one and with `copies` copies in the context, and the difference per copy."""
    space = table.space
    cfg = BackendConfig(table.meta["backend"], table.meta["threads"])
    backend = make_backend(cfg)
    keys = edge_keys(space)
    thunks = []
    for key in keys:
        wrap = Chain if context == "chain" and key.stride == 1 else Parallel
        for n in (1, copies):
            module = wrap([dk.darts_module(key, space)[0] for _ in range(n)]).eval()
            thunks.append(backend.prepare(module, [(key.batch, key.c_in, key.h, key.w)]))
    timed = interleaved(thunks, cfg.timing)
    out = {}
    for i, key in enumerate(keys):
        one, many = timed[2 * i].p50_ms, timed[2 * i + 1].p50_ms
        out[str(key)] = {"one_ms": one, "copies_ms": many, "marginal_ms": (many - one) / (copies - 1),
                         "table_ms": table.lookup(key)}
    return out


def edges_of(space, genotype) -> list:
    """The genotype's chosen ops (with repeats), without the keys every network has."""
    return [k for k in dk.genotype_keys(space, genotype) if k.op in dk.CHOICES]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True, help="a DARTS table of an ORT backend (mobile, ort-cpu)")
    ap.add_argument("--holdout", action="append", required=True,
                    help="a latency_holdout JSON of the same space (repeatable; only its measured latencies are used)")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--contexts", default="par,chain")
    ap.add_argument("--name", default="in_context_ops")
    args = ap.parse_args()
    env = header()
    table = LatencyTable.load(args.table)
    holdouts = {Path(h).stem: json.loads(Path(h).read_text()) for h in args.holdout}
    result = {"env": env, "args": vars(args), "table_meta": table.meta, "contexts": {}, "ranking": {}}
    for context in args.contexts.split(","):
        t0 = time.perf_counter()
        result["contexts"][context] = marginals(table, context, args.copies)
        print(f"# {context}: {len(result['contexts'][context])} edge keys timed in {time.perf_counter() - t0:.0f} s")
    for name, ho in holdouts.items():
        measured = np.array([n["measured_ms"] for n in ho["networks"]])
        genotypes = [load_genotype(n["genotype"]) for n in ho["networks"]]
        rho = {"table (ops alone)": stats.spearmanr([table.predict(g) for g in genotypes], measured).statistic}
        for context, marg in result["contexts"].items():
            sums = [sum(marg[str(k)]["marginal_ms"] for k in edges_of(table.space, g)) for g in genotypes]
            rho[f"in context: {context}"] = stats.spearmanr(sums, measured).statistic
        rho["noise floor (even vs odd rounds)"] = ho["noise_floor"]["spearman_even_odd"]
        result["ranking"][name] = {k: float(v) for k, v in rho.items()}
        print(f"{name}: " + ", ".join(f"{k} ρ {v:.3f}" for k, v in rho.items()))
    save(args.name, result)


if __name__ == "__main__":
    main()
