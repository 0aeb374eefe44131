"""Timing a whole network exactly as a table's device times its ops (`hwnas measure`, `export`).

One definition per device: the backend settings a table was profiled with (backend, threads,
graph optimisation, execution mode, exporter, timing rule) live in its sidecar, and
`table_backend_config` rebuilds them; `export` and `measure` time a network with that same
configuration, at the table's batch, and write the configuration into their report. Without a
table, a device name gives the device's defaults (as `hwnas profile --device D` would use).
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from hwnas.errors import HwnasError
from hwnas.latency.backends import ORT_BACKENDS, BackendConfig, make_backend, resolve
from hwnas.latency.speed import timed_beside_reference
from hwnas.latency.stats import TimingConfig, TimingStats
from hwnas.latency.steal import StealMeter

NETWORK_BUDGET_S = 0.5  # whole networks get a larger time budget than single ops


def table_backend_config(table, budget_s: float = NETWORK_BUDGET_S) -> BackendConfig:
    """The backend set-up the table was measured with (whole networks get a larger time budget)."""
    s = table.meta.get("settings", {})
    timing = {k: v for k, v in s.get("timing", {}).items() if k in TimingConfig.__dataclass_fields__}
    if s.get("timing") and "rounds" not in timing:
        timing["rounds"] = 1  # a table made before interleaved rounds timed each key once
    timing["budget_s"] = max(budget_s, timing.get("budget_s", 0.0))
    return BackendConfig(table.backend, int(table.meta["threads"]), graph_opt=s.get("graph_optimization", "all"),
                         exporter=s.get("exporter", "dynamo"), opset=s.get("opset", 18),
                         cuda_graphs=s.get("cuda_graphs", True), timing=TimingConfig(**timing))


def measurement(table=None, device: str | None = None, threads: int | None = None,
                batch: int | None = None) -> tuple[BackendConfig, int]:
    """(backend config, batch) to time a network with: the table's own set-up when there is a
    table, else the device's defaults. A --threads or --batch that contradicts the table is refused:
    the comparison with its prediction would not be like for like."""
    if table is not None:
        cfg, table_batch = table_backend_config(table), table.space.batch
        if device is not None and device != table.backend:
            raise HwnasError(f"--device {device} contradicts the table, which measured {table.backend}; drop one")
        for name, given, own in (("threads", threads, cfg.threads), ("batch", batch, table_batch)):
            if given is not None and given != own:
                raise HwnasError(f"--{name} {given}: the table was measured with {name} {own}; a prediction is "
                                 f"only comparable at the same {name} (drop --{name})")
        return cfg, table_batch
    device = device or "ort-cpu"
    threads, batch = resolve(device, threads, batch)
    return BackendConfig(device, threads, timing=TimingConfig(budget_s=NETWORK_BUDGET_S)), batch


def _report(cfg: BackendConfig, batch: int, stats: TimingStats, speed: dict | None, backend) -> dict:
    report = {"backend": cfg.name, "batch": batch, "threads": cfg.threads, "p50_ms": stats.p50_ms,
              "p10_ms": stats.p10_ms, "p90_ms": stats.p90_ms, "spread": stats.spread, "noisy": stats.noisy,
              "settings": cfg.to_dict(), "device": backend.describe()["device"],
              "call": backend.network_call}
    if speed is not None:
        report["machine_speed"] = speed
    return report


def _beside_table(backend, table) -> bool:
    """Whether a network is timed beside `table`'s own ops: a table of this backend, with keys to re-time."""
    return table is not None and table.backend == backend.cfg.name and len(table.frame) > 0


def measure_module(module: nn.Module, input_shape: tuple[int, ...], cfg: BackendConfig, batch: int,
                   table=None) -> dict:
    """Time a PyTorch module on `cfg`'s backend (ORT backends export it first, as the profiler does); with `table`
    (of that backend), beside its own costliest ops, so that the report also says how fast the machine ran against
    the table's calibration (`machine_speed`; `speed.timed_beside_reference`)."""
    backend = make_backend(cfg)
    shapes = [(batch, *input_shape)]
    return _timed(cfg, batch, backend, table, lambda: backend.prepare_network(module.eval(), shapes),
                  lambda: backend.measure(module.eval(), shapes))


def _timed(cfg: BackendConfig, batch: int, backend, table, prepared, alone) -> dict:
    """The report of one network timed beside `table`'s own ops (`prepared()`: its timing thunk) where the table is
    of this backend, else alone (`alone()`: its TimingStats), with the hypervisor's steal over the timing."""
    meter = StealMeter()
    if _beside_table(backend, table):
        report = _report(cfg, batch, *timed_beside_reference(table, backend, prepared()), backend)
    else:
        report = _report(cfg, batch, alone(), None, backend)
    report["steal_pct"] = meter.pct()
    return report


def measure_onnx_file(path: str | Path, cfg: BackendConfig, batch: int, table=None) -> dict:
    """Time an ONNX file on an ONNX Runtime backend (mobile-int8 quantises it first, as its tables are); with
    `table` (of that backend), beside its own costliest ops (`machine_speed` in the report, as `measure_module`)."""
    path = Path(path)
    if cfg.name not in ORT_BACKENDS:
        raise HwnasError(f"--device {cfg.name} times PyTorch modules, not ONNX files; time {path.name} on one of "
                         f"{', '.join(ORT_BACKENDS)} (or export with a table of that device)")
    shape = onnx_input_shape(path, batch)
    backend = make_backend(cfg)
    model = path.read_bytes()
    if cfg.name == "mobile-int8":
        from hwnas.latency.onnx_io import quantize_int8

        model = quantize_int8(model, [shape])
    report = _timed(cfg, batch, backend, table, lambda: backend.prepare_onnx(model, [shape]),
                    lambda: backend.measure_onnx(model, [shape]))
    report["input_shape"] = list(shape)
    return report


def onnx_input_shape(path: Path, batch: int) -> tuple[int, ...]:
    """The model's single input shape, with `batch` for a dynamic first dimension."""
    import onnx

    if not path.is_file():
        raise HwnasError(f"no ONNX file at {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, ValueError, … for a file that is not a model
        raise HwnasError(f"{path} is not an ONNX model ({type(e).__name__})") from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise HwnasError(f"{path} has {len(inputs)} inputs; hwnas measure times single-input networks")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = []
    for k, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(d.dim_value)  # a static batch is the model's own
        elif k == 0:
            shape.append(batch)
        else:
            raise HwnasError(f"{path}: input dimension {k} is symbolic ({d.dim_param!r}); only the batch may be")
    return tuple(shape)
