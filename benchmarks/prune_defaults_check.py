"""Check a finished `hwnas prune` run as a user would, independently of the code under test (issue #12.1).

    python benchmarks/prune_defaults_check.py RUN --data /work/shared/data/mnist-t10k --name NAME
        [--command "the hwnas prune command"] [--wall-s SECONDS] [--load "a-b"]

1. The pretrained network (RUN/pretrained.pt) is loaded into torchvision's resnet18 (small stem, as the run
   builds it) and evaluated on the held-out test split, read here from the IDX files with numpy (split as
   hwnas documents it for a single IDX pair: sklearn's stratified 1/6 test split, random_state 0; normalised
   with the mean/std of the rest).
2. pareto.csv: distinct gate sets, each valid (no projection block with both branch and shortcut off),
   predicted latency non-increasing along λ.
3. Every λ of pareto.csv goes through `hwnas export RUN --lambda X --out ...` (a subprocess, as a user runs it);
   each exit status is recorded. Each distinct network's ONNX file is evaluated with ONNX Runtime on the test
   split (accuracy of the file a user deploys).
4. The distinct networks are timed with benchmarks/time_onnx.py's plain loop (1 intra-/inter-op thread, warm-up,
   interleaved rounds, medians; the intact network's file loaded twice: the noise floor), `--timings` times.

Results are saved after every stage to results/NAME.json.
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, save
from time_onnx import time_models


def read_idx_gz(path: Path) -> np.ndarray:
    if path.suffix == ".gz":
        with gzip.open(path) as f:
            data = f.read()
    else:
        data = path.read_bytes()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def test_split(data_dir: Path):
    from sklearn.model_selection import train_test_split

    x = read_idx_gz(next(data_dir.glob("*idx3*"))).astype(np.float32) / 255.0
    y = read_idx_gz(next(data_dir.glob("*idx1*"))).astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=1 / 6, stratify=y, random_state=0)
    mean, std = float(x[tr].mean()), float(x[tr].std())
    return ((x[te] - mean) / std)[:, None].astype(np.float32), y[te]


def torch_accuracy(state_path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import torch
    from torch import nn
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=int(y.max()) + 1)
    model.conv1 = nn.Conv2d(1, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 256):
            correct += int((model(torch.from_numpy(x[i:i + 256])).argmax(1).numpy() == y[i:i + 256]).sum())
    return correct / len(y)


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    correct = 0
    for i in range(0, len(x), 256):
        correct += int((s.run(None, {name: x[i:i + 256]})[0].argmax(1) == y[i:i + 256]).sum())
    return correct / len(y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--exports", type=Path, default=None, help="folder for the ONNX files (default RUN/check)")
    ap.add_argument("--command", default="")
    ap.add_argument("--wall-s", type=float, default=None)
    ap.add_argument("--load", default="", help="load average during the run, as observed")
    ap.add_argument("--timings", type=int, default=2)
    args = ap.parse_args()
    rec: dict = {"machine": header(), "run": str(args.run), "command": args.command, "wall_s": args.wall_s,
                 "load_during_run": args.load}
    run = args.run
    rec["config"] = json.loads((run / "config.json").read_text())
    rec["pretrained_json"] = json.loads((run / "pretrained.json").read_text())
    lam_rec = json.loads((run / "lambda_max.json").read_text())
    rec["lambda_max"] = {k: lam_rec.get(k) for k in ("lambda_max", "lambda_max_source", "theorem_lambda_max",
                                                      "lambda_cheapest_optimal", "lambda_margin", "agreement")}
    if "empirical" in lam_rec:
        rec["lambda_max"]["empirical"] = {k: v for k, v in lam_rec["empirical"].items()}
    metrics = run / "metrics.csv"
    rec["metrics_csv"] = metrics.read_text() if metrics.is_file() else None

    x, y = test_split(args.data)
    rec["test_samples"] = len(y)
    rec["pretrained_test_acc_independent"] = torch_accuracy(run / "pretrained.pt", x, y)
    print(f"pretrained (torchvision resnet18, own loader): test accuracy {rec['pretrained_test_acc_independent']:.4f}")

    import pandas as pd

    frame = pd.read_csv(run / "pareto.csv")
    lams = frame["lambda"].tolist()
    pred = frame["predicted_latency_ms"].tolist()
    proj = [c for c in frame.columns if c.startswith("shortcut[")]
    invalid = []
    for _, r in frame.iterrows():
        for c in proj:
            block = c[len("shortcut["):-1]
            if r[c] == 0 and r[f"frac[{block}]"] == 0:
                invalid.append({"lambda": r["lambda"], "block": block})
    distinct = list(dict.fromkeys(frame["gates"]))
    rec["pareto"] = frame.drop(columns=[c for c in frame.columns if c.startswith(("frac[", "shortcut["))]
                               ).to_dict(orient="records")
    rec["checks"] = {"distinct_gate_sets": len(distinct), "invalid": invalid,
                     "predicted_non_increasing": all(b <= a + 1e-9 for a, b in itertools.pairwise(pred)),
                     "pretrained_test_acc_ge_95": rec["pretrained_test_acc_independent"] >= 0.95}
    print(f"pareto.csv: {len(frame)} λ, {len(distinct)} distinct gate sets, invalid {invalid}, predicted "
          f"non-increasing {rec['checks']['predicted_non_increasing']}")
    save(args.name, rec)

    out = args.exports or (run / "check")
    out.mkdir(parents=True, exist_ok=True)
    exports, first_of = [], {}
    for i, (lam, gates) in enumerate(zip(lams, frame["gates"])):
        path = out / f"lam{i}.onnx"
        t0 = time.perf_counter()
        p = subprocess.run(["hwnas", "export", str(run), "--lambda", repr(float(lam)), "--out", str(path)],
                           capture_output=True, text=True, check=False)
        e = {"lambda": lam, "gates": gates, "rc": p.returncode, "seconds": time.perf_counter() - t0,
             "onnx": str(path), "tail": (p.stdout + p.stderr)[-600:]}
        if p.returncode == 0:
            rep = json.loads(Path(str(path) + ".json").read_text())
            e.update(top1_identical=rep.get("top1_identical"), max_abs_diff=rep.get("max_abs_diff"),
                     hwnas_speedup_measured=rep.get("speedup_measured"))
            first_of.setdefault(gates, path)
        exports.append(e)
        print(f"export λ={lam:.6g}: rc {p.returncode} ({e['seconds']:.0f} s)")
        rec["exports"] = exports
        save(args.name, rec)
    rec["checks"]["every_lambda_exports"] = all(e["rc"] == 0 for e in exports)

    accs = {}
    for gates, path in first_of.items():
        accs[gates] = onnx_accuracy(path, x, y)
        print(f"ONNX {path.name} ({gates}): test accuracy {accs[gates]:.4f}")
    rec["onnx_test_acc"] = accs
    save(args.name, rec)

    names = {f"net{i}": p for i, p in enumerate(first_of.values())}   # net0: the first λ (0) = the intact net
    timings = []
    for t in range(args.timings):
        before = os.getloadavg()
        res = time_models(dict(names, **{"net0#2": names["net0"]}))
        after = os.getloadavg()
        ref = res["net0"]["median_ms"]
        timings.append({"load_before": before, "load_after": after, "results": res,
                        "noise_floor": abs(res["net0#2"]["median_ms"] - ref) / ref,
                        "ratio_to_intact": {k: v["median_ms"] / ref for k, v in res.items()}})
        print(f"timing {t + 1}: load {before[0]:.2f}->{after[0]:.2f}, " + ", ".join(
            f"{k} {v['median_ms']:.3f} ms ({v['median_ms'] / ref:.3f}x)" for k, v in res.items()))
        rec["timing"] = {"nets": {k: list(first_of)[i] for i, k in enumerate(names)}, "runs": timings}
        save(args.name, rec)
    by_gates = dict(zip(frame["gates"], frame["predicted_latency_ms"]))
    cheapest = f"net{int(np.argmin([by_gates[g] for g in first_of]))}"
    ratios = [t["ratio_to_intact"][cheapest] for t in timings]
    rec["checks"]["cheapest_measured_ratio"] = ratios
    rec["checks"]["cheapest_le_half"] = all(r <= 0.5 for r in ratios)
    save(args.name, rec)
    print(json.dumps(rec["checks"], indent=1))


if __name__ == "__main__":
    main()
