"""The bookkeeping of benchmarks/gpu_check.sh: stage records, the tables' comparison, the final summary.

    python benchmarks/gpu_check_report.py init RESULTS_DIR BUDGET_S
    python benchmarks/gpu_check_report.py record RESULTS_DIR STAGE STATUS RC SECONDS COMMAND
    python benchmarks/gpu_check_report.py tables RESULTS_DIR OUT.json TABLE.csv [TABLE.csv ...]
    python benchmarks/gpu_check_report.py pytest RESULTS_DIR JUNIT.xml OUT.json
    python benchmarks/gpu_check_report.py summary RESULTS_DIR

Everything lands in RESULTS_DIR/gpu_check.json (stages, environment, figures) beside the stages' own
files (gpu_check-*.json). Only the standard library, numpy and pandas at module level: the summary must
still print when torch or hwnas is what failed.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _state_path(res: Path) -> Path:
    return res / "gpu_check.json"


def _load(res: Path) -> dict:
    p = _state_path(res)
    return json.loads(p.read_text()) if p.exists() else {"stages": []}


def _save(res: Path, state: dict) -> None:
    res.mkdir(parents=True, exist_ok=True)
    _state_path(res).write_text(json.dumps(state, indent=2) + "\n")


def init(res: Path, budget_s: str) -> None:
    """A fresh record: date, the total budget, the environment (also gpu_check-info.json)."""
    state = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": float(budget_s), "stages": []}
    try:
        from hwnas.info import backends, environment

        env = environment()
        state["environment"] = env
        res.mkdir(parents=True, exist_ok=True)
        (res / "gpu_check-info.json").write_text(json.dumps({**env, "backends": backends(env)}, indent=2) + "\n")
    except Exception as e:  # noqa: BLE001 - a broken install is a finding to record, not a reason to stop
        state["environment_error"] = f"{type(e).__name__}: {e}"
    _save(res, state)


def record(res: Path, stage: str, status: str, rc: str = "", seconds: str = "", command: str = "") -> None:
    state = _load(res)
    state["stages"].append({"stage": stage, "status": status, "rc": None if rc == "" else int(rc),
                            "seconds": None if seconds == "" else round(float(seconds), 1), "command": command})
    _save(res, state)


def _table_figures(csv: Path) -> dict:
    """Keys, the sum and median of the per-key medians, and the calibration's figures of one table."""
    import pandas as pd

    frame = pd.read_csv(csv)
    meta = json.loads(Path(str(csv) + ".json").read_text())
    out = {"table": str(csv), "device": meta.get("device"), "backend": meta.get("backend"),
           "cuda_graphs": meta.get("settings", {}).get("cuda_graphs"), "keys": len(frame),
           "sum_p50_ms": float(frame["p50_ms"].sum()), "median_p50_ms": float(frame["p50_ms"].median()),
           "noisy_keys": int(frame["noisy"].astype(str).str.lower().isin(("true", "1")).sum())
           if "noisy" in frame.columns else None}
    cal = meta.get("calibration")
    if cal:
        chosen = cal.get("chosen")
        figs = cal.get("figures", {})
        out["calibration"] = {"samples": len(cal.get("samples", [])) if isinstance(cal.get("samples"), list)
                              else cal.get("samples"), "chosen": chosen,
                              "sum": figs.get("sum"), "chosen_figures": figs.get(chosen)}
    return out


def tables(res: Path, out: str, *csvs: str) -> None:
    """Each table's figures; with two tables (graphs, eager), the per-key ratio eager / graph."""
    import numpy as np
    import pandas as pd

    found = [Path(c) for c in csvs if Path(c).exists() and Path(c + ".json").exists()]
    report = {"tables": [_table_figures(c) for c in found]}
    if len(found) == 2:
        a, b = (pd.read_csv(c) for c in found)
        keys = [c for c in ("op", "c_in", "c_out", "h", "w", "stride", "batch", "dtype") if c in a.columns]
        m = a.merge(b, on=keys, suffixes=("_a", "_b"))
        ratio = (m["p50_ms_b"] / m["p50_ms_a"]).to_numpy()
        report["ratio_second_over_first"] = {
            "keys": len(m), "median": float(np.median(ratio)), "p10": float(np.percentile(ratio, 10)),
            "p90": float(np.percentile(ratio, 90)), "sum_ratio": float(m["p50_ms_b"].sum() / m["p50_ms_a"].sum())}
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    for t in report["tables"]:
        print(f"{t['table']}: {t['keys']} keys, sum of medians {t['sum_p50_ms']:.3f} ms, median key "
              f"{t['median_p50_ms']:.4f} ms, cuda_graphs={t['cuda_graphs']}")
    if "ratio_second_over_first" in report:
        r = report["ratio_second_over_first"]
        print(f"{found[1].name} / {found[0].name} per key: median {r['median']:.2f}x (p10 {r['p10']:.2f}, "
              f"p90 {r['p90']:.2f}); sums {r['sum_ratio']:.2f}x")
    print(f"saved {out}")


def pytest_counts(res: Path, junit: str, out: str) -> None:
    import xml.etree.ElementTree as ET

    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{c.get('classname')}::{c.get('name')}" for s in suites for c in s.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    Path(out).write_text(json.dumps({**counts, "failed_tests": failed}, indent=2) + "\n")
    print(f"pytest -m gpu: {counts['passed']} passed, {counts['failures'] + counts['errors']} failed, "
          f"{counts['skipped']} skipped; saved {out}")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def summary(res: Path) -> None:
    """The compact summary of everything the check measured (also stored as `figures` in gpu_check.json)."""
    state = _load(res)
    env = state.get("environment", {})
    gpu = ", ".join(env.get("cuda_devices", [])) or "no CUDA device"
    lines = [(f"GPU check {state.get('date', '?')}: {gpu}; torch {env.get('torch')} (CUDA build "
              f"{env.get('torch_cuda_build')}), hwnas {env.get('hwnas')}, {env.get('cpu_count')} CPU cores")]
    total = sum(s["seconds"] or 0 for s in state["stages"])
    lines.append(f"{'stage':22} {'status':34} {'seconds':>8}")
    for s in state["stages"]:
        lines.append(f"{s['stage']:22} {s['status'][:34]:34} {_fmt(s['seconds'], '8.1f'):>8}")
    lines.append(f"{'(all stages)':22} {'':34} {total:8.1f}")
    figures: dict = {}
    for name in ("gpu_check-tables.json", "gpu_check-cpu-smoke-tables.json"):
        t = _read(res / name)
        if not t:
            continue
        figures[name] = t
        for tab in t["tables"]:
            cal = tab.get("calibration") or {}
            chosen = cal.get("chosen_figures") or {}
            lines.append(f"table {Path(tab['table']).name}: {tab['keys']} keys ({tab['noisy_keys']} noisy), "
                         f"sum {tab['sum_p50_ms']:.3f} ms; calibration ({cal.get('samples')} nets): "
                         f"{cal.get('chosen')} MAPE {_fmt(chosen.get('mape_pct'), '.1f')} %, "
                         f"Spearman {_fmt(chosen.get('spearman'), '.3f')}")
        r = t.get("ratio_second_over_first")
        if r:
            lines.append(f"  eager / CUDA graph per key: median {r['median']:.2f}x (p10 {r['p10']:.2f}, "
                         f"p90 {r['p90']:.2f}), sum {r['sum_ratio']:.2f}x")
    for name in ("gpu_check-search-cuda.json", "gpu_check-cpu-smoke-search.json"):
        s = _read(res / name)
        if not s:
            continue
        c = s.get("config", {})
        lines.append(f"search step ({name}): {c.get('dataset')}, {c.get('layers')} cells, {c.get('channels')} "
                     f"channels, batch {c.get('batch')}, median of {c.get('steps')} steps")
        figures[name] = s["rows"]
        ref = {r["device"]: r for r in s["rows"] if r.get("impl") == "reference" and "error" not in r}
        for r in s["rows"]:
            what = f"  {r['device']:6} {r['impl']:9}"
            if "error" in r:
                lines.append(f"{what} FAILED: {r['error'][:80]}")
                continue
            base = ref.get(r["device"])
            speed = f"{base['median_ms'] / r['median_ms']:.2f}x ref" if base else ""
            lines.append(f"{what} {'bf16' if r['amp'] else 'fp32'} {'CL  ' if r['channels_last'] else 'NCHW'} "
                         f"{r['median_ms']:9.1f} ms/step  epoch {_fmt(r.get('epoch_s'), '.2f')} s  "
                         f"peak RSS {r['peak_rss_mib']:.0f} MiB (step {r['peak_rss_mib'] - r['rss_before_steps_mib']:+.0f})"
                         + (f"  CUDA max allocated {r['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in r else "")
                         + f"  {speed}")
    p = _read(res / "gpu_check-pytest.json")
    if p:
        figures["pytest"] = p
        lines.append(f"pytest -m gpu: {p['passed']} passed, {p['failures'] + p['errors']} failed, "
                     f"{p['skipped']} skipped" + (f" ({', '.join(p['failed_tests'])})" if p["failed_tests"] else ""))
    print("\n".join(lines))
    state["figures"], state["summary"] = figures, lines
    _save(res, state)


def main(argv: list[str]) -> None:
    cmd, res, rest = argv[0], Path(argv[1]), argv[2:]
    {"init": init, "record": record, "tables": tables, "pytest": pytest_counts, "summary": summary}[cmd](res, *rest)


if __name__ == "__main__":
    main(sys.argv[1:])
