"""Timing backends: each measures one module (an op, or a whole network) the way its platform runs it.

    cpu          PyTorch eager, `torch.set_num_threads(threads)`, inference mode, wall clock
    ort-cpu      the module exported to ONNX, one ONNX Runtime session (CPU provider)
    ort-cuda     the same on the CUDA provider, inputs/outputs bound on the GPU (IO binding)
    mobile       the phone-CPU proxy: ort-cpu with 1 thread and batch 1
    mobile-int8  mobile after ONNX Runtime static int8 quantisation (QDQ, per-channel)
    cuda         PyTorch on the GPU, CUDA events around a CUDA-graph replay   (gpu.py)
                 (cuda_graphs=False: around the eager kernel launches instead)
    tensorrt     a TensorRT engine built from the same ONNX                    (gpu.py)

Every backend: warm-up, then an adaptive number of timed runs, median / p10 / p90 after the
slow-outlier rule of `stats.py`, in `timing.rounds` rounds (a fresh ONNX Runtime session each) whose
medians are combined; `prepare` gives one round as a callable, so that the profiler and `calibrate`
can interleave the rounds of many keys or networks.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.latency.onnx_io import OPSET, export_onnx, quantize_int8, random_feeds
from hwnas.latency.stats import TimingConfig, TimingStats, interleaved, time_callable

BACKENDS = ("cpu", "cuda", "ort-cpu", "ort-cuda", "tensorrt", "mobile", "mobile-int8")
ORT_BACKENDS = ("ort-cpu", "ort-cuda", "mobile", "mobile-int8")
GRAPH_OPT = ("disable", "basic", "extended", "all")
_ONE_THREAD_BATCH_ONE = ("mobile", "mobile-int8")


@dataclass(frozen=True)
class BackendConfig:
    name: str
    threads: int
    graph_opt: str = "all"        # ONNX Runtime graph optimisation level
    exporter: str = "dynamo"      # ONNX exporter (onnx_io.py says why)
    opset: int = OPSET
    cuda_graphs: bool = True      # cuda: time one CUDA-graph replay per run; False: eager launches (gpu.py)
    timing: TimingConfig = field(default_factory=TimingConfig)

    def to_dict(self) -> dict:
        d = {"backend": self.name, "threads": self.threads, "timing": self.timing.to_dict()}
        if self.name in ORT_BACKENDS or self.name == "tensorrt":
            d.update(exporter=self.exporter, opset=self.opset)
        if self.name in ORT_BACKENDS:
            d["graph_optimization"] = self.graph_opt
        if self.name == "cuda":  # part of the device's measurement definition: a table never mixes the two
            d["cuda_graphs"] = self.cuda_graphs
        return d


def resolve(name: str, threads: int | None, batch: int | None, dtype: str = "float32") -> tuple[int, int]:
    """(threads, batch) for a backend: defaults filled in, impossible combinations refused."""
    import os

    if name not in BACKENDS:
        raise HwnasError(f"unknown --device {name!r}; choose one of {', '.join(BACKENDS)}")
    if name in _ONE_THREAD_BATCH_ONE:
        if (threads or 1) != 1 or (batch or 1) != 1:
            raise HwnasError(f"--device {name} is the phone-CPU proxy: 1 thread and batch 1 by definition; "
                             f"use --device ort-cpu for other settings")
        return 1, 1
    if dtype == "float16" and name not in ("cuda", "ort-cuda", "tensorrt"):
        raise HwnasError(f"--dtype float16 needs a GPU backend (cuda, ort-cuda, tensorrt), not {name}")
    threads = threads or os.cpu_count() or 1
    if threads < 1 or (batch is not None and batch < 1):
        raise HwnasError("--threads and --batch must be positive")
    return threads, batch or 64


@contextmanager
def torch_threads(n: int):
    """Run with `n` intra-op threads, restoring the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def onnx_for(module: nn.Module, shapes: list[tuple[int, ...]], dtype: str, cfg: BackendConfig) -> bytes:
    """Export `module` with random inputs of `shapes`; float16 exports a half-precision graph
    (how TensorRT 11's strongly typed networks get fp16 kernels: from the ONNX types)."""
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(s, generator=gen) for s in shapes]
    if dtype == "float16":
        module, inputs = module.half(), [x.half() for x in inputs]
    return export_onnx(module, inputs, cfg.exporter, cfg.opset)


class Backend:
    """Measures modules; `describe()` is what the table's sidecar records about the device."""

    def __init__(self, cfg: BackendConfig):
        self.cfg = cfg

    def describe(self) -> dict:
        from hwnas.info import cpu_name

        return {"device": cpu_name(), "backend_version": torch.__version__}

    def prepare(self, module: nn.Module, shapes: list[tuple[int, ...]], dtype: str = "float32"):
        """A callable that times one round of `module` (export and set-up done once, here)."""
        return lambda: self.measure(module, shapes, dtype)

    def prepare_key(self, key, space):
        """A callable that times one round of a table key's module (what `hwnas profile` times for it)."""
        from hwnas.latency.profiler import key_module

        return self.prepare(*key_module(key, space), key.dtype)

    def prepare_network(self, module: nn.Module, shapes: list[tuple[int, ...]], dtype: str = "float32"):
        """A callable that times one round of a whole network as an application runs it (`calibrate`, `measure`,
        `export`); the same as `prepare` except where the two differ (`OrtBackend`)."""
        return self.prepare(module, shapes, dtype)

    def measure(self, module: nn.Module, shapes: list[tuple[int, ...]], dtype: str = "float32") -> TimingStats:
        """The module timed in `timing.rounds` rounds, combined."""
        return interleaved([self.prepare(module, shapes, dtype)], self.cfg.timing)[0]

    network_call = "the backend's own (see hwnas.latency.backends)"   # how a whole network is called when timed

    def prepare_overhead(self):
        """A callable that times one round of what timing one op alone costs beyond the op (None: nothing a
        network would not pay too). The profiler times it among each chunk's keys (`profiler.profile`)."""

    def call_overhead(self) -> TimingStats | None:
        """`prepare_overhead` timed on its own, in `timing.rounds` rounds (None where there is nothing to time)."""
        thunk = self.prepare_overhead()
        return None if thunk is None else interleaved([thunk], self.cfg.timing)[0]


class TorchCPUBackend(Backend):
    def prepare(self, module, shapes, dtype="float32"):
        gen = torch.Generator().manual_seed(0)
        inputs = [torch.randn(s, generator=gen) for s in shapes]
        module, timing = module.eval(), self.cfg.timing.per_round()

        def one_round() -> TimingStats:
            with torch_threads(self.cfg.threads), torch.inference_mode():
                return time_callable(lambda: module(*inputs), timing)

        return one_round


KEY_MODELS = 16   # ONNX models of table keys kept per process (OrtBackend.prepare_key)
_KEY_MODELS: OrderedDict = OrderedDict()


class OrtBackend(Backend):
    """ONNX Runtime: export once, one session with controlled threads and optimisation level."""

    def __init__(self, cfg: BackendConfig):
        super().__init__(cfg)
        try:
            import onnxruntime as ort
        except ImportError:
            raise HwnasError(f"--device {cfg.name} needs onnxruntime: pip install onnxruntime") from None
        self.ort = ort
        self.provider = "CUDAExecutionProvider" if cfg.name == "ort-cuda" else "CPUExecutionProvider"
        if self.provider not in ort.get_available_providers():
            raise HwnasError(f"--device {cfg.name}: onnxruntime {ort.__version__} has no {self.provider} "
                             f"(install onnxruntime-gpu on a machine with an NVIDIA GPU)")

    def describe(self) -> dict:
        d = super().describe()
        d["backend_version"] = self.ort.__version__
        if self.cfg.name == "ort-cuda":
            d["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CUDA (name unknown)"
        return d

    def session_options(self):
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = self.cfg.threads
        so.inter_op_num_threads = 1
        so.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        level = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                 "all": "ORT_ENABLE_ALL"}[self.cfg.graph_opt]
        so.graph_optimization_level = getattr(self.ort.GraphOptimizationLevel, level)
        so.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
        return so

    def onnx_model(self, module: nn.Module, shapes: list[tuple[int, ...]], dtype: str = "float32") -> bytes:
        """The ONNX bytes this backend runs for `module` (quantised for mobile-int8)."""
        model = onnx_for(module, shapes, dtype, self.cfg)
        return quantize_int8(model, shapes) if self.cfg.name == "mobile-int8" else model

    def prepare(self, module, shapes, dtype="float32"):
        model = self.onnx_model(module, shapes, dtype)
        return lambda: self._time_session(model, shapes, dtype)

    def prepare_key(self, key, space):
        """As `Backend.prepare_key`, the key's model exported once per process for the last `KEY_MODELS` keys:
        `export` and `measure` re-time a table's reference keys beside every network they time."""
        from hwnas.latency.profiler import key_module

        ident = (key, space, self.cfg.name, self.cfg.exporter, self.cfg.opset)
        if ident in _KEY_MODELS:
            _KEY_MODELS.move_to_end(ident)
        else:
            module, shapes = key_module(key, space)
            _KEY_MODELS[ident] = (self.onnx_model(module, shapes, key.dtype), shapes)
            while len(_KEY_MODELS) > KEY_MODELS:
                _KEY_MODELS.popitem(last=False)
        model, shapes = _KEY_MODELS[ident]
        return lambda: self._time_session(model, shapes, key.dtype)

    def prepare_network(self, module, shapes, dtype="float32"):
        return self.prepare_onnx(self.onnx_model(module, shapes, dtype), shapes, dtype)

    def measure(self, module, shapes, dtype="float32") -> TimingStats:
        """A whole module timed as an application runs it (`prepare_network`), in `timing.rounds` rounds."""
        return self.measure_onnx(self.onnx_model(module, shapes, dtype), shapes, dtype)

    def measure_onnx(self, model: bytes, shapes, dtype="float32") -> TimingStats:
        """Time one ONNX model (a whole network) as an application runs it, in `timing.rounds` rounds of a fresh
        session each."""
        return interleaved([self.prepare_onnx(model, shapes, dtype)], self.cfg.timing)[0]

    def prepare_onnx(self, model: bytes, shapes, dtype="float32"):
        """A callable that times one round of an ONNX model (a whole network) as an application runs it."""
        return lambda: self._time_session(model, shapes, dtype, as_app=True)

    @property
    def network_call(self) -> str:
        return ("sess.run(None, feeds) from numpy, as an application calls it"
                if self.provider == "CPUExecutionProvider" else "IO binding, inputs on the GPU")

    def _time_session(self, model: bytes, shapes, dtype="float32", as_app: bool = False) -> TimingStats:
        """One round: a new session, its rule `timing.per_round()`. An op (`as_app` False): inputs and outputs
        bound once (IO binding), so a run is the session call and the kernels, not a copy of the output into a
        new numpy array: an op timed alone would otherwise pay a copy its place inside a network never pays (and
        the call itself is taken off every key: `prepare_overhead`). A whole network on the CPU (`as_app`):
        `sess.run(None, feeds)` from numpy, as an application calls it and as a user's own timing loop does;
        it costs 3–6 µs more per call than the bound run here, 5–15 % of the quickstart's 8×8 networks
        (benchmarks/ort_thread_modes.py: `run` against `binding`). On the GPU a network stays bound: its inputs live on the device."""
        sess = self.ort.InferenceSession(model, self.session_options(), providers=[self.provider])
        arrays = random_feeds(shapes, np.float16 if dtype == "float16" else np.float32).values()
        feeds = {i.name: a for i, a in zip(sess.get_inputs(), arrays)}  # whatever the model calls its inputs
        device = "cpu" if self.provider == "CPUExecutionProvider" else "cuda"
        if as_app and device == "cpu":
            return time_callable(lambda: sess.run(None, feeds), self.cfg.timing.per_round())
        binding = sess.io_binding()  # GPU: inputs stay on the device, so only the kernels are timed
        for name, x in feeds.items():
            binding.bind_ortvalue_input(name, self.ort.OrtValue.ortvalue_from_numpy(x, device, 0))
        for out in sess.get_outputs():
            binding.bind_output(out.name, device)

        def run():
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return time_callable(run, self.cfg.timing.per_round())

    def prepare_overhead(self):
        """One session call that computes nothing (an Identity on one float), timed as ops are.
        Every op timed alone pays it once; a whole network pays it once in all."""
        model = identity_onnx(self.cfg.opset)
        return lambda: self._time_session(model, [(1,)])


def identity_onnx(opset: int = OPSET) -> bytes:
    """The smallest model a session can run: y = Identity(x0), x0 one float."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x0"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def make_backend(cfg: BackendConfig) -> Backend:
    """The backend object for a config; a clear error when the platform cannot run it."""
    if cfg.name == "cpu":
        return TorchCPUBackend(cfg)
    if cfg.name in ORT_BACKENDS:
        return OrtBackend(cfg)
    if cfg.name == "cuda":
        from hwnas.latency.gpu import CudaBackend

        return CudaBackend(cfg)
    if cfg.name == "tensorrt":
        from hwnas.latency.gpu import TensorRTBackend

        return TensorRTBackend(cfg)
    raise HwnasError(f"unknown --device {cfg.name!r}; choose one of {', '.join(BACKENDS)}")
