"""The per-op ONNX export: reusing the dynamo exporter's ATen → ONNX registry across exports
changes no byte of what is exported, and leaves torch as it found it."""
import contextlib
import hashlib

import pytest
import torch

from hwnas.latency import onnx_io
from hwnas.spaces.ops import make_op


def _digests(monkeypatch, reuse: bool) -> list[str]:
    if not reuse:
        monkeypatch.setattr(onnx_io, "reused_torchlib_registry", contextlib.nullcontext)
    out = []
    for op, stride in (("sep_conv_3x3", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 2), ("skip_connect", 2)):
        torch.manual_seed(0)
        out.append(hashlib.sha256(onnx_io.export_onnx(make_op(op, 4, stride, True), [torch.randn(1, 4, 8, 8)]))
                   .hexdigest())
    monkeypatch.undo()
    return out


def test_reusing_the_exporters_registry_exports_the_same_bytes(monkeypatch):
    pytest.importorskip("onnxscript")
    assert _digests(monkeypatch, reuse=True) == _digests(monkeypatch, reuse=False)


def test_the_exporters_own_registry_is_back_after_the_block_even_on_error():
    from torch.onnx._internal.exporter import _registration

    before = _registration.ONNXRegistry.__dict__["from_torchlib"]
    with pytest.raises(RuntimeError), onnx_io.reused_torchlib_registry():
        assert _registration.ONNXRegistry.__dict__["from_torchlib"] is not before
        # inside, two builds are one object: built once per opset
        assert _registration.ONNXRegistry.from_torchlib() is _registration.ONNXRegistry.from_torchlib()
        raise RuntimeError
    assert _registration.ONNXRegistry.__dict__["from_torchlib"] is before
