"""Why frozen-weight pruning stopped at 0.73× (issue #12.1): what the pruned networks are worth with the intact
network's BN statistics and with statistics re-estimated for each pruned network.

From a trained ResNet18 (`--weights`, e.g. one from `hwnas train --model resnet18`) on MNIST digits (`--dataset`),
inner channels in importance order as `hwnas prune` puts them, priced by a resnet18 table:

1. a greedy removal path: from the intact network, repeatedly take the one-step width cut (one block one choice
   narrower) with the least validation-loss increase per predicted millisecond saved, judged with the intact
   network's BN statistics (what the fit used to see), down to every branch removed;
2. the path's lower convex hull in (predicted ms, loss): the only gate sets min L + λ·T can pick for any λ;
3. every other gate set on the path again with its BN statistics re-estimated on training images
   (`hwnas.prune.adapt.pruned_network`, what `hwnas prune` now does).

    python benchmarks/prune_bn_adapt.py --weights W.pt [--dataset idx:DIR] [--table T.csv] [--eval 256]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save


def lower_hull(points: list[dict]) -> list[dict]:
    """Lower convex hull of (ms, loss) points, by increasing ms."""
    hull: list[dict] = []
    for p in sorted(points, key=lambda q: q["ms"]):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (b["loss"] - a["loss"]) * (p["ms"] - a["ms"]) >= (p["loss"] - a["loss"]) * (b["ms"] - a["ms"]):
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def main() -> None:
    import torch

    from hwnas.config import PruneConfig
    from hwnas.data import DeviceLoader
    from hwnas.evaluation import evaluate
    from hwnas.latency.table import LatencyTable
    from hwnas.prune.adapt import pruned_network
    from hwnas.prune.gate_cost import GateCost
    from hwnas.prune.prune import PruneData
    from hwnas.prune.start import pretrained_model
    from hwnas.spaces.gated_resnet import BLOCKS, BRANCH_CHOICES, GateSet
    from hwnas.train import resnet18_space

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--dataset", default="idx:../shared/data/mnist-t10k")
    ap.add_argument("--table", default="profiles/resnet18-ort-cpu-28x28.csv")
    ap.add_argument("--eval", type=int, default=256, help="validation images per evaluation")
    ap.add_argument("--name", default="prune_bn_adapt")
    args = ap.parse_args()
    env = header()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    cfg = PruneConfig(weights=args.weights, dataset=args.dataset, table=args.table, device="cpu")
    data = PruneData(cfg, cpu)
    model, _ = pretrained_model(cfg, data)
    cost = GateCost.from_table(LatencyTable.load(args.table), resnet18_space(args.dataset, None))
    ev = DeviceLoader(data.x_v[: args.eval], data.y_v[: args.eval], data.info, 256, shuffle=False, device=cpu)

    def judged(g: GateSet, bn: str) -> tuple[float, float]:
        return evaluate(pruned_network(model, g, data.calibration, bn), ev)

    t0 = time.perf_counter()
    cur, shortcuts = [len(BRANCH_CHOICES) - 1] * len(BLOCKS), [1, 1, 1]
    g = GateSet.from_indices(cur, shortcuts)
    loss, acc = judged(g, "frozen")
    path = [{"gates": g.describe(), "ms": cost.of(g), "loss": loss, "acc": acc}]
    while any(c > 0 for c in cur):
        best = None
        for b in range(len(BLOCKS)):
            if cur[b] == 0:
                continue
            nxt = list(cur)
            nxt[b] -= 1
            g2 = GateSet.from_indices(nxt, shortcuts)
            l2, a2 = judged(g2, "frozen")
            score = (l2 - loss) / max(cost.of(g) - cost.of(g2), 1e-6)
            if best is None or score < best[0]:
                best = (score, nxt, g2, l2, a2)
        _, cur, g, loss, acc = best
        path.append({"gates": g.describe(), "ms": cost.of(g), "loss": loss, "acc": acc})
        print(f"{path[-1]['ms']:6.3f} ms  {g.describe():<40} loss {loss:.3f}  acc {acc:.3f}", flush=True)
    hull = lower_hull(path)
    print("lower hull (ms, acc):", ", ".join(f"({h['ms']:.2f}, {h['acc']:.3f})" for h in hull))
    for p in path[::2]:
        fr = tuple(float(v) for v in p["gates"].split("|")[0].split())
        p["adapted_loss"], p["adapted_acc"] = judged(GateSet(fr, (True,) * 3), "adapt")
        print(f"{p['ms']:6.3f} ms ({p['ms'] / path[0]['ms']:.2f}×)  intact statistics {100 * p['acc']:5.1f} %  "
              f"re-estimated {100 * p['adapted_acc']:5.1f} %", flush=True)
    save(args.name, {"machine": env, "weights": args.weights, "dataset": args.dataset, "table": args.table,
                     "eval_samples": args.eval, "path": path, "hull": hull, "seconds": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
