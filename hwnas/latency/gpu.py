"""GPU backends: PyTorch CUDA (CUDA events, CUDA graphs) and TensorRT (engine from the same ONNX).

Neither can run on a machine without an NVIDIA GPU; both fail there with a one-line
`HwnasError`. TensorRT 10 and 11 are both handled: networks are created strongly typed when
the flag exists (10.x has it, 11.x requires it), so precision comes from the ONNX graph's
types (a float16 table exports a half-precision graph); `BuilderFlag.FP16` is set only for a
weakly typed network on an older TensorRT that still has it. EXPLICIT_BATCH is never
passed: it is the default in 10 and gone in 11.
"""
from __future__ import annotations

import numpy as np
import torch

from hwnas.errors import HwnasError
from hwnas.latency.backends import Backend, BackendConfig, onnx_for
from hwnas.latency.stats import TimingStats, time_callable

TRT_MISSING = "TensorRT is not installed: pip install 'hwnas[tensorrt]' on a machine with an NVIDIA GPU"


def require_cuda(backend: str) -> None:
    if not torch.cuda.is_available():
        raise HwnasError(f"--device {backend} needs an NVIDIA GPU, and torch {torch.__version__} sees none; "
                         f"use --device cpu, ort-cpu or mobile here")


def cuda_event_clock(stream: torch.cuda.Stream | None = None):
    """A clock for `time_callable`: CUDA events recorded around one call on `stream`, in ms."""

    def clock(fn) -> float:
        s = stream or torch.cuda.current_stream()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(s)
        fn()
        end.record(s)
        end.synchronize()
        return start.elapsed_time(end)

    return clock


def _torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float16": torch.float16}[name]


class CudaBackend(Backend):
    """PyTorch on the GPU, each timed run bracketed by CUDA events on the current stream.

    `BackendConfig.cuda_graphs` (the default, True): the op is captured in a CUDA graph and each
    timed run is one replay. Small DARTS ops take microseconds, about as long as launching their
    kernels from Python, and the graph removes that launch overhead (which a deployed, compiled
    model does not pay). Ops that cannot be captured fall back to eager launches.
    `cuda_graphs=False`: each timed run is the module's eager kernel launches, what an uncompiled
    PyTorch program pays; the events then also hold the gaps in which the GPU waits for the CPU
    to launch the next kernel. The sidecar records which of the two a table measured."""

    def __init__(self, cfg: BackendConfig):
        require_cuda(cfg.name)
        super().__init__(cfg)
        self.device = torch.device("cuda", torch.cuda.current_device())

    def describe(self) -> dict:
        return {"device": torch.cuda.get_device_name(self.device), "backend_version": f"torch {torch.__version__} "
                f"CUDA {torch.version.cuda}", "cuda_graphs": self.cfg.cuda_graphs}

    def measure(self, module, shapes, dtype="float32") -> TimingStats:
        dt = _torch_dtype(dtype)
        module = module.eval().to(self.device, dt)
        inputs = [torch.randn(s, device=self.device, dtype=dt) for s in shapes]
        with torch.no_grad():
            # eager: time_callable's own warm-up runs first (cuDNN selection, allocator, lazy init)
            fn = self._graphed(module, inputs) if self.cfg.cuda_graphs else (lambda: module(*inputs))
            return time_callable(fn, self.cfg.timing, clock=cuda_event_clock())

    @staticmethod
    def _graphed(module, inputs):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream before capture, as the CUDA-graph docs ask
            for _ in range(3):
                module(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                module(*inputs)
        except RuntimeError:  # not capturable (e.g. a host sync inside): time eager launches instead
            torch.cuda.synchronize()
            return lambda: module(*inputs)
        return graph.replay


def import_tensorrt():
    """The tensorrt module, or the one-line error that says how to get it."""
    try:
        import tensorrt as trt
    except ImportError:
        raise HwnasError(TRT_MISSING) from None
    return trt


def build_engine(trt, onnx_model: bytes, dtype: str = "float32", workspace: int = 1 << 30):
    """A deserialised TensorRT engine for an ONNX model (TensorRT 10 or 11)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise HwnasError(f"TensorRT could not parse the exported ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if dtype == "float16" and not strongly_typed and hasattr(trt.BuilderFlag, "FP16"):
        config.set_flag(trt.BuilderFlag.FP16)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise HwnasError("TensorRT could not build an engine for the exported ONNX model (see its log above)")
    return trt.Runtime(logger).deserialize_cuda_engine(plan)


class TensorRTBackend(Backend):
    def __init__(self, cfg: BackendConfig):
        self.trt = import_tensorrt()  # first: "not installed" is the more useful message
        require_cuda(cfg.name)
        super().__init__(cfg)

    def describe(self) -> dict:
        return {"device": torch.cuda.get_device_name(torch.cuda.current_device()),
                "backend_version": self.trt.__version__}

    def measure(self, module, shapes, dtype="float32") -> TimingStats:
        return self.measure_onnx(onnx_for(module, shapes, dtype, self.cfg), shapes, dtype)

    def measure_onnx(self, model: bytes, shapes, dtype="float32") -> TimingStats:
        trt = self.trt
        engine = build_engine(trt, model, dtype)
        context = engine.create_execution_context()
        buffers = []  # keep the tensors alive while the context points at them
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            tdtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
            t = torch.randn(shape, dtype=tdtype, device="cuda") if tdtype.is_floating_point else \
                torch.zeros(shape, dtype=tdtype, device="cuda")
            context.set_tensor_address(name, t.data_ptr())
            buffers.append(t)
        stream = torch.cuda.Stream()
        torch.cuda.synchronize()

        def run():
            if not context.execute_async_v3(stream.cuda_stream):
                raise HwnasError("TensorRT execute_async_v3 failed")

        return time_callable(run, self.cfg.timing, clock=cuda_event_clock(stream))
