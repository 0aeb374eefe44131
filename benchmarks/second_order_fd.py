"""How exact is the second-order architecture gradient at each finite-difference scale? (issue #16.6)

On the search's default supernet (digits 8×8, 8 channels, 5 cells, batch 64), after a short
warm-up of the weights, with BN on batch statistics as the search's α passes run (`--bn eval`: on
running statistics), the exact unrolled gradient d/dα L_val(w − ξ∇w L_train(w, α), α) is taken
by autograd through the unrolled step (float64, exact Hessian-vector product), and compared with
`second_order` at fd_scale ∈ {1, 0.1, …, 1e-7}, in float64 and in float32 (what a search runs).

Error of the Hessian term = ‖g_fd − g_exact‖ / ‖g_exact − g_first‖, where g_first is the
first-order gradient: 1 means the finite difference is as wrong as leaving the term out.

    python benchmarks/second_order_fd.py [--warmup-steps 30] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save  # noqa: E402

SCALES = (1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)


def setup(seed: int, warmup_steps: int, dtype, bn: str = "train"):
    from hwnas.data import load_dataset, search_split
    from hwnas.search.objective import ArchParams, SearchObjective
    from hwnas.search.relax import RelaxConfig
    from hwnas.spaces.supernet import Supernet, SupernetConfig

    splits = load_dataset("digits")
    (xw, yw), (xa, ya) = search_split(splits.x_train, splits.y_train, seed)
    norm = lambda x: ((x.float() / 255.0) - 0.5) / 0.5  # noqa: E731  (a fixed normalisation is enough here)
    torch.manual_seed(seed)
    cfg = SupernetConfig(channels=8, layers=5, in_channels=1)
    net = Supernet(cfg)
    arch = ArchParams(cfg.n_edges, cfg.n_ops)
    with torch.no_grad():
        arch.normal.normal_(0, 0.3)
        arch.reduce.normal_(0, 0.3)
    obj = SearchObjective(net, arch, RelaxConfig())
    opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    for _ in range(warmup_steps):  # weights away from their initialisation, as mid-search
        i = torch.randint(0, len(xw), (64,), generator=g)
        loss, _ = obj.loss(norm(xw[i]), yw[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    i, j = torch.randint(0, len(xw), (64,), generator=g), torch.randint(0, len(xa), (64,), generator=g)
    batch = (norm(xw[i]), yw[i], norm(xa[j]), ya[j])
    # "train": batch statistics, as the search's α passes run (the loss is still a deterministic function
    # of (w, α) for a fixed batch); "eval": the running statistics
    net.train(bn == "train")
    return obj, batch


def grads(obj, batch, xi: float, dtype) -> dict:
    from hwnas.search.arch_grad import second_order

    obj.net.to(dtype)
    obj.arch.to(dtype)
    xt, yt, xv, yv = batch
    xt, xv = xt.to(dtype), xv.to(dtype)
    alphas = [obj.arch.normal, obj.arch.reduce]
    flat = lambda ts: torch.cat([t.flatten() for t in ts]).double()  # noqa: E731
    names, ws = zip(*obj.net.named_parameters())
    loss_t, _ = obj.loss(xt, yt)
    g = torch.autograd.grad(loss_t, ws, create_graph=True)
    unrolled = {n: w - xi * gi for n, w, gi in zip(names, ws, g)}
    loss_v, _ = obj.loss(xv, yv, params=unrolled)
    exact = flat(torch.autograd.grad(loss_v, alphas))
    loss_f, _ = obj.loss(xv, yv, params={n: (w - xi * gi).detach() for n, w, gi in zip(names, ws, g)})
    first = flat(torch.autograd.grad(loss_f, alphas))
    out = {}
    for s in SCALES:
        obj.arch.zero_grad()
        second_order(obj, xt, yt, xv, yv, xi=xi, fd_scale=s)
        approx = flat([a.grad for a in alphas])
        out[s] = float((approx - exact).norm() / (exact - first).norm())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--bn", default="train", choices=("train", "eval"),
                    help="BN mode of the passes: train (batch statistics, as a search runs them) or eval")
    ap.add_argument("--xi", type=float, default=0.025, help="the unrolled step (the search's weight learning rate)")
    args = ap.parse_args()
    env = header()
    table = {"float64": [], "float32": []}
    for seed in args.seeds:
        for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
            obj, batch = setup(seed, args.warmup_steps, dtype, args.bn)
            table[name].append(grads(obj, batch, args.xi, dtype))
            print(f"seed {seed} {name}: " + ", ".join(f"{s:g}: {e:.3g}" for s, e in table[name][-1].items()),
                  flush=True)
    summary = {name: {str(s): float(np.median([r[s] for r in rows])) for s in SCALES} for name, rows in table.items()}
    print("\nmedian relative error of the Hessian term (1 = as wrong as first order):")
    print(f"{'fd_scale':>9} {'float64':>9} {'float32':>9}")
    for s in SCALES:
        print(f"{s:9g} {summary['float64'][str(s)]:9.3g} {summary['float32'][str(s)]:9.3g}")
    save(f"second_order_fd-bn-{args.bn}", {"env": env, "args": vars(args), "median": summary, "runs": table})


if __name__ == "__main__":
    main()
