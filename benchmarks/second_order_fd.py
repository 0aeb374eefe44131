"""How exact is the second-order architecture gradient at each finite-difference scale? (issue #16.6)

On the search's default supernet (digits 8×8, 8 channels, 5 cells, batch 64), after a short
warm-up of the weights (the same number of steps for both BN modes), with BN on batch statistics as
the search's α passes run (`--bn eval`: on running statistics), `second_order` at
fd_scale ∈ {1, 0.1, …, 1e-7} and with its default exact Hessian-vector product (fd_scale None, double
backprop), in float64 and in float32 (what a search runs), is compared with two references:

1. pointwise: the exact unrolled gradient d/dα L_val(w − ξ∇w L_train(w, α), α) by autograd through
   the unrolled step (float64; the Hessian-vector product by double backprop). Error of the Hessian
   term = ‖g_fd − g_exact‖ / ‖g_exact − g_first‖ (g_first: the first-order gradient), 1 meaning the
   finite difference is as wrong as leaving the term out.
2. finite α steps: F(α) = L_val(w − ξ∇w L_train(w, α), α) evaluated exactly (float64) at α ± h·r
   for random unit directions r; D_r(h) = (F(α + h r) − F(α − h r)) / 2h is what an α step of norm h
   actually changes. Error of a gradient g at h = RMS_r(g·r − D_r(h)) / RMS_r((g_exact − g_first)·r).

Why the two differ (measured here, float64, `kinks` in the output): a ReLU network is only
piecewise smooth. Between w⁺ and w⁻ = w ± ε·v, ReLU signs and max-pool argmaxes flip, about in
proportion to the step (thousands at fd_scale 0.01); each flip is a jump in ∇α L_train that the
finite difference divides by 2ε, while autograd's pointwise Hessian sees none of them. Only at a scale
where nothing flips (1e-6–1e-7 here) does the finite difference converge to the pointwise term — and in
float32 rounding dominates there.

    python benchmarks/second_order_fd.py [--warmup-steps 30] [--seeds 0 1 2] [--bn train|eval]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save  # noqa: E402

SCALES = (1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
STEPS = (1e-2, 1e-3, 1e-6)   # α step norms h of the finite-step reference


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


class KinkRecorder(TorchDispatchMode):
    """Records every ReLU's sign pattern and every max-pool's argmax in one forward pass."""

    def __init__(self):
        super().__init__()
        self.log: list[torch.Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func)
        if name.startswith("aten.relu"):
            self.log.append(args[0] > 0)
        elif name.startswith("aten.max_pool2d_with_indices.default"):
            self.log.append(out[1].clone())
        return out


def kink_flips(obj, xt, yt, weights: dict, d_w: list, eps: float) -> int:
    """How many ReLU signs and max-pool argmaxes differ between the passes at w + ε·d and w − ε·d."""
    logs = []
    for sign in (1.0, -1.0):
        with torch.no_grad(), KinkRecorder() as rec:
            obj.loss(xt, yt, params={n: w + sign * eps * d for (n, w), d in zip(weights.items(), d_w)})
        logs.append(rec.log)
    return int(sum((a != b).sum() for a, b in zip(*logs)))


def unrolled_loss(obj, batch, xi: float) -> float:
    """F(α) = L_val(w − ξ ∇w L_train(w, α), α), exactly (no finite difference)."""
    xt, yt, xv, yv = batch
    names, ws = zip(*obj.net.named_parameters())
    loss_t, _ = obj.loss(xt, yt)
    g = torch.autograd.grad(loss_t, ws)
    with torch.no_grad():
        loss_v, _ = obj.loss(xv, yv, params={n: w - xi * gi for n, w, gi in zip(names, ws, g)})
    return float(loss_v)


def finite_steps(obj, batch, xi: float, directions: int, seed: int) -> tuple[torch.Tensor, dict]:
    """Random unit directions r in α and D_r(h) = (F(α + h r) − F(α − h r)) / 2h for h in STEPS."""
    alphas = [obj.arch.normal, obj.arch.reduce]
    n = sum(a.numel() for a in alphas)
    r = torch.randn(directions, n, generator=torch.Generator().manual_seed(10_000 + seed), dtype=torch.float64)
    r /= r.norm(dim=1, keepdim=True)
    base = [a.detach().clone() for a in alphas]
    out = {}
    for h in STEPS:
        d = []
        for k in range(directions):
            f = []
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    offs = 0
                    for a, b in zip(alphas, base):
                        a.copy_(b + sign * h * r[k, offs: offs + a.numel()].view_as(a).to(a.dtype))
                        offs += a.numel()
                f.append(unrolled_loss(obj, batch, xi))
            d.append((f[0] - f[1]) / (2 * h))
        out[h] = torch.tensor(d, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(alphas, base):
            a.copy_(b)
    return r, out


def grads(obj, batch, xi: float, dtype, directions: int, seed: int) -> dict:
    from hwnas.search.arch_grad import second_order

    obj.net.to(dtype)
    obj.arch.to(dtype)
    xt, yt, xv, yv = batch
    xt, xv = xt.to(dtype), xv.to(dtype)
    batch = (xt, yt, xv, yv)
    alphas = [obj.arch.normal, obj.arch.reduce]
    flat = lambda ts: torch.cat([t.flatten() for t in ts]).double()  # noqa: E731
    names, ws = zip(*obj.net.named_parameters())
    loss_t, _ = obj.loss(xt, yt)
    g = torch.autograd.grad(loss_t, ws, create_graph=True)
    unrolled = {n: w - xi * gi for n, w, gi in zip(names, ws, g)}
    loss_v, _ = obj.loss(xv, yv, params=unrolled)
    exact = flat(torch.autograd.grad(loss_v, alphas))
    w1 = {n: (w - xi * gi).detach().requires_grad_() for n, w, gi in zip(names, ws, g)}
    loss_f, _ = obj.loss(xv, yv, params=w1)
    first_and_dw = torch.autograd.grad(loss_f, [*alphas, *w1.values()])
    first = flat(first_and_dw[:2])
    d_w = [t.detach() for t in first_and_dw[2:]]
    d_norm = float(torch.sqrt(sum((t.double() ** 2).sum() for t in d_w)))
    out = {"pointwise": {}, "kinks": {}, "finite_step": {}}
    fd = {}
    for s in (None, *SCALES):  # None: the exact Hessian-vector product by double backprop (the default)
        obj.arch.zero_grad()
        second_order(obj, xt, yt, xv, yv, xi=xi, fd_scale=s)
        fd[s] = flat([a.grad for a in alphas])
        out["pointwise"][str(s)] = float((fd[s] - exact).norm() / (exact - first).norm())
        if dtype == torch.float64 and s is not None:
            out["kinks"][str(s)] = kink_flips(obj, xt, yt, {n: w.detach() for n, w in zip(names, ws)}, d_w,
                                              s / d_norm)
    if dtype == torch.float64 and directions:
        r, steps = finite_steps(obj, batch, xi, directions, seed)
        scale = float(((r @ (exact - first)) ** 2).mean().sqrt())
        for h, d in steps.items():
            err = lambda g, d=d: float(((r @ g - d) ** 2).mean().sqrt()) / scale  # noqa: E731
            out["finite_step"][str(h)] = {"first": err(first), "exact": err(exact),
                                          **{str(s): err(fd[s]) for s in (None, *SCALES)}}
    return out


def time_steps(seed: int, warmup_steps: int, rounds: int) -> dict:
    """Milliseconds per α step (float32, channels-last as a search runs): first order, the exact Hessian-vector
    product (the default) and the finite difference at 0.01, interleaved round by round; medians."""
    import time

    from hwnas.search.arch_grad import first_order, second_order

    obj, (xt, yt, xv, yv) = setup(seed, warmup_steps, torch.float32, "train")
    obj.net.to(memory_format=torch.channels_last)
    xt, xv = (x.contiguous(memory_format=torch.channels_last) for x in (xt, xv))
    fns = {"first": lambda: first_order(obj, xv, yv),
           "second exact": lambda: second_order(obj, xt, yt, xv, yv, xi=0.025),
           "second fd 0.01": lambda: second_order(obj, xt, yt, xv, yv, xi=0.025, fd_scale=0.01)}
    times = {k: [] for k in fns}
    for r in range(rounds + 1):
        for k, fn in fns.items():
            obj.arch.zero_grad()
            t0 = time.perf_counter()
            fn()
            if r:  # the first round warms up
                times[k].append(1000 * (time.perf_counter() - t0))
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--bn", default="train", choices=("train", "eval"),
                    help="BN mode of the passes: train (batch statistics, as a search runs them) or eval")
    ap.add_argument("--xi", type=float, default=0.025, help="the unrolled step (the search's weight learning rate)")
    ap.add_argument("--directions", type=int, default=8, help="random α directions of the finite-step reference")
    ap.add_argument("--time", type=int, default=0, metavar="ROUNDS",
                    help="only time the α step (exact vs finite difference), ROUNDS interleaved rounds")
    args = ap.parse_args()
    env = header()
    if args.time:
        ms = time_steps(args.seeds[0], 2, args.time)
        print("ms per α step (median): " + ", ".join(f"{k} {v:.0f}" for k, v in ms.items()))
        save("second_order_fd-time", {"env": env, "args": vars(args), "ms_per_alpha_step": ms})
        return
    runs = {"float64": [], "float32": []}
    for seed in args.seeds:
        for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
            obj, batch = setup(seed, args.warmup_steps, dtype, args.bn)
            runs[name].append(grads(obj, batch, args.xi, dtype, args.directions, seed))
            r = runs[name][-1]
            print(f"seed {seed} {name} pointwise: " + ", ".join(f"{s}: {e:.3g}" for s, e in r["pointwise"].items()),
                  flush=True)
            if r["kinks"]:
                print(f"seed {seed} kinks flipped between w+ and w-: " + ", ".join(f"{s}: {k}" for s, k in r["kinks"].items()))
            for h, errs in r["finite_step"].items():
                print(f"seed {seed} finite α step h={h}: " + ", ".join(f"{k}: {e:.3g}" for k, e in errs.items()))
    med = lambda xs: float(np.median(xs))  # noqa: E731
    summary = {"pointwise": {name: {str(s): med([r["pointwise"][str(s)] for r in rows]) for s in (None, *SCALES)}
                             for name, rows in runs.items()},
               "kinks": {str(s): med([r["kinks"][str(s)] for r in runs["float64"]]) for s in SCALES}}
    if args.directions:
        summary["finite_step"] = {str(h): {k: med([r["finite_step"][str(h)][k] for r in runs["float64"]])
                                           for k in runs["float64"][0]["finite_step"][str(h)]} for h in STEPS}
    print(f"\nmedians over seeds {args.seeds} (BN {args.bn}, {args.warmup_steps} warm-up steps):")
    print(f"{'fd_scale':>9} {'pw f64':>9} {'pw f32':>9} {'kinks':>8}"
          + "".join(f" {'step ' + str(h):>11}" for h in (STEPS if args.directions else ())))
    for s in (None, *SCALES):
        k = str(s)
        print(f"{'exact' if s is None else f'{s:g}':>9} {summary['pointwise']['float64'][k]:9.3g} "
              f"{summary['pointwise']['float32'][k]:9.3g} {summary['kinks'].get(k, 0):8.0f}"
              + "".join(f" {summary['finite_step'][str(h)][k]:11.3g}" for h in (STEPS if args.directions else ())))
    if args.directions:
        for k in ("first", "exact"):
            print(f"{k + ' ref':>9} {'':>9} {'':>9} {'':>8}" + "".join(f" {summary['finite_step'][str(h)][k]:11.3g}" for h in STEPS))
    save(f"second_order_fd-bn-{args.bn}", {"env": env, "args": vars(args), "median": summary, "runs": runs})


if __name__ == "__main__":
    main()
