"""Does Torch-Pruning's matched network time differently beside 2 networks than beside 8? (issue #12.4)

`prune_vs_torch_pruning.py` matches Torch-Pruning's network to each hwnas gate set by a bisection that times
the two networks against the unpruned one (20 runs per round, 7 rounds), then times all networks together in one
final rotation; in earlier runs the matched Torch-Pruning network came out up to 10 % faster in the final timing.
One hypothesis: with 9 networks rotating in 20-run blocks each block starts with its weights out of cache, which
costs a network with more weight bytes more. This replays both contexts on the same networks, with untrained
weights (timing does not depend on their values): hwnas gate sets materialised from torchvision's resnet18 at
28×28×1 (the prune benchmark's sets), Torch-Pruning matched to two of them with the benchmark's own bisection,
then the ratio Torch-Pruning / hwnas in (a) the 3-network rotation, (b) all 9 networks in 20-run blocks and
(c) all 9 in 200-run blocks, each repeated.

    python benchmarks/tp_timing_context.py [--repeats 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save
from prune_resnet18 import interleaved_latency
from prune_vs_torch_pruning import SHAPE, relative_latency, tp_matching

SETS = {"A": "1 1 1 1 1 0.5 1 1", "B": "1 0 1 1 1 0.5 0.5 1", "C": "0.5 0 1 0 1 0.5 0.5 1",
        "D": "0.5 0 0.5 0 1 0.5 0.5 0.25", "E": "0.5 0 0.5 0 1 0.5 0.5 0.5", "F": "0.5 0 0.5 1 1 0.75 0.5 0.5"}
MATCHED = ("E", "F")   # the two sets where Torch-Pruning's match came out faster in an earlier final timing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--name", default="tp_timing_context")
    args = ap.parse_args()
    env = header()
    from hwnas.export import export_onnx_dynamic
    from hwnas.latency.resnet_keys import torchvision_resnet18
    from hwnas.latency.space import SpaceConfig
    from hwnas.spaces.gated_resnet import GateSet, materialise

    torch.manual_seed(0)
    model = torchvision_resnet18(SpaceConfig(space="resnet18", input_h=28, input_w=28, in_channels=1, batch=1)).eval()
    nets = {"ref": model, **{k: materialise(model, GateSet(tuple(float(x) for x in v.split()))) for k, v in SETS.items()}}
    tmp = Path(tempfile.mkdtemp())
    ref = tmp / "reference.onnx"
    export_onnx_dynamic(model, SHAPE, ref)
    match = {}
    for k in MATCHED:
        target = relative_latency(nets[k], ref, tmp, k, 7, 20)
        net, ratio, rel = tp_matching(model, target, ref, tmp, 7, 20, 7)
        nets["tp" + k] = net
        match[k] = {"hwnas_relative": target, "tp_ratio": ratio, "tp_relative": rel}
        print(f"# {k}: hwnas {target:.3f} × unpruned; Torch-Pruning ratio {ratio:.3f} → {rel:.3f} ×", flush=True)
    paths = {}
    for k, n in nets.items():
        paths[k] = tmp / f"final_{k}.onnx"
        export_onnx_dynamic(n.eval(), SHAPE, paths[k])
    params = {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()}
    ratios: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for k in MATCHED:
            t = interleaved_latency({k: paths[k], "tp" + k: paths["tp" + k], "ref": paths["ref"]}, SHAPE, 1, 9, 20)
            ratios.setdefault(f"{k}: 3 networks, 20-run blocks", []).append(t["tp" + k]["p50_ms"] / t[k]["p50_ms"])
        for runs, rounds in ((20, 9), (200, 5)):
            t = interleaved_latency(paths, SHAPE, 1, rounds, runs)
            for k in MATCHED:
                ratios.setdefault(f"{k}: 9 networks, {runs}-run blocks", []).append(
                    t["tp" + k]["p50_ms"] / t[k]["p50_ms"])
            print(f"# 9 networks, {runs}-run blocks: " + "  ".join(f"{k} {v['p50_ms']:.3f}" for k, v in t.items()),
                  flush=True)
    for k, v in ratios.items():
        print(f"{k}: Torch-Pruning / hwnas {', '.join(f'{x:.3f}' for x in v)}")
    save(args.name, {"machine": env, "gate_sets": SETS, "match": match, "params": params,
                     "tp_over_hwnas": ratios})


if __name__ == "__main__":
    main()
