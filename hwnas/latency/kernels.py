"""Kernels: how many nodes ONNX Runtime runs for a whole network once it has optimised the graph.

A table prices each op timed alone. ONNX Runtime does not run a network op by op: at
`ORT_ENABLE_ALL` it folds batch norms into convolutions, fuses an `Add` or a `Relu` into the
convolution before it, merges the identical ReLUs that several edges apply to one input, and
lays out runs of convolutions and pools in its blocked NCHWc format with one `ReorderInput` /
`ReorderOutput` at each boundary, where an op timed alone pays a reorder on either side. On a
quickstart network: 31 ReLUs become 18, 20 Adds 6, and 22 reorders appear. How many kernels a
network launches after this depends on which ops meet which, not on each op alone, so no per-op
sum can see it; at small resolutions, where each kernel costs about as much to launch as to
compute, it moves a network's latency by as much as its choice of ops does.

nn-Meter (MobiSys 2021) predicts from the kernels a runtime's fusion leaves. Here the runtime
itself says what they are: the network is exported, ONNX Runtime optimises it exactly as the
timed session does (same level, same provider), and the optimised graph's nodes are counted
(`network_kernels`). The count is a feature of the calibration (`calibrate.fit_linear_kernels`:
measured ≈ a · Σ + k · kernels + b). Measured on the held-out networks of two tables (20 each,
leave-one-out on their own timings, 2026-12-07): Spearman 0.893 → 0.976 on mobile 8×8 and
0.805 → 0.913 on ort-cpu 28×28, against the per-op sum's linear fit.

Only for the ONNX Runtime CPU backends whose timed graph is the exported float graph (`ort-cpu`,
`mobile`); `mobile-int8` times a quantised graph and the GPU backends fuse differently.

The count uses the TorchScript exporter where torch still has it (0.3 s a network against 3 s
for dynamo, whose graph the timed sessions run): after ONNX Runtime's optimisation both give the
same node count (equal on every network checked, tests/test_kernels.py); where the TorchScript
exporter is gone the table's own exporter is used. Calibration and prediction count the same way.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from hwnas.latency.backends import BackendConfig, OrtBackend
from hwnas.latency.onnx_io import export_onnx

KERNEL_BACKENDS = ("ort-cpu", "mobile")


def optimised_op_types(model: bytes, threads: int = 1, graph_opt: str = "all") -> list[str]:
    """The op types of the nodes in ONNX Runtime's optimised CPU graph of `model`, in order, optimised with the
    session options a timed `ort-cpu` session of these threads and optimisation level uses
    (`OrtBackend.session_options`). At `all` they include the NCHWc reorders this CPU's kernels need."""
    import onnx

    backend = OrtBackend(BackendConfig("ort-cpu", threads, graph_opt=graph_opt))
    so = backend.session_options()   # errors only: ORT warns that an NCHWc graph is specific to this machine
    with tempfile.TemporaryDirectory() as tmp:
        so.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        backend.ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(so.optimized_model_filepath, load_external_data=False).graph.node]


def optimised_node_count(model: bytes, threads: int = 1, graph_opt: str = "all") -> int:
    """The number of nodes in ONNX Runtime's optimised CPU graph of `model` (`optimised_op_types`)."""
    return len(optimised_op_types(model, threads, graph_opt))


def counting_export(module: torch.nn.Module, inputs: list[torch.Tensor], exporter: str, opset: int) -> bytes:
    """The module's ONNX for counting: TorchScript's where torch has it (fast), else `exporter`'s."""
    try:
        return export_onnx(module, inputs, "torchscript", opset)
    except Exception:  # noqa: BLE001 (any failure of the legacy exporter: fall back to the table's own)
        return export_onnx(module, inputs, exporter, opset)


def network_kernels(space, arch, cfg: BackendConfig | None = None) -> int:
    """Kernels ONNX Runtime runs for the whole network of `arch` (a genotype or a ResNet18 gate dict) built at
    `space`'s parameters, with the threads, graph optimisation, exporter and opset of `cfg` (a table's:
    `measure.table_backend_config`; default: 1 thread, all optimisations)."""
    from hwnas.latency.calibrate import build_network

    cfg = cfg or BackendConfig("ort-cpu", 1)
    x = torch.randn(space.batch, space.in_channels, space.input_h, space.input_w)
    model = counting_export(build_network(space, arch), [x], cfg.exporter, cfg.opset)
    return optimised_node_count(model, cfg.threads, cfg.graph_opt)
