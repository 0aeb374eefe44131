"""One definition per device (issue #11): the call overhead taken off each key, the calibration's choice,
the measurement set-up shared by tables, `export` and `hwnas measure`."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hwnas_cli.app import app
from typer.testing import CliRunner

from hwnas.errors import HwnasError
from hwnas.latency import darts_keys as dk
from hwnas.latency.calibrate import choose, metrics
from hwnas.latency.measure import measurement, onnx_input_shape
from hwnas.latency.table import LatencyTable
from hwnas.spaces.genotype import DARTS_V2
from tests.cli_helpers import fails_cleanly, ok
from tests.test_latency_table import TINY, synthetic

runner = CliRunner()


def test_call_overhead_is_taken_off_each_key_and_paid_once():
    t = synthetic(latency=lambda k: 1.0)
    c = 0.25
    with_overhead = LatencyTable(t.frame, {**t.meta, "call_overhead_ms": c})
    keys = dk.genotype_keys(TINY, DARTS_V2)
    # each key: 1 − c; the network: one call, c
    assert with_overhead.predict(DARTS_V2) == pytest.approx(len(keys) * (1.0 - c) + c)
    assert with_overhead.predict(DARTS_V2) == pytest.approx(t.predict(DARTS_V2) - (len(keys) - 1) * c)
    assert with_overhead.breakdown(DARTS_V2)["fixed"] >= c
    # a key faster than the call (timing noise) costs 0, never a negative amount
    tiny = LatencyTable(t.frame, {**t.meta, "call_overhead_ms": 2.0})
    assert tiny.predict(DARTS_V2) == pytest.approx(2.0)
    assert float(tiny.edge_costs().min()) == 0.0


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "x"])
def test_bad_call_overhead_is_refused(bad):
    t = synthetic()
    with pytest.raises((HwnasError, ValueError)):
        LatencyTable(t.frame, {**t.meta, "call_overhead_ms": bad})


def _f(mape, rho):
    return {"mape_pct": mape, "spearman": rho}


def test_calibration_keeps_the_sum_when_it_predicts_best_and_never_ranks_worse():
    assert choose({"sum": _f(3.0, 0.9), "linear": _f(4.0, 0.9), "per-kind": _f(5.0, 0.95)}) == "sum"
    assert choose({"sum": _f(30.0, 0.9), "linear": _f(4.0, 0.9), "per-kind": _f(3.0, 0.95)}) == "per-kind"
    # the per-kind fit errs least but ranks worse than the sum: the linear fit (same ranking) is kept
    assert choose({"sum": _f(30.0, 0.9), "linear": _f(4.0, 0.9), "per-kind": _f(3.0, 0.7)}) == "linear"
    assert choose({"sum": _f(30.0, 0.9), "linear": _f(4.0, 0.5), "per-kind": _f(3.0, 0.7)}) == "sum"
    # a positive slope is a monotone map of the sum: its ranking is the sum's, whatever the folds' ρ says
    # (the mobile 8×8 table: held-out ρ 0.899 vs the sum's 0.914, MAPE 3.9 % vs 20.9 %)
    figs = {"sum": _f(20.9, 0.914), "linear": _f(3.9, 0.899), "per-kind": _f(3.6, 0.899)}
    assert choose(figs, linear_slope=0.8) == "linear" and choose(figs, linear_slope=-0.1) == "sum"


def test_a_fit_with_more_parameters_must_beat_a_simpler_one_by_more_than_one_standard_error():
    se = lambda mape, rho, err: {"mape_pct": mape, "spearman": rho, "mape_se_pct": err}
    # the quickstart's 12 networks: per-kind 4.17 % against linear 4.28 %, well within one SE: linear is kept
    figs = {"sum": se(18.3, 0.79, 3.0), "linear": se(4.28, 0.797, 0.9), "per-kind": se(4.17, 0.853, 0.8),
            "linear+params": se(4.33, 0.804, 0.9)}
    assert choose(figs, linear_slope=0.8) == "linear"
    # better by more than its SE: the richer fit is worth its parameters
    figs["per-kind"] = se(2.0, 0.853, 0.3)
    assert choose(figs, linear_slope=0.8) == "per-kind"
    # linear+params (3 parameters) is preferred to per-kind (4+) when the two are within one SE
    figs["linear+params"] = se(2.2, 0.86, 0.3)
    assert choose(figs, linear_slope=0.8) == "linear+params"
    # the SE as metrics() computes it: the sample std of the relative errors over √n, in %
    m = metrics(np.array([11.0, 18.0, 33.0, 39.0]), np.array([10.0, 20.0, 30.0, 40.0]))
    rel = np.array([0.1, 0.1, 0.1, 0.025])
    assert m["mape_se_pct"] == pytest.approx(100 * rel.std(ddof=1) / 2)


def test_measurement_is_the_tables_own_setup():
    t = synthetic(backend="mobile")
    t.meta["threads"] = 1
    t.meta["settings"] = {"graph_optimization": "basic", "exporter": "dynamo", "opset": 18,
                          "timing": {"budget_s": 0.1, "warmup_runs": 7, "blocks": 3}}
    cfg, batch = measurement(t)
    assert (cfg.name, cfg.threads, cfg.graph_opt, batch) == ("mobile", 1, "basic", TINY.batch)
    assert cfg.timing.warmup_runs == 7 and cfg.timing.blocks == 3 and cfg.timing.budget_s == 0.5
    for kw, match in (({"threads": 2}, "threads 1"), ({"batch": 9}, "batch"), ({"device": "ort-cpu"}, "contradicts")):
        with pytest.raises(HwnasError, match=match):
            measurement(t, **kw)
    cfg, batch = measurement(None, "mobile")
    assert (cfg.threads, batch) == (1, 1)


def _tiny_onnx(tmp_path, name="m.onnx"):
    import torch

    from hwnas.export import export_onnx_dynamic

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)

        def forward(self, x):
            return self.conv(x).flatten(1)

    path = tmp_path / name
    export_onnx_dynamic(Net(), (1, 8, 8), path)
    return path


def test_onnx_input_shape_takes_the_batch_for_a_dynamic_dimension(tmp_path):
    path = _tiny_onnx(tmp_path)
    assert onnx_input_shape(path, 5) == (5, 1, 8, 8)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(HwnasError, match="not an ONNX model"):
        onnx_input_shape(tmp_path / "junk.onnx", 1)


def test_hwnas_measure_times_a_file_and_refuses_bad_input(tmp_path):
    path = _tiny_onnx(tmp_path)
    text = " ".join(ok(runner.invoke(app, ["measure", str(path), "--device", "mobile"])).split())
    assert "ms median" in text and "mobile, 1 thread(s), batch 1, input 1x1x8x8" in text
    fails_cleanly(runner.invoke(app, ["measure", str(tmp_path / "none.onnx")]), "no ONNX file")
    fails_cleanly(runner.invoke(app, ["measure", str(path), "--device", "cpu"]), "times PyTorch modules")
    fails_cleanly(runner.invoke(app, ["measure", str(path), "--device", "mobile", "--threads", "3"]), "1 thread")


def test_export_of_a_genotype_takes_the_tables_network_and_measures_as_it(tmp_path):
    space = dict(TINY.to_dict(), input_h=8, input_w=8, in_channels=1, num_classes=10, batch=1)
    from hwnas.latency.space import SpaceConfig

    t = synthetic(space=SpaceConfig.from_dict(space), backend="mobile", device="here")
    t.meta.update(threads=1, call_overhead_ms=0.0)
    t.save(tmp_path / "t.csv")
    out = tmp_path / "g.onnx"
    ok(runner.invoke(app, ["export", "--genotype", str(DARTS_V2), "--table", str(tmp_path / "t.csv"),
                           "--out", str(out)]))
    report = json.loads((tmp_path / "g.onnx.json").read_text())
    assert report["exporter"] == "torch.onnx.export(dynamo=True)"   # a table that names no exporter: dynamo
    m = report["measured"]
    assert (m["backend"], m["threads"], m["batch"]) == ("mobile", 1, 1) and m["as_table"] == str(tmp_path / "t.csv")
    assert report["predicted_latency_ms"][str(tmp_path / "t.csv")] == pytest.approx(t.predict(DARTS_V2), rel=1e-4)
    # the exported network is the table's (3 cells of 4 channels), not the CLI's 8 × 16 default
    assert report["params"] < 20_000
    fails_cleanly(runner.invoke(app, ["export", "--genotype", str(DARTS_V2), "--table", str(tmp_path / "t.csv"),
                                      "--layers", "8", "--out", str(tmp_path / "h.onnx")]), "--layers 8", "layers 3")
    assert np.isfinite(m["p50_ms"]) and m["p50_ms"] > 0
    # timed beside the table's own costliest ops: how fast the machine ran against the table (uncalibrated: 1.0)
    s = m["machine_speed"]
    assert s["keys"] == 6 and len(s["per_round"]) >= 3 and s["calibration"] == 1.0
    assert s["relative"] == pytest.approx(np.median(s["per_round"])) and s["p50_at_calibration_speed_ms"] > 0


@pytest.mark.slow
def test_a_calibrated_table_predicts_what_hwnas_measure_measures(tmp_path):
    """End to end on a tiny space: profile, calibrate, export held-out networks, time them with `hwnas measure`."""
    import random

    from hwnas.latency.calibrate import random_architecture

    table = tmp_path / "t.csv"
    # the TorchScript exporter (recorded in the table, so calibrate's networks and export use it too): 0.3 s an
    # export against 1.5–6 s for dynamo, 188 → 57 s for this test alone; the default dynamo tables are profiled and
    # calibrated in tests/test_latency_cli.py
    args = ["--channels", "4", "--layers", "3", "--budget", "0.02", "--exporter", "torchscript"]
    ok(runner.invoke(app, ["profile", "--device", "mobile", "--space", "darts", *args, "--out", str(table)]))
    ok(runner.invoke(app, ["calibrate", "--table", str(table), "--samples", "8", "--folds", "4"]))
    lut = LatencyTable.load(table)
    assert 0 < lut.call_overhead_ms < 0.5
    # the calibration's network of the most kernels, recorded so that another machine can tell it fuses otherwise
    ref = lut.meta["calibration"]["kernel_reference"]
    assert lut.kernel_mismatch() is None and ref["kernels"] == lut.kernels(ref["architecture"]) > 0
    rng, errors, texts = random.Random(99), [], []
    for i in range(3):
        g = random_architecture(lut.space, rng)
        out = tmp_path / f"g{i}.onnx"
        ok(runner.invoke(app, ["export", "--genotype", str(g), "--table", str(table), "--out", str(out),
                               "--no-measure"]))   # timed by `hwnas measure` next
        # exported as the table's ops and its calibration's networks were (checked at batch 1 and 5: dynamic batch)
        assert json.loads(Path(f"{out}.json").read_text())["exporter"] == "torch.onnx.export(dynamo=False)"
        text = " ".join(ok(runner.invoke(app, ["measure", str(out), "--table", str(table)])).split())
        measured = float(text.split(": ", 1)[1].split(" ms median")[0])
        # under `pytest -n auto` the other worker's load comes and goes: where the machine ran the table's own
        # ops at another speed than at calibration, measure says so and gives the time at the calibration's
        # speed, the figure the prediction is for (CI failed here once, reading 1.3× faster, without it)
        if "at the calibration's speed" in text:
            measured = float(text.split(" ms at the calibration's speed")[0].rsplit(" ", 1)[1])
        errors.append(abs(lut.predict(g) - measured) / measured)
        texts.append(text)
    # the plain per-op sum of this space was off by 4–5× before the call overhead came off; a loose bound
    # here (CI machines are noisy), the real figures are benchmarks/latency_holdout.py's
    assert float(np.median(errors)) < 0.25, (errors, texts, lut.meta.get("calibration", {}).get("correction"))


@pytest.mark.slow
def test_whole_networks_are_timed_as_applications_call_them_and_ops_bound(monkeypatch):
    """ORT on the CPU: a whole network (calibrate, measure, export) is timed through `sess.run(None, feeds)` — what an
    application and a user's own loop call — an op alone through IO binding (its session call taken off)."""
    from hwnas.latency.backends import BackendConfig, OrtBackend, identity_onnx
    from hwnas.latency.stats import TimingConfig

    backend = OrtBackend(BackendConfig("ort-cpu", 1, timing=TimingConfig(warmup_runs=1, warmup_s=0.0,
                                                                         budget_s=0.001, min_runs=3, max_runs=5)))
    calls = {"run": 0, "run_with_iobinding": 0}
    real = backend.ort.InferenceSession

    class Counted:
        def __init__(self, *a, **k):
            self.sess = real(*a, **k)

        def __getattr__(self, name):
            attr = getattr(self.sess, name)
            if name in calls:
                def counted(*a, **k):
                    calls[name] += 1
                    return attr(*a, **k)
                return counted
            return attr

    monkeypatch.setattr(backend.ort, "InferenceSession", Counted)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU()).eval()
    backend.measure(net, [(1, 1, 8, 8)])
    assert calls["run"] > 0 and calls["run_with_iobinding"] == 0
    calls.update(run=0)
    backend.measure_onnx(identity_onnx(), [(1,)])
    assert calls["run"] > 0 and calls["run_with_iobinding"] == 0
    calls.update(run=0)
    backend.prepare(net, [(1, 1, 8, 8)])()
    backend.prepare_overhead()()
    assert calls["run"] == 0 and calls["run_with_iobinding"] > 0


def test_a_keys_onnx_model_is_exported_once_per_process(monkeypatch):
    """`export` and `measure` re-time a table's reference keys beside every network: their models are kept, not
    re-exported for each network (the last `KEY_MODELS` keys)."""
    from hwnas.latency import backends
    from hwnas.latency.backends import BackendConfig, OrtBackend

    monkeypatch.setattr(backends, "_KEY_MODELS", backends.OrderedDict())
    monkeypatch.setattr(backends, "KEY_MODELS", 2)
    backend = OrtBackend(BackendConfig("mobile", 1))
    exported = []
    real = backend.onnx_model
    monkeypatch.setattr(backend, "onnx_model", lambda *a, **k: exported.append(a) or real(*a, **k))
    keys = dk.darts_keys(TINY)[:3]
    for key in (keys[0], keys[0], keys[1], keys[0], keys[2], keys[1]):
        assert callable(backend.prepare_key(key, TINY))
    # keys[0] kept (used again before keys[2] came), keys[1] pushed out by keys[2] and exported again
    assert len(exported) == 4
    stats = backend.prepare_key(keys[1], TINY)()
    assert stats.p50_ms > 0 and len(exported) == 4
