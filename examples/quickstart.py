"""hwnas from Python, end to end on the embedded `digits` dataset (8×8 handwritten digits, offline):
a latency table for this CPU, one λ-hypernet search over every latency budget, the architectures along λ,
the network at one budget as a `torch.nn.Module`, its ONNX export and a measurement.

    python examples/quickstart.py [OUT]      # OUT: a new folder (default runs/example); about 1.5 minutes on 2 cores

The same steps as `hwnas profile`, `hwnas search`, `hwnas pareto` and `hwnas export`, which read and write the
same files: `hwnas pareto OUT/search` or `hwnas export OUT/search --lambda X --out m.onnx` work on this run.
"""
import sys
from pathlib import Path

import hwnas


def main(out: Path) -> None:
    # 1. Time every op the search space can place, on this CPU (PyTorch, 1 thread, batch 1; a short budget per op).
    #    Its predictions are the plain per-op sums; hwnas.calibrate(table) times whole networks and fits a correction
    #    (as `hwnas quickstart` does; here it would add about 40 s).
    table = hwnas.profile("cpu", "darts", out=out / "cpu-8x8.csv", threads=1, batch=1, input_size="8x8",
                          channels=8, layers=5, budget=0.02)
    print(f"1. {len(table)} ops timed on {table.meta['device']}")

    # 2. One search for every trade-off λ ∈ [0, Λ]: minimise L_val + λ·Tᵀγ with T from the table, α(λ) from an mlp
    #    λ-hypernet (a short run: 1 warm-up epoch and 1 search epoch; Λ from 64 sampled networks, the default).
    run = hwnas.search(out=out / "search", dataset="digits", table=table.path, hypernet="mlp", epochs=1,
                       lambda_warmup_epochs=1, device="cpu")
    print(f"2. searched: Λ = {run.lambda_max[0]:.4g}; genotype at λ = 0: {run.genotype()}")

    # 3. The architectures along λ from the trained hypernet, without another search (a pandas DataFrame;
    #    also run/pareto.csv and run/plots/pareto_*.png).
    front = run.pareto(lambdas=4, front_steps=10)
    ms = next(c for c in front.columns if c.startswith("predicted_latency_ms["))
    print("3. along λ:\n" + front[["lambda", "val_acc", "params", ms]].to_string(index=False))
    print(f"   {front['genotype'].nunique()} distinct architectures; {front[ms].iloc[-1] / front[ms].iloc[0]:.2f}× "
          "the λ = 0 network's predicted latency at λ = Λ")

    # 4. The discrete network at one budget: a torch.nn.Module (freshly initialised: train it with hwnas.train),
    #    and the latency the table predicts for it.
    lam = float(front["lambda"].iloc[2])
    net = run.network(lam)
    print(f"4. λ = {lam:.4g}: {sum(p.numel() for p in net.parameters()):,} parameters, "
          f"{table.predict(net):.3f} ms predicted")

    # 5. ONNX export, checked against PyTorch under ONNX Runtime and re-measured as the table's device times
    #    its ops (report in model.onnx.json); then the ONNX file timed on ONNX Runtime.
    report = hwnas.export(run, out / "model.onnx", lam=lam)
    timed = hwnas.measure(report.onnx, device="ort-cpu", threads=1)
    print(f"5. {report.onnx}: max |ORT − PyTorch| {report.max_abs_diff:.1e}; {report.measured['p50_ms']:.3f} ms "
          f"measured as the table's ops were ({report.measured['backend']}), {timed['p50_ms']:.3f} ms on ort-cpu")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/example"))
