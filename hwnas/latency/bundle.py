"""Profiling a device that cannot run PyTorch: a self-contained bundle, and importing its results.

`write_bundle` exports every key's op to ONNX (quantised for mobile-int8) into DIR/models/,
with keys.csv (key → model file, input shapes), bundle.json (space, timing, ORT settings)
and run.py (`bundle_runner.py`: onnxruntime + numpy only). `import_bundle` joins the
runner's results.csv and device.json with keys.csv into an ordinary `LatencyTable`.
"""
from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

import hwnas
from hwnas.errors import HwnasError
from hwnas.latency.backends import BackendConfig, OrtBackend, identity_onnx
from hwnas.latency.profiler import key_module, space_keys
from hwnas.latency.space import KEY_COLUMNS, SpaceConfig
from hwnas.latency.table import LatencyTable

BUNDLE_BACKENDS = ("ort-cpu", "mobile", "mobile-int8")
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


def write_bundle(space: SpaceConfig, cfg: BackendConfig, out: str | Path,
                 on_progress: Callable[[int, int], None] | None = None) -> Path:
    if cfg.name not in BUNDLE_BACKENDS:
        raise HwnasError(f"a bundle runs ONNX Runtime on the CPU: --device one of {', '.join(BUNDLE_BACKENDS)}, "
                         f"not {cfg.name}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise HwnasError(f"{out} is not empty; choose a new folder for the bundle")
    (out / "models").mkdir(parents=True, exist_ok=True)
    backend = OrtBackend(cfg)
    keys = space_keys(space)
    with open(out / "keys.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["file", *KEY_COLUMNS, "input_shapes"])
        writer.writeheader()
        for i, key in enumerate(keys):
            module, shapes = key_module(key, space)
            name = f"models/k{i:04d}.onnx"
            (out / name).write_bytes(backend.onnx_model(module, shapes, key.dtype))
            writer.writerow({"file": name, **key._asdict(),
                             "input_shapes": ";".join("x".join(map(str, s)) for s in shapes)})
            if on_progress:
                on_progress(i + 1, len(keys))
    (out / "models" / "identity.onnx").write_bytes(identity_onnx(cfg.opset))
    spec = {"hwnas": hwnas.__version__, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "backend": cfg.name,
            "threads": cfg.threads, "graph_optimization": cfg.graph_opt,
            "graph_optimization_level": _LEVELS[cfg.graph_opt], "settings": cfg.to_dict(),
            "timing": cfg.timing.to_dict(), "space": space.to_dict()}
    (out / "bundle.json").write_text(json.dumps(spec, indent=2) + "\n")
    shutil.copyfile(Path(__file__).with_name("bundle_runner.py"), out / "run.py")
    return out


def import_bundle(bundle: str | Path, out: str | Path) -> LatencyTable:
    """A table from a bundle that run.py has been run in."""
    bundle = Path(bundle)
    need = ("bundle.json", "keys.csv", "results.csv", "device.json")
    missing = [n for n in need if not (bundle / n).is_file()]
    if missing:
        hint = " (run `python run.py` in the bundle on the target first)" if "results.csv" in missing else ""
        raise HwnasError(f"{bundle} lacks {', '.join(missing)}{hint}")
    try:
        spec, device = (json.loads((bundle / n).read_text()) for n in ("bundle.json", "device.json"))
        keys, results = pd.read_csv(bundle / "keys.csv"), pd.read_csv(bundle / "results.csv")
    except (json.JSONDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise HwnasError(f"{bundle}: unreadable bundle file ({str(e).splitlines()[0]})") from None
    frame = keys.merge(results, on="file", how="inner")
    if len(frame) < len(keys):
        raise HwnasError(f"{bundle}: results.csv has {len(frame)} of {len(keys)} models; run `python run.py` again "
                         f"there to finish (it resumes)")
    settings = dict(spec["settings"])
    settings.pop("backend", None), settings.pop("threads", None)
    meta = {"device": device["device"], "backend": spec["backend"], "backend_version": device["onnxruntime"],
            "threads": device["threads"], "batch": spec["space"]["batch"], "dtype": spec["space"]["dtype"],
            "hwnas": spec["hwnas"], "torch": None, "onnxruntime": device["onnxruntime"],
            "platform": device["platform"], "date": device["date"], "space": spec["space"], "settings": settings,
            "keys": len(keys), "source": "bundle", "calibration": None,
            "call_overhead_ms": device.get("call_overhead_ms") or 0.0,
            "call_overhead_chunks_ms": device.get("call_overhead_chunks_ms")}
    table = LatencyTable(frame.drop(columns=["file", "input_shapes"]), meta, out)
    table.save(out)
    return table
