"""Architectures along λ from a trained λ-hypernet, without retraining (`hwnas pareto`).

For each λ of [0, Λ] (one cost target) or of a grid over the simplex Σ_d λ_d/Λ_d ≤ 1 that the
search sampled from (D targets), the hypernet gives α(λ), from which the genotype is derived the
DARTS way.

Which λ: with one target they are chosen by cost (`spacing="cost"`, the default). The genotypes
along a fine grid of λ are priced with the search's own cost model, and the λ are picked whose
networks' costs are evenly spaced between the λ = 0 and the λ = Λ network's. An even grid in λ
(`spacing="lambda"`) wastes points: α(λ) does most of its moving early (MNIST, mlp hypernet: 13
of the 18 distinct networks a fine grid finds lie below λ = Λ/4, and latency falls from 0.302 to
0.114 ms there, to 0.103 ms at Λ), so most of an even grid lands on near-cheapest networks.
Where the run's table prices ONNX Runtime's kernel count (a `linear+kernels` calibration), the fine grid's
networks are priced by that table's prediction instead — the search's Tᵀγ is linear and cannot see how many
kernels fusion leaves — and only those on a chain of λ whose price never rises are eligible: a network priced
above one found at a smaller λ is dominated on the λ-axis and left out (the count is `frame.attrs
["skipped_networks"]`; the quickstart's 8 × 16 run had one, 0.042 ms after a 0.041 ms network).

Each genotype is reported with its predicted latency on every table of the run, its parameters
and FLOPs as a discrete network at the search's size, and its validation accuracy with the
weights it inherits from the supernet, after the same fine-tune on the front's networks and BN
recalibration for every λ (`hwnas.search.inherit`). Beside it: the accuracy of the relaxed architecture α(λ)
itself (what the search optimised), and the network the relaxed weights point at when `none`
may win an edge (`argmax_none_edges`, `argmax_valid`), which shows where λ has broken a cell
even though the DARTS derivation never picks `none`.
"""
from __future__ import annotations

import copy
from pathlib import Path

import itertools

import numpy as np
import pandas as pd
import torch

from hwnas.errors import HwnasError
from hwnas.runs import RunDir
from hwnas.search.inherit import InheritConfig, front_finetune, inherited_accuracy
from hwnas.search.lambda_max import NONE, argmax_ops, is_valid
from hwnas.search.loop import Search, SearchConfig
from hwnas.spaces.genotype import Genotype, edge_ops
from hwnas.spaces.network import DiscreteNetwork, NetworkConfig, count_flops, count_parameters


def load_search(run_dir: str | Path) -> Search:
    """The search of a run directory, rebuilt from config.json and its latest checkpoint."""
    run = RunDir(run_dir)
    if not run.file("config.json").is_file():
        raise HwnasError(f"{run_dir} is not a search run (no config.json)")
    search = Search(SearchConfig.from_dict(run.read_json("config.json")))
    state = run.load_checkpoint(map_location=search.device)
    if state is None:
        raise HwnasError(f"{run_dir} has no checkpoint.pt yet; run or resume the search first")
    search.load_state_dict(state)
    return search


def network_size(search: Search, genotype: Genotype) -> tuple[int, float]:
    """(parameters, FLOPs of one sample) of the discrete network at the search's size."""
    info = search.info
    net = DiscreteNetwork(genotype, NetworkConfig(channels=search.cfg.channels, layers=search.cfg.layers,
                                                  num_classes=info.num_classes, in_channels=info.channels))
    return count_parameters(net), count_flops(net, (info.channels, info.height, info.width))


def lambda_grid(n: int, n_targets: int) -> list[tuple[float, ...]]:
    """Fractions λ_d/Λ_d: n evenly spaced points of [0, 1] for one target; for D targets every point
    of the grid with steps 1/(n − 1) inside the simplex Σ_d λ_d/Λ_d ≤ 1 (the region the search sampled)."""
    ticks = np.linspace(0.0, 1.0, n)
    if n_targets == 1:
        return [(float(t),) for t in ticks]
    pts = [tuple(float(ticks[i]) for i in idx) for idx in itertools.product(range(n), repeat=n_targets)
           if sum(idx) <= n - 1]
    return sorted(pts, key=lambda p: (sum(p), p))


SPACINGS = ("cost", "lambda")


def genotype_cost(search: Search, g: Genotype, target: int = 0) -> float:
    """The search's own cost (table sum, params or FLOPs, as it was optimised) of a discrete genotype."""
    return float(search.cost.of_genotype(g)[target])


def pricer(search: Search, tables: list | None = None):
    """How `cost_spaced_fractions` prices a genotype: the search's own cost, except where the search's first table
    prices what that linear cost cannot see — the kernels ONNX Runtime's fusion leaves (a calibration that chose
    `linear+kernels`) — where it is that table's prediction, the figure pareto reports. `tables`: the run's tables
    already loaded (pareto's own, so that each network's kernels are counted once); loaded here otherwise."""
    from hwnas.latency.table import LatencyTable

    control = search.cfg.control
    if control.cost == "latency" and control.tables:
        table = tables[0] if tables else LatencyTable.load(control.tables[0])
        if (table.correction or {}).get("per_kernel"):
            return table.predict
    return lambda g: genotype_cost(search, g)


def monotone_chain(costs: np.ndarray, rtol: float = 1e-9) -> list[int]:
    """Indices of the λ grid from the first to the last whose costs never rise along λ and that pass through the
    most distinct costs (a longest non-increasing subsequence that holds both ends; O(n²) on n ≤ a few hundred).
    Points off it are networks the pricing puts above one found at a smaller λ: dominated on the λ-axis."""
    n, eps = len(costs), rtol * max(float(np.abs(costs).max()), 1.0)
    inside = (costs <= costs[0] + eps) & (costs >= costs[-1] - eps)
    best, prev = np.full(n, -1), np.full(n, -1)
    best[0] = 1
    for i in range(1, n):
        if not inside[i]:
            continue
        for j in range(i):
            if best[j] > 0 and costs[j] >= costs[i] - eps:
                gain = best[j] + (1 if costs[j] > costs[i] + eps else 0)
                if gain > best[i]:
                    best[i], prev[i] = gain, j
    if best[-1] < 0:   # the λ = Λ network is priced above the λ = 0 one: no chain holds both, keep every point
        return list(range(n))
    chain, i = [], n - 1
    while i >= 0:
        chain.append(i)
        i = prev[i]
    return chain[::-1]


@torch.no_grad()
def cost_spaced_fractions(search: Search, n: int, grid: int = 257, price=None) -> tuple[list[float], int]:
    """n fractions λ/Λ (one target), 0 and 1 included, whose genotypes' costs are as evenly spaced as the
    hypernet allows between the cost at λ = 0 and at λ = Λ, priced by `price` (default `pricer(search)`).
    Along a fine grid of λ, only the networks on a chain whose price never rises with λ are eligible
    (`monotone_chain`); for each of the n − 2 inner targets, the first eligible λ whose network costs no more than
    the target. Where several targets land on one network (a jump in α(λ)), the freed points go, in turn, to the
    eligible λ nearest the midpoint of the widest remaining gap. Returns the fractions and how many distinct
    networks of the grid were left off the chain."""
    price = price or pricer(search)
    lmax = search.lam.lambda_max
    fracs = np.linspace(0.0, 1.0, grid)
    genotypes = [search.genotype(lmax * float(f)) for f in fracs]
    search._set_eval_lambda(None)
    networks = [str(edge_ops(g)) for g in genotypes]   # one network per distinct op-per-edge assignment
    priced: dict[str, float] = {}
    for net, g in zip(networks, genotypes):
        if net not in priced:
            priced[net] = float(price(g))
    costs = np.array([priced[net] for net in networks])
    eligible = monotone_chain(costs)
    skipped = len(priced) - len({networks[i] for i in eligible})
    chosen = {0, grid - 1}
    for target in np.linspace(costs[0], costs[-1], n)[1:-1]:
        below = [i for i in eligible if costs[i] <= target + 1e-12 * max(abs(costs[0]), 1.0)]
        chosen.add(below[0] if below else grid - 1)
    while len(chosen) < n:  # fill the widest gaps, with eligible grid points while any is left
        out = sorted(chosen)
        k = int(np.argmax(np.diff(out)))
        free = [i for i in eligible if i not in chosen]
        if not free:
            break
        mid = 0.5 * (out[k] + out[k + 1])
        chosen.add(min(free, key=lambda i: abs(i - mid)))
    out = sorted(float(fracs[i]) for i in chosen)
    while len(out) < n:  # a grid with fewer eligible points than n: midpoints (as before the chain)
        k = int(np.argmax(np.diff(out)))
        out.insert(k + 1, 0.5 * (out[k] + out[k + 1]))
    return out, skipped


def pareto_table(search: Search, n_lambdas: int = 11, inherit: InheritConfig = InheritConfig(),
                 spacing: str = "cost") -> pd.DataFrame:
    """One row per λ: the genotype and its predicted latencies, size and validation accuracy. `spacing`:
    "cost" picks λ whose networks' costs are evenly spread (one target; see the module docstring), "lambda"
    an even grid in λ (always with several targets)."""
    if not search.cfg.control.needs_lambda_max or search.lam.lambda_max is None:
        raise HwnasError("pareto needs a λ-hypernet search (hwnas search --hypernet linear|mlp with a cost)")
    if n_lambdas < 2:
        raise HwnasError("--lambdas must be at least 2")
    if spacing not in SPACINGS:
        raise HwnasError(f"--spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    from hwnas.latency.table import LatencyTable

    tables = [LatencyTable.load(t) for t in search.cfg.control.tables]
    lmax = search.lam.lambda_max
    names = search.cost.names
    rows = []
    skipped = 0
    if spacing == "cost" and search.lam.n_targets == 1:
        fractions, skipped = cost_spaced_fractions(search, n_lambdas, price=pricer(search, tables))
        grid = [(f,) for f in fractions]
    else:
        grid = lambda_grid(n_lambdas, search.lam.n_targets)
    shared = None
    if inherit.front_steps > 0 and search.hyper is None:  # HyperDARTS' weights are w_φ(α(λ)), one set per λ
        with torch.no_grad():
            front = {str(edge_ops(g)): g for g in (search.genotype(lmax * torch.tensor(f)) for f in grid)}
        shared = front_finetune(search, list(front.values()), inherit.front_steps * len(front), inherit.seed)
    # λs that derive the same network get the same figures (the evaluation is seeded; not so for HyperDARTS, whose
    # weights depend on λ); one scratch copy of the supernet takes each network's weights in turn
    evaluated: dict[str, tuple[float, float]] = {}
    scratch = copy.deepcopy(search.net if shared is None else shared) if search.hyper is None else None
    for frac in grid:
        lam = lmax * torch.tensor(frac, dtype=lmax.dtype)
        with torch.no_grad():
            g = search.genotype(lam)
            ra = search.obj.expected()
            expected = search.cost.expected(ra.w_normal, ra.w_reduce).tolist()
        key = str(g) if search.hyper is None else f"{g} at {frac}"  # HyperDARTS: its weights depend on λ
        if key not in evaluated:
            evaluated[key] = inherited_accuracy(search, g, inherit, net=shared, scratch=scratch)
        loss, acc = evaluated[key]
        params, flops = network_size(search, g)
        ops_n, ops_r = argmax_ops(ra.w_normal), argmax_ops(ra.w_reduce)
        with torch.no_grad():
            params_w = search.eval_params()  # HyperDARTS: w_φ(α(λ)); otherwise the supernet's own weights
            _, relaxed_acc = search.relaxed_accuracy(ra, params_w)
        row = {"lambda": float(lam[0]), "lambda_fraction": float(sum(frac)), "val_loss": loss, "val_acc": acc,
               "relaxed_val_acc": relaxed_acc, "params": params, "flops": flops,
               "argmax_none_edges": ops_n.count(NONE) + ops_r.count(NONE),
               "argmax_valid": is_valid(ops_n, ops_r, search.net.cfg.steps, search.net.cfg.multiplier),
               "finetune_steps": inherit.steps, "front_steps": inherit.front_steps if shared is not None else 0}
        if len(names) > 1:
            row.update({f"lambda[{n}]": float(v) for n, v in zip(names, lam)})
        for name, unit, v in zip(names, search.cost.units, expected):
            row[f"expected_cost[{name}, {unit}]"] = v
        for table in tables:
            row[f"predicted_latency_ms[{Path(table.path).stem}]"] = table.predict(g)
        row["genotype"] = str(g)
        rows.append(row)
    search._set_eval_lambda(None)
    frame = pd.DataFrame(rows)
    cost_col = _cost_column(frame)
    frame["pareto_optimal"] = pareto_mask(frame[cost_col].to_numpy(), frame["val_acc"].to_numpy())
    frame.attrs["skipped_networks"] = skipped   # networks along λ priced above one at a smaller λ (not in the frame)
    return frame


def distinct_architectures(genotypes) -> int:
    """How many different networks the genotype strings describe: two genotypes that list the same op on
    the same edges in another order (the DARTS derivation lists a node's stronger edge first) are one network."""
    return len({tuple(map(tuple, edge_ops(Genotype.parse(str(g))))) for g in genotypes})


def _cost_column(frame: pd.DataFrame) -> str:
    latency = [c for c in frame.columns if c.startswith("predicted_latency_ms[")]
    return latency[0] if latency else ("flops" if "flops" in frame else "params")


def pareto_mask(cost: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Points not dominated by another (no cheaper-or-equal point with higher-or-equal accuracy, one strictly)."""
    n = len(cost)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated = (cost <= cost[i]) & (acc >= acc[i]) & ((cost < cost[i]) | (acc > acc[i]))
        keep[i] = not dominated.any()
    return keep


def hypervolume(cost: np.ndarray, acc: np.ndarray, ref_cost: float, ref_acc: float) -> float:
    """Area of the (cost, accuracy) region dominated by the points and bounded by the reference
    point (cost ≤ ref_cost, accuracy ≥ ref_acc): larger is a better front. Points outside the
    reference box add nothing."""
    inside = (cost < ref_cost) & (acc > ref_acc)
    c, a = cost[inside], acc[inside]
    order = np.argsort(c, kind="stable")
    area, best = 0.0, ref_acc
    edges = np.append(c[order], ref_cost)
    for k, i in enumerate(order):  # sweep in cost: the best accuracy so far covers [c_k, c_{k+1})
        best = max(best, a[i])
        area += (edges[k + 1] - edges[k]) * (best - ref_acc)
    return float(area)


def write_pareto(run_dir: str | Path, n_lambdas: int = 11, inherit: InheritConfig = InheritConfig(),
                 spacing: str = "cost") -> pd.DataFrame:
    """pareto.csv and plots/pareto_*.png in the run directory."""
    return save_pareto(run_dir, pareto_table(load_search(run_dir), n_lambdas, inherit, spacing))


def save_pareto(run_dir: str | Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Write `frame` as the run's pareto.csv and plots/pareto_*.png; returns it."""
    run = RunDir(run_dir)
    run.write_text("pareto.csv", frame.to_csv(index=False))
    from hwnas.plots import plot_pareto

    plot_pareto(frame, _cost_column(frame), run.file("plots"))
    return frame
