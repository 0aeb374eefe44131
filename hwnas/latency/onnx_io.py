"""ONNX export of a timed module and ONNX Runtime static int8 quantisation.

Exporter: `torch.onnx.export(..., dynamo=True)` at opset 18. The TorchScript exporter
(`dynamo=False`) is 10–50× faster per op (measured: sep_conv_3x3 0.08 s vs 2.3 s cold,
0.55–0.7 s warm) but is deprecated in torch 2.x and slated for removal; the dynamo exporter
is the one `hwnas export` and users' deployments go through, so the per-op graphs are the
same kind of graphs as the whole networks they are summed to predict. Opset 18 is the
dynamo exporter's native opset (no version conversion pass). The exporter rebuilds its
ATen → ONNX registry on every call (0.4–0.7 s of re-parsed torchlib source); `export_onnx`
builds it once (`reused_torchlib_registry`, byte-identical models): 0.27 s per op instead of
0.57–0.70 s on a 2-core Xeon, a tiny table's profile 44 → 25 s (see benchmarks/profile_cost.py).
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 18
EXPORTERS = ("dynamo", "torchscript")


_REGISTRIES: dict[int, object] = {}   # opset → the dynamo exporter's ONNXRegistry, built once


@contextlib.contextmanager
def reused_torchlib_registry():
    """Within the block, the dynamo exporter builds its table of ATen → ONNX functions once per opset
    instead of once per call. Building it re-parses the source of every torchlib function
    (`inspect.getsource`, ~24,000 calls): 0.7 s of the 1.2 s that exporting one tiny op took on a 2-core
    Xeon (torch 2.14), the larger part of profiling a table, whose every key is one export. The registry
    is only changed when a custom translation table is passed, which hwnas never does; where the private
    hook is missing (another torch), exports run as they are."""
    try:
        from torch.onnx._internal.exporter import _registration

        cls = _registration.ONNXRegistry
        original = cls.__dict__["from_torchlib"]
        build, default_opset = original.__func__, _registration._constants.TORCHLIB_OPSET
    except (ImportError, AttributeError, KeyError):
        yield
        return

    def cached(klass, opset_version=default_opset):
        if opset_version not in _REGISTRIES:
            _REGISTRIES[opset_version] = build(klass, opset_version=opset_version)
        return _REGISTRIES[opset_version]

    cls.from_torchlib = classmethod(cached)
    try:
        yield
    finally:
        cls.from_torchlib = original


def export_onnx(module: nn.Module, inputs: list[torch.Tensor], exporter: str = "dynamo", opset: int = OPSET) -> bytes:
    """The module (eval mode, on CPU) as a serialised ONNX model with inputs x0, x1, … and output y."""
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; known: {', '.join(EXPORTERS)}")
    names = [f"x{i}" for i in range(len(inputs))]
    module = module.eval()
    # The exporters talk a lot (deprecation and fallback notes); none of it is for the user of a profiler.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            with reused_torchlib_registry():
                program = torch.onnx.export(module, tuple(inputs), dynamo=True, opset_version=opset, input_names=names,
                                            output_names=["y"], verbose=False)
            return program.model_proto.SerializeToString()
        buf = io.BytesIO()
        torch.onnx.export(module, tuple(inputs), buf, dynamo=False, opset_version=opset, input_names=names,
                          output_names=["y"], verbose=False)
        return buf.getvalue()


def random_feeds(shapes: list[tuple[int, ...]], dtype=np.float32, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"x{i}": rng.standard_normal(s).astype(dtype) for i, s in enumerate(shapes)}


def quantize_int8(model: bytes, shapes: list[tuple[int, ...]], batches: int = 4) -> bytes:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations) calibrated on
    a few random batches. Latency, not accuracy, is what is measured, so random data suffices
    to place the Q/DQ nodes and choose realistic kernels."""
    import logging

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        # quantize_static logs a pre-processing hint per model on the root logger, and its calibration
        # session warns about unused initialisers: noise for hundreds of tiny op models.
        logging.disable(logging.WARNING)
        ort.set_default_logger_severity(3)
        try:
            return _quantize(model, shapes, batches, tmp)
        finally:
            logging.disable(logging.NOTSET)


def _quantize(model: bytes, shapes, batches: int, tmp: str) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([random_feeds(shapes, seed=i) for i in range(batches)])

        def get_next(self):
            return next(self.feeds, None)

    src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
    src.write_bytes(model)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst.read_bytes()
