"""What every benchmark prints and stores first: the machine and the versions."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from hwnas.info import environment

RESULTS = Path(__file__).resolve().parent / "results"


def header() -> dict:
    env = environment()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  cpu: {env['cpu']} ({env['cpu_count']} cores, "
          f"{env['torch_threads']} torch threads)  gpu: {', '.join(env['cuda_devices']) or 'none'}")
    print(f"# torch {env['torch']}  onnxruntime {env['onnxruntime']}  hwnas {env['hwnas']}  python {env['python']}")
    return env


def summary(samples: list[float]) -> dict:
    """Median and 10th/90th percentiles of timing samples (seconds → milliseconds)."""
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=10) if len(ms) >= 2 else [ms[0]] * 9
    return {"median_ms": statistics.median(ms), "p10_ms": q[0], "p90_ms": q[-1], "n": len(ms)}


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"# saved {path.relative_to(RESULTS.parent.parent)}")
    return path
