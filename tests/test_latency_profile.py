import dataclasses
import json
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.latency import darts_keys as dk
from hwnas.latency.backends import Backend, BackendConfig, OrtBackend, make_backend, resolve
from hwnas.latency.bundle import import_bundle, write_bundle
from hwnas.latency.calibrate import calibrate
from hwnas.latency.onnx_io import random_feeds
from hwnas.latency.profiler import ProfileConfig, profile, space_keys
from hwnas.latency.space import OpKey, SpaceConfig
from hwnas.latency.stats import UNSETTLED_SHARE, TimingConfig, TimingStats
from hwnas.latency.table import LatencyTable

TINY = SpaceConfig(channels=4, layers=3, batch=1)
FAST = TimingConfig(warmup_runs=2, warmup_s=0.0, budget_s=0.002, min_runs=3, max_runs=20)


class Counting(Backend):
    """Pretends to time: 1 ms per key; counts calls; can fail after a number of keys (an interrupted run)."""

    def __init__(self, cfg, fail_after=None):
        super().__init__(cfg)
        self.calls, self.fail_after = 0, fail_after

    def describe(self):
        return {"device": "fake-cpu", "backend_version": "0"}

    def measure(self, module, shapes, dtype="float32"):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return TimingStats(1.0, 0.9, 1.1, 1.0, 5, 0)


def test_rerun_resumes_and_skips_measured_keys(tmp_path, monkeypatch):
    from hwnas.latency import profiler

    monkeypatch.setattr(profiler, "CHUNK", 8)       # keys are written a chunk at a time
    two = dataclasses.replace(FAST, rounds=2)
    cfg = ProfileConfig(TINY, BackendConfig("cpu", 1, timing=two))
    out = tmp_path / "t.csv"
    first = Counting(cfg.backend, fail_after=20)     # 2 rounds per key: 20 calls = 2 full chunks and a half
    with pytest.raises(KeyboardInterrupt):
        profile(cfg, out, backend=first)
    assert len(LatencyTable.load(out)) == 8          # the interrupted run left a valid partial table: chunk 1
    second = Counting(cfg.backend)
    skipped = []
    table = profile(cfg, out, backend=second, on_progress=lambda i, n, k, measured: skipped.append(not measured))
    assert second.calls == 2 * (48 - 8) and sum(skipped) == 8
    assert len(table) == 48 and set(table.keys()) == set(space_keys(TINY))
    third = Counting(cfg.backend)
    profile(cfg, out, backend=third)
    assert third.calls == 0


class Disturbed(Backend):
    """Every key takes 1 ms, except while the machine is busy: calls 10–29 of the run measure 2 ms."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls = 0

    def describe(self):
        return {"device": "fake-cpu", "backend_version": "0"}

    def measure(self, module, shapes, dtype="float32"):
        self.calls += 1
        t = 2.0 if 10 <= self.calls < 30 else 1.0
        return TimingStats(t, t, t, t, 5, 0)


@pytest.mark.parametrize(("rounds", "extra"), [(1, 0), (3, 0), (3, 3)])
def test_interleaved_rounds_outvote_a_disturbed_stretch(tmp_path, rounds, extra):
    """A stretch of busy machine hits 20 consecutive keys when each key is timed once; in interleaved rounds it
    hits one round of each of them, and the median of three rounds is the undisturbed time. The keys that met it
    say so in their spread, or, when that is over a quarter of the keys and extra rounds are allowed, get more
    rounds until they agree."""
    timing = dataclasses.replace(FAST, rounds=rounds, extra_rounds=extra)
    backend = Disturbed(BackendConfig("cpu", 1, timing=timing))
    table = profile(ProfileConfig(TINY, BackendConfig("cpu", 1, timing=timing)), tmp_path / "t.csv", backend=backend)
    n = len(table.frame)
    wrong = int((table.frame["p50_ms"] > 1.5).sum())
    assert wrong == (20 if rounds == 1 else 0)
    if rounds == 3 and not extra:
        assert (table.frame["spread"] > 0).sum() == 20 and backend.calls == 3 * n
    if extra:   # 20 of the keys disagree after three rounds (2, 1, 1 ms), still after four (IQR 0.25 ms of 1):
        assert 20 > n * UNSETTLED_SHARE   # a fifth round of every key settles them all
        assert backend.calls == 5 * n and (table.frame["spread"] > 0).sum() == 0


class SlowStart(Backend):
    """A session call of 0.5 ms that every key pays beside its own 0.5 ms, on a machine twice as slow for its first
    three calls (the stretch a call overhead timed alone, before the keys, would have met)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls = 0

    def describe(self):
        return {"device": "fake-cpu", "backend_version": "0"}

    def _time(self, ms):
        self.calls += 1
        t = ms * (2.0 if self.calls <= 3 else 1.0)
        return TimingStats(t, t, t, t, 5, 0)

    def measure(self, module, shapes, dtype="float32"):
        return self._time(1.0)

    def prepare_overhead(self):
        return lambda: self._time(0.5)


def test_call_overhead_is_timed_among_each_chunks_keys(tmp_path, monkeypatch):
    from hwnas.latency import profiler

    monkeypatch.setattr(profiler, "CHUNK", 16)
    timing = dataclasses.replace(FAST, rounds=3, extra_rounds=0)
    cfg = ProfileConfig(TINY, BackendConfig("cpu", 1, timing=timing))
    backend = SlowStart(cfg.backend)
    assert backend.call_overhead().p50_ms == 1.0   # timed alone, first: the slow stretch
    backend.calls = 0
    table = profile(cfg, tmp_path / "t.csv", backend=backend)
    assert table.meta["call_overhead_chunks_ms"] == [0.5, 0.5, 0.5] and table.call_overhead_ms == 0.5
    assert backend.calls == 3 * (48 + 3)
    assert {table.lookup(k) for k in table.keys()} == {0.5}   # each key's own time: its p50 less the call


def test_combine_rounds_takes_median_and_counts_all():
    from hwnas.latency.stats import combine_rounds

    rounds = [TimingStats(1.0, 0.9, 1.2, 1.05, 10, 1, spread=0.01), TimingStats(3.0, 2.0, 4.0, 3.0, 10, 0),
              TimingStats(1.1, 1.0, 1.3, 1.1, 10, 2, spread=0.02)]
    c = combine_rounds(rounds, precision=0.05)
    assert (c.p50_ms, c.p10_ms, c.p90_ms, c.n, c.n_dropped) == (1.1, 1.0, 1.3, 30, 3)
    # spread: interquartile range of (1.0, 1.1, 3.0) over the median = (2.05 - 1.05) / 1.1
    assert c.spread == pytest.approx(1.0 / 1.1) and c.noisy
    assert combine_rounds(rounds[:1], 0.05) is rounds[0]


def test_rerun_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "t.csv"
    profile(ProfileConfig(TINY, BackendConfig("cpu", 1, timing=FAST)), out, backend=Counting(None))
    with pytest.raises(HwnasError, match="threads"):
        profile(ProfileConfig(TINY, BackendConfig("cpu", 2, timing=FAST)), out,
                backend=Counting(BackendConfig("cpu", 2)))
    with pytest.raises(HwnasError, match="space"):
        profile(ProfileConfig(SpaceConfig(channels=6, layers=3, batch=1), BackendConfig("cpu", 1, timing=FAST)), out,
                backend=Counting(None))


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", "ort-cpu", "mobile", "mobile-int8"])
def test_real_tiny_profile(tmp_path, device):
    threads, batch = resolve(device, 1, 1)
    cfg = ProfileConfig(TINY, BackendConfig(device, threads, exporter="torchscript", timing=FAST))
    table = profile(cfg, tmp_path / f"{device}.csv")
    assert set(table.keys()) == set(dk.darts_keys(TINY))
    assert (table.frame["p50_ms"] > 0).all() and (table.frame["p10_ms"] <= table.frame["p90_ms"]).all()
    meta = json.loads((tmp_path / f"{device}.csv.json").read_text())
    assert meta["backend"] == device and meta["threads"] == 1 and meta["space"]["channels"] == 4
    assert meta["device"] and meta["backend_version"] and meta["torch"] and meta["hwnas"] and meta["date"]


@pytest.mark.parametrize("exporter, op, c_in, c_out, hw, stride", [  # dynamo: ~1 s per op, so one op
    ("dynamo", "sep_conv_5x5", 4, 4, 8, 2), ("torchscript", "sep_conv_5x5", 4, 4, 8, 2),
    ("torchscript", dk.PRE_FR, 6, 4, 7, 2), ("torchscript", dk.CONCAT, 4, 16, 4, 1)])
def test_exported_op_matches_pytorch_in_onnxruntime(exporter, op, c_in, c_out, hw, stride):
    key = OpKey(op, c_in, c_out, hw, hw, stride, 2, "float32")
    module, shapes = dk.darts_module(key, TINY)
    for m in module.modules():  # non-trivial BN statistics, so folding BN into conv is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    backend = OrtBackend(BackendConfig("ort-cpu", 1, exporter=exporter, timing=FAST))
    import onnxruntime as ort

    sess = ort.InferenceSession(backend.onnx_model(module, shapes), backend.session_options())
    feeds = random_feeds(shapes, seed=3)
    with torch.no_grad():
        ref = module(*[torch.from_numpy(x) for x in feeds.values()]).numpy()
    np.testing.assert_allclose(sess.run(None, feeds)[0], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_bundle_runner_needs_only_onnxruntime_and_numpy(tmp_path):
    bundle = tmp_path / "bundle"
    write_bundle(TINY, BackendConfig("mobile", 1, exporter="torchscript", timing=FAST), bundle)
    assert len(list((bundle / "models").glob("k*.onnx"))) == 48 and (bundle / "models" / "identity.onnx").is_file()
    with pytest.raises(HwnasError, match="python run.py"):
        import_bundle(bundle, tmp_path / "x.csv")
    check = ("import runpy, sys; sys.argv = ['run.py']; runpy.run_path('run.py', run_name='__main__'); "
             "bad = [m for m in ('torch', 'hwnas', 'pandas', 'scipy') if m in sys.modules]; "
             "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", check], cwd=bundle, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    table = import_bundle(bundle, tmp_path / "imported.csv")
    assert set(table.keys()) == set(dk.darts_keys(TINY))
    again = LatencyTable.load(tmp_path / "imported.csv")
    assert again.backend == "mobile" and again.meta["source"] == "bundle" and again.meta["threads"] == 1
    assert 0 < again.call_overhead_ms < 1.0  # one session call, measured on the device by run.py
    assert again.meta["call_overhead_chunks_ms"] == [again.call_overhead_ms]   # among the one chunk's 48 models


@pytest.mark.slow
def test_calibrate_on_cpu_stores_a_correction_that_predict_uses(tmp_path):
    out = tmp_path / "t.csv"
    table = profile(ProfileConfig(TINY, BackendConfig("cpu", 1, timing=FAST)), out)
    cal = calibrate(table, samples=5, folds=5)
    assert set(cal.figures) == {"sum", "linear", "per-kind", "linear+params"} and cal.chosen in cal.figures
    for f in cal.figures.values():
        assert f["n"] == 5 + 2 and 0 <= f["within_10pct"] <= 1 and f["mape_pct"] >= 0
    again = LatencyTable.load(out)
    assert again.correction == cal.correction
    import random

    from hwnas.latency.calibrate import random_architecture

    g = random_architecture(TINY, random.Random(1))
    if cal.chosen != "sum":
        assert again.predict(g) != pytest.approx(again.predict(g, corrected=False))
    else:
        assert again.correction is None and again.predict(g) == again.predict(g, corrected=False)


def test_calibrate_refuses_another_device(tmp_path):
    out = tmp_path / "t.csv"
    profile(ProfileConfig(TINY, BackendConfig("cpu", 1, timing=FAST)), out, backend=Counting(None))
    with pytest.raises(HwnasError, match="calibrate where the table was measured"):
        calibrate(LatencyTable.load(out), samples=5)


def test_backend_resolution_errors():
    assert resolve("mobile", None, None) == (1, 1)
    with pytest.raises(HwnasError, match="1 thread and batch 1"):
        resolve("mobile-int8", 2, None)
    with pytest.raises(HwnasError, match="unknown --device"):
        resolve("npu", None, None)
    with pytest.raises(HwnasError, match="float16 needs a GPU"):
        resolve("cpu", 1, 1, "float16")


# ---- GPU backends: what can be checked without a GPU, and the real thing where there is one ----

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without a GPU")
def test_cuda_backend_without_gpu_is_a_clean_error():
    with pytest.raises(HwnasError, match="needs an NVIDIA GPU") as e:
        make_backend(BackendConfig("cuda", 1))
    assert "\n" not in str(e.value)


def test_tensorrt_missing_is_a_clean_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as if not installed
    with pytest.raises(HwnasError) as e:
        make_backend(BackendConfig("tensorrt", 1))
    assert str(e.value) == "TensorRT is not installed: pip install 'hwnas[tensorrt]' on a machine with an NVIDIA GPU"


def test_tensorrt_without_gpu_is_a_clean_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HwnasError, match="needs an NVIDIA GPU"):
        make_backend(BackendConfig("tensorrt", 1))


def _fake_trt(strongly_typed: bool, has_fp16: bool):
    """Enough of the tensorrt module to check the builder calls of TensorRT 10 and 11."""
    calls = {}
    flag_ns = types.SimpleNamespace(**({"STRONGLY_TYPED": 1} if strongly_typed else {}))
    builder_flag = types.SimpleNamespace(**({"FP16": "fp16"} if has_fp16 else {}))

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = size

        def set_flag(self, flag):
            calls.setdefault("flags", []).append(flag)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            return "network"

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            return b"plan"

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse(self, model):
            calls["parsed"] = model
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            return ("engine", plan)

    trt = types.SimpleNamespace(Logger=type("Logger", (), {"WARNING": 1, "__init__": lambda s, level: None}),
                                Builder=Builder, OnnxParser=Parser, Runtime=Runtime, BuilderFlag=builder_flag,
                                NetworkDefinitionCreationFlag=flag_ns,
                                MemoryPoolType=types.SimpleNamespace(WORKSPACE="ws"))
    return trt, calls


@pytest.mark.parametrize("version, strongly, fp16", [("10", True, True), ("11", True, False), ("8-like", False, True)])
def test_tensorrt_engine_build_handles_10_and_11(version, strongly, fp16):
    from hwnas.latency.gpu import build_engine

    trt, calls = _fake_trt(strongly, fp16)
    assert build_engine(trt, b"onnx", "float16") == ("engine", b"plan")
    assert calls["parsed"] == b"onnx"
    if strongly:  # precision comes from the ONNX types; no FP16 flag even where it still exists
        assert calls["network_flags"] == 1 << 1 and "flags" not in calls
    else:
        assert calls["network_flags"] == 0 and calls["flags"] == ["fp16"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backend_times_an_op():
    key = OpKey("sep_conv_3x3", 8, 8, 8, 8, 1, 4, "float32")
    module, shapes = dk.darts_module(key, TINY)
    stats = make_backend(BackendConfig("cuda", 1, timing=FAST)).measure(module, shapes)
    assert stats.p50_ms > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensorrt_backend_times_an_op():
    pytest.importorskip("tensorrt", reason="needs TensorRT (pip install 'hwnas[tensorrt]')")
    key = OpKey("sep_conv_3x3", 8, 8, 8, 8, 1, 4, "float16")
    module, shapes = dk.darts_module(key, TINY)
    stats = make_backend(BackendConfig("tensorrt", 1, timing=FAST)).measure(module, shapes, "float16")
    assert stats.p50_ms > 0


def test_rounds_default_is_one_rule():
    """`hwnas profile --rounds`, `hwnas.profile(rounds=…)` and TimingConfig share one default."""
    import inspect

    from cli import profile as cli_profile
    from hwnas import api

    default = TimingConfig().rounds
    assert inspect.signature(api.profile).parameters["rounds"].default == default
    assert inspect.signature(api.profile_setup).parameters["rounds"].default == default
    assert inspect.signature(cli_profile.profile).parameters["rounds"].default == default
