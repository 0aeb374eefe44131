"""Exporting a discrete network to ONNX, checking it, and re-measuring it (`hwnas export`).

The exporter is `torch.onnx.export(dynamo=True)` at opset 18 (the supported exporter; see
`hwnas.latency.onnx_io`), with a dynamic batch dimension — or the first table's own exporter, when that table was
profiled with the TorchScript one (`hwnas profile --exporter torchscript`): what the table's ops and its
calibration's networks were exported with is what the network is exported and re-measured with (one definition
per device, issue #11.3). The example input has batch 2,
not 1, so that the exporter cannot specialise the graph to batch 1; the check then runs
batch 1 and a larger batch through ONNX Runtime and compares both with PyTorch.

The report (`<out>.json`, the design notes' export report) holds params, FLOPs, the
latency predicted by each given table, the measured latency (`measured`: timed exactly as the
first table's device times its ops — backend, threads, graph optimisation, batch, timing rule,
all recorded — or on ort-cpu with all cores at batch 1 without a table), and the largest
absolute difference between ORT and PyTorch outputs.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.latency.onnx_io import OPSET, reused_torchlib_registry
from hwnas.spaces.genotype import Genotype
from hwnas.spaces.network import DiscreteNetwork, NetworkConfig, count_flops, count_parameters


EXPORTER_NAMES = {"dynamo": "torch.onnx.export(dynamo=True)", "torchscript": "torch.onnx.export(dynamo=False)"}


def export_onnx_dynamic(model: nn.Module, input_shape: tuple[int, int, int], path: Path,
                        exporter: str = "dynamo") -> None:
    """`model` (eval, CPU) to ONNX at `path`, input `x` (batch, C, H, W) with a dynamic batch, output `logits`."""
    model = model.eval().cpu()
    example = torch.randn(2, *input_shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=["x"],
                              output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
            return
        batch = torch.export.Dim("batch", min=1, max=4096)
        with reused_torchlib_registry():
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET, input_names=["x"],
                                        output_names=["logits"], dynamic_shapes={"x": {0: batch}}, verbose=False)
    program.save(str(path))


def table_exporter(tables: list | None) -> str:
    """The exporter of the first table (its sidecar's settings; dynamo for tables that do not say)."""
    return tables[0].meta.get("settings", {}).get("exporter", "dynamo") if tables else "dynamo"


def check_onnx(model: nn.Module, path: Path, input_shape: tuple[int, int, int], batches=(1, 5)) -> dict:
    """onnx.checker, then ORT vs PyTorch on random inputs at each batch size: max |Δ| and top-1 agreement."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst, same_top1 = 0.0, True
    model = model.eval().cpu()
    for b in batches:
        x = rng.standard_normal((b, *input_shape)).astype(np.float32)
        (got,) = session.run(["logits"], {"x": x})
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        if got.shape != want.shape:
            raise HwnasError(f"ONNX output shape {got.shape} differs from PyTorch {want.shape} at batch {b}")
        worst = max(worst, float(np.abs(got - want).max()))
        same_top1 &= bool((got.argmax(1) == want.argmax(1)).all())
    return {"max_abs_diff": worst, "top1_identical": same_top1, "batches_checked": list(batches)}


def export_network(model: nn.Module, input_shape: tuple[int, int, int], out: str | Path, arch=None,
                   tables: list | None = None, threads: int | None = None, measure: bool = True,
                   extra: dict | None = None) -> dict:
    """Export, check, measure; writes `out` and `<out>.json` and returns the report (without `measure`, no
    `measured` entry: the network is not timed here).

    `arch` (a Genotype, or a ResNet18 gate dict) lets each `LatencyTable` in `tables` predict the latency;
    `extra` goes into the report as it is (what was exported, which weights).
    """
    out = Path(out)
    if out.exists():
        raise HwnasError(f"{out} exists; choose another --out (exports are never overwritten)")
    exporter = table_exporter(tables)
    export_onnx_dynamic(model, input_shape, out, exporter)
    report = {"onnx": str(out), "exporter": EXPORTER_NAMES[exporter], "opset": OPSET,
              "input_shape": ["batch", *input_shape], "params": count_parameters(model),
              "flops_per_sample": count_flops(model, input_shape)}
    report.update(check_onnx(model, out, input_shape))
    tables = tables or []
    if arch is not None and tables:
        report["predicted_latency_ms"] = {str(t.path): t.predict(arch) for t in tables}
    if measure:
        report["measured"] = measure_exported(model, out, input_shape, tables[0] if tables else None, threads)
    report.update(extra or {})
    Path(str(out) + ".json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def measure_exported(model: nn.Module, path: Path, input_shape: tuple[int, int, int], table=None,
                     threads: int | None = None) -> dict:
    """The exported network timed exactly as `table`'s device times its ops (its sidecar's backend,
    threads, graph optimisation, batch and timing rule), so prediction and measurement compare like for
    like, and beside the table's own costliest ops, so that the report says how fast the machine ran against the
    table's calibration (`machine_speed`: the prediction holds at that speed); without a table, ort-cpu with all
    cores at batch 1. A table whose backend cannot run on this machine (a GPU table on a CPU-only one) falls back to
    ort-cpu, and the report says so."""
    from hwnas.latency.backends import ORT_BACKENDS
    from hwnas.latency.measure import measure_module, measure_onnx_file, measurement

    cfg, batch = measurement(table, threads=threads) if table is not None else measurement(
        None, "ort-cpu", threads, 1)
    try:
        if cfg.name in ORT_BACKENDS:
            report = measure_onnx_file(path, cfg, batch, table=table)
        else:
            report = measure_module(model, input_shape, cfg, batch, table=table)
    except HwnasError as e:
        if table is None:
            raise
        fallback, batch = measurement(None, "ort-cpu", threads, batch)
        report = measure_onnx_file(path, fallback, batch)
        report["note"] = f"the table's backend cannot run here ({e}); measured on ort-cpu instead"
    report["as_table"] = str(table.path) if table is not None and report["backend"] == table.backend else None
    return report


def build_network(genotype: Genotype, cfg: NetworkConfig, weights: str | Path | None = None) -> nn.Module:
    """The discrete network of `genotype` in eval mode: trained `weights` (a state dict, model.pt of `hwnas train
    --out`), or the seeded initialisation every export of an untrained genotype uses (seed 0, drawn in a forked
    RNG: the caller's random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DiscreteNetwork(genotype, cfg)
    if weights is not None:
        from hwnas.runs import load_torch_file

        state = load_torch_file(weights, "a weights file (model.pt from hwnas train --out)", "weights file",
                                map_location="cpu")
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as e:  # another network's weights, or not a state dict
            raise HwnasError(f"--weights {weights} does not fit this network: {str(e).splitlines()[0]}") from None
    return model.eval()


def export_genotype(genotype: Genotype, cfg: NetworkConfig, input_hw: tuple[int, int], out: str | Path,
                    weights: str | Path | None = None, tables: list | None = None, threads: int | None = None,
                    extra: dict | None = None, measure: bool = True) -> dict:
    """The discrete network of `genotype` (`build_network`: seeded initialisation, or trained `weights`),
    exported, checked and re-measured as `export_network` does; the report names the genotype and the weights."""
    model = build_network(genotype, cfg, weights)
    extra = {"genotype": str(genotype),
             "weights": str(weights) if weights else "freshly initialised (architecture and latency only)",
             **(extra or {})}
    return export_network(model, (cfg.in_channels, *input_hw), out, arch=genotype, tables=tables, threads=threads,
                          measure=measure, extra=extra)
