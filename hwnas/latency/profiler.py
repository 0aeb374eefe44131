"""Building a lookup table: enumerate the space's keys, time each on a backend, write as we go.

Keys are timed in chunks of up to `CHUNK`: each chunk's ops are exported once, then timed in
`timing.rounds` interleaved rounds (every key of the chunk once, with a fresh session, then again),
and a key's figures are the median of its rounds. Timed once each, one key after another, two
tables of the same device made ten minutes apart had per-op sums 3.8 % apart (median, 8.4 % at
most; README, issue #11.2): a key met whatever state the machine and its session happened to be in.
Where a backend's op timings carry a session call that a network pays only once (ONNX Runtime), that call
(`Backend.prepare_overhead`, an Identity on one float) is timed as one more item in the middle of every chunk's
rounds, and the sidecar's `call_overhead_ms` is its median over the chunks (`call_overhead_chunks_ms`). Timed
once, alone, before the keys, it met another state of the machine than they did: a quickstart table of
2026-12-07 recorded 4.4 µs while its own identity key (`skip_connect`, stride 1) timed 2.7 µs, and subtracted
from every key, the difference priced the cheapest network 18 % low after calibration (README, issue #11.6).
The CSV is rewritten atomically after every chunk, so an interrupted run leaves a valid table
of the keys done so far, and a rerun with the same settings measures only what is missing.
A rerun whose sidecar says another device, backend, thread count, space or timing setting
is refused: one table never mixes two measurement set-ups.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

import hwnas
from hwnas.errors import HwnasError
from hwnas.latency import darts_keys as dk
from hwnas.latency import resnet_keys as rk
from hwnas.latency.backends import Backend, BackendConfig, make_backend
from hwnas.latency.space import KEY_COLUMNS, OpKey, SpaceConfig
from hwnas.latency.stats import interleaved
from hwnas.latency.steal import StealMeter
from hwnas.latency.table import REQUIRED_COLUMNS, LatencyTable

GLUE_NOTE = ("darts: per-node add and per-cell concat are measured as keys; what the per-key sum still misses "
             "(overhead between ops, cross-op fusion) is left to hwnas calibrate")
CHUNK = 64  # keys whose rounds are interleaved together (and written together)
# Settings that must match for a rerun to resume a table rather than be refused.
_MATCH = ("device", "backend", "threads", "space", "settings")


@dataclass(frozen=True)
class ProfileConfig:
    space: SpaceConfig
    backend: BackendConfig


def space_keys(space: SpaceConfig) -> list[OpKey]:
    return dk.darts_keys(space) if space.space == "darts" else rk.resnet_keys(space)


def key_module(key: OpKey, space: SpaceConfig) -> tuple[nn.Module, list[tuple[int, ...]]]:
    """The eval-mode module a key times and its input shapes."""
    return dk.darts_module(key, space) if space.space == "darts" else rk.resnet_module(key, space)


def table_meta(cfg: ProfileConfig, backend: Backend, n_keys: int) -> dict:
    """The sidecar of a new table (calibration is added later by `hwnas calibrate`)."""
    from hwnas.info import environment

    env = environment()
    settings = cfg.backend.to_dict()
    settings.pop("backend"), settings.pop("threads")
    return {**backend.describe(), "backend": cfg.backend.name, "threads": cfg.backend.threads,
            "batch": cfg.space.batch, "dtype": cfg.space.dtype, "torch": env["torch"], "hwnas": hwnas.__version__,
            "onnxruntime": env["onnxruntime"], "python": env["python"], "platform": env["platform"],
            "cpu": env["cpu"], "cpu_model": env["cpu_model"], "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "space": cfg.space.to_dict(), "settings": settings, "keys": n_keys, "glue": GLUE_NOTE, "calibration": None}


def _check_resumable(old: dict, new: dict, out: Path) -> None:
    for field in _MATCH:
        if old.get(field) != new.get(field):
            raise HwnasError(f"{out} was measured with {field}={old.get(field)!r}, this run has "
                             f"{new.get(field)!r}; choose another --out (tables never mix set-ups)")


def profile(cfg: ProfileConfig, out: str | Path, backend: Backend | None = None,
            on_progress: Callable[[int, int, OpKey, bool], None] | None = None) -> LatencyTable:
    """Measure every key of the space into `out` (CSV + sidecar), resuming a partial table.

    `on_progress(done, total, key, measured)` is called after each key (measured=False: skipped, already in the table).
    """
    out = Path(out)
    backend = backend or make_backend(cfg.backend)
    keys = space_keys(cfg.space)
    meta = table_meta(cfg, backend, len(keys))
    rows: list[dict] = []
    if out.exists():
        old = LatencyTable.load(out)
        _check_resumable(old.meta, meta, out)
        meta["date"] = old.meta.get("date", meta["date"])
        meta["calibration"] = old.meta.get("calibration")
        meta["call_overhead_ms"] = old.meta.get("call_overhead_ms")
        meta["call_overhead_chunks_ms"] = old.meta.get("call_overhead_chunks_ms")
        rows = old.frame.to_dict("records")
    done = {OpKey(*(r[c] for c in KEY_COLUMNS)) for r in rows}
    todo = [key for key in keys if key not in done]
    overhead_thunk = backend.prepare_overhead()
    # the call overhead, timed among each chunk's keys (its median over the chunks); a table resumed from an
    # older sidecar without the per-chunk figures counts its single value as one chunk
    overheads = list(meta.get("call_overhead_chunks_ms") or ([meta["call_overhead_ms"]]
                                                             if meta.get("call_overhead_ms") is not None else []))
    if overhead_thunk is None:
        meta["call_overhead_ms"] = meta.get("call_overhead_ms") or 0.0
    elif not todo and not overheads:  # nothing left to time among: timed alone
        meta["call_overhead_ms"] = backend.call_overhead().p50_ms
    table = LatencyTable(pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(REQUIRED_COLUMNS)), meta, out)
    table.save_meta(out)  # the sidecar first: a crash after the first rows still leaves a loadable table
    for i, key in enumerate((k for k in keys if k in done), 1):
        if on_progress:
            on_progress(i, len(keys), key, False)
    n_done = len(keys) - len(todo)
    meter = StealMeter()   # the hypervisor's steal over this pass's timing (steal.py)
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]
        # the chunk's keys timed in interleaved rounds (a fresh session each): see stats.interleaved
        thunks = [backend.prepare_key(key, cfg.space) for key in chunk]
        mid = len(thunks) // 2
        if overhead_thunk is not None:
            thunks.insert(mid, overhead_thunk)
        timed = interleaved(thunks, cfg.backend.timing)
        if overhead_thunk is not None:
            overheads.append(timed.pop(mid).p50_ms)
            meta["call_overhead_chunks_ms"] = overheads
            meta["call_overhead_ms"] = float(np.median(overheads))
        meta["steal_pct"] = meter.pct()
        for key, stats in zip(chunk, timed):
            rows.append({**key._asdict(), **stats.row()})
            n_done += 1
            if on_progress:
                on_progress(n_done, len(keys), key, True)
        table = LatencyTable(pd.DataFrame(rows), meta, out)
        table.save(out)
    if not out.exists():
        table.save(out)
    return LatencyTable.load(out)
