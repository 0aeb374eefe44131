"""The GPU check's parts (issue #13.2 and .4): search_speed.py's options and memory figures, the report
helper of benchmarks/gpu_check.sh, and CUDA timing with and without CUDA graphs. Everything except the
last test runs on a CPU-only machine."""
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hwnas_cli.app import app
from typer.testing import CliRunner

from hwnas.errors import HwnasError
from hwnas.latency import darts_keys as dk
from hwnas.latency.backends import BackendConfig, make_backend
from hwnas.latency.measure import table_backend_config
from hwnas.latency.profiler import ProfileConfig, profile
from hwnas.latency.space import OpKey, SpaceConfig
from hwnas.latency.stats import TimingConfig

from .cli_helpers import fails_cleanly

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
TINY_RUN = ["--devices", "cpu", "--dataset", "synthetic:3x8x8", "--layers", "3", "--channels", "4", "--batch", "8",
            "--grads", "first", "--relaxes", "softmax", "--steps", "1", "--warmup", "0"]


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # search_speed imports its sibling _machine
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ss():
    return _load("search_speed")


def test_search_speed_cpu_one_step_writes_json(ss, tmp_path, monkeypatch):
    """The CPU path of the new options, end to end: one configuration in its own process, one step."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "ss.json"
    assert ss.main([*TINY_RUN, "--amp", "off", "--channels-last", "on", "--no-reference", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["config"] == {"dataset": "synthetic:3x8x8", "input": "3x8x8", "channels": 4, "layers": 3, "batch": 8,
                                "steps": 1, "warmup": 0, "amp": "off", "channels_last": "on"}
    assert report["environment"]["torch"] == torch.__version__
    (row,) = report["rows"]
    assert (row["device"], row["impl"], row["grad"], row["relax"]) == ("cpu", "optimised", "first", "softmax")
    assert row["amp"] is False and row["channels_last"] is True and row["torch_threads"] == 1
    assert row["n"] == 1 and row["median_ms"] > 0 and row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
    assert row["steps_per_epoch"] == 1 and row["epoch_s"] >= row["median_ms"] / 1e3  # the one step is the epoch
    assert 0 < row["rss_before_steps_mib"] <= row["peak_rss_mib"]
    assert "peak_cuda_mib" not in row and "error" not in row


def test_search_speed_rows_resolve_options_in_process(ss, monkeypatch):
    """The reference is per-edge NCHW float32; optimised 'auto' takes the device's defaults (CPU: no AMP,
    channels-last). In this process, so the synthetic-data patch is undone afterwards."""
    from hwnas.search import loop

    monkeypatch.setattr(loop, "load_dataset", loop.load_dataset)
    base = {"relax": "softmax", "grad": "first", "device": "cpu", "dataset": "synthetic:3x8x8", "steps": 1,
            "warmup": 1, "layers": 3, "channels": 4, "batch": 8}
    ref = ss.measure_one({**base, "impl": "reference"})
    opt = ss.measure_one({**base, "impl": "optimised", "amp": None, "channels_last": None})
    assert (ref["amp"], ref["channels_last"]) == (False, False)
    assert (opt["amp"], opt["channels_last"]) == (False, True)
    for row in (ref, opt):
        assert row["steps_per_epoch"] == 2 and row["epoch_s"] is not None and row["n"] == 1


def test_search_speed_grid_and_bad_options(ss):
    args = SimpleNamespace(dataset="synthetic:3x32x32", steps=1, warmup=0, layers=8, channels=16, batch=64,
                           devices="cuda", grads="first", relaxes="softmax", amp="on,off", channels_last="on,off",
                           no_reference=False, quick=False, partial_channels="")
    specs = ss.build_specs(args)
    assert sorted((s["impl"], s.get("amp"), s.get("channels_last")) for s in specs if s["impl"] == "optimised") == \
        sorted(("optimised", a, c) for a in (True, False) for c in (True, False))
    assert [s["impl"] for s in specs].count("reference") == 1
    assert all(s["device"] == "cuda" and s["layers"] == 8 and s["batch"] == 64 for s in specs)
    assert ss.synthetic_shape("synthetic:3x32x32") == (3, 32, 32) and ss.synthetic_shape("digits") is None
    for bad in ({"amp": "bf16"}, {"grads": "third"}):
        with pytest.raises(SystemExit):
            ss.build_specs(SimpleNamespace(**{**vars(args), **bad}))


def test_search_speed_failed_configuration_is_recorded(ss, tmp_path, monkeypatch):
    """One configuration failing does not stop the others; the JSON records it and the exit status says so."""
    calls = []

    def fake_run(spec, timeout):
        calls.append(spec["impl"])
        if spec["impl"] == "reference":
            return {**spec, "error": "RuntimeError: CUDA out of memory"}
        return {**spec, "amp": False, "channels_last": True, "median_ms": 2.0, "p10_ms": 2.0, "p90_ms": 2.0, "n": 1,
                "epoch_s": 0.002, "peak_rss_mib": 10.0, "rss_before_steps_mib": 9.0, "peak_cuda_mib": 5.0}

    monkeypatch.setattr(ss, "run_spec", fake_run)
    out = tmp_path / "ss.json"
    assert ss.main([*TINY_RUN, "--amp", "off", "--out", str(out)]) == 1
    rows = json.loads(out.read_text())["rows"]
    assert calls == ["optimised", "reference"] and [("error" in r) for r in rows] == [False, True]


def test_gpu_check_report_summarises_cuda_figures(tmp_path, capsys):
    """The summary gpu_check.sh prints, on the files a GPU run writes (made up here: no GPU to make them)."""
    rep = _load("gpu_check_report")
    rep.init(tmp_path, "450")
    rep.record(tmp_path, "search", "ok", "0", "12.5", "python benchmarks/search_speed.py ...")
    rep.record(tmp_path, "pytest-gpu", "timeout after 60s", "124", "60.0", "python -m pytest -m gpu")
    rep.record(tmp_path, "table-eager", "skipped: no CUDA")
    row = {"device": "cuda", "grad": "first", "relax": "softmax", "n": 20, "p10_ms": 1, "p90_ms": 1,
           "epoch_s": 0.9, "peak_rss_mib": 900.0, "rss_before_steps_mib": 880.0, "peak_cuda_mib": 512.0}
    rows = [{**row, "impl": "optimised", "amp": True, "channels_last": True, "median_ms": 20.0},
            {**row, "impl": "reference", "amp": False, "channels_last": False, "median_ms": 60.0},
            {"device": "cuda", "impl": "optimised", "error": "timed out after 40 s"}]
    (tmp_path / "gpu_check-search-cuda.json").write_text(json.dumps({"config": {"layers": 8}, "rows": rows}))
    (tmp_path / "gpu_check-pytest.json").write_text(json.dumps(
        {"tests": 3, "failures": 1, "errors": 0, "skipped": 0, "passed": 2, "failed_tests": ["t::x"]}))
    rep.summary(tmp_path)
    text = capsys.readouterr().out
    assert "3.00x ref" in text and "CUDA max allocated 512 MiB" in text and "timed out after 40 s" in text
    assert "2 passed, 1 failed" in text and "timeout after 60s" in text and "skipped: no CUDA" in text
    state = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["stage"] for s in state["stages"]] == ["search", "pytest-gpu", "table-eager"]
    assert state["stages"][1]["rc"] == 124 and state["summary"] and "environment" in state


# ---- --cuda-graphs / --no-cuda-graphs: the option is part of a CUDA table's measurement definition ----

def test_cuda_graphs_is_recorded_and_restored():
    assert BackendConfig("cuda", 1).to_dict()["cuda_graphs"] is True
    assert BackendConfig("cuda", 1, cuda_graphs=False).to_dict()["cuda_graphs"] is False
    assert "cuda_graphs" not in BackendConfig("cpu", 1).to_dict()  # other devices' definitions are unchanged
    settings = BackendConfig("cuda", 4, cuda_graphs=False).to_dict()
    table = SimpleNamespace(backend="cuda", meta={"threads": 4, "settings": settings})
    assert table_backend_config(table).cuda_graphs is False  # calibrate/measure time networks the same way
    table.meta["settings"] = {k: v for k, v in settings.items() if k != "cuda_graphs"}
    assert table_backend_config(table).cuda_graphs is True  # a sidecar from before the option: graphs


def test_no_cuda_graphs_only_for_the_cuda_device(tmp_path):
    from hwnas.api import profile_setup

    with pytest.raises(HwnasError, match="--no-cuda-graphs applies to --device cuda only"):
        profile_setup("cpu", cuda_graphs=False)
    assert profile_setup("cuda", threads=1, cuda_graphs=False)[1].cuda_graphs is False  # no GPU needed to set up
    fails_cleanly(CliRunner().invoke(app, ["profile", "--device", "cpu", "--no-cuda-graphs", "--out",
                                           str(tmp_path / "t.csv")]), "--no-cuda-graphs applies to --device cuda")
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backend_times_eager_launches_without_graphs(tmp_path):
    fast = TimingConfig(warmup_runs=2, warmup_s=0.0, budget_s=0.002, min_runs=3, max_runs=20)
    key = OpKey("sep_conv_3x3", 8, 8, 8, 8, 1, 4, "float32")
    module, shapes = dk.darts_module(key, SpaceConfig(channels=4, layers=3, batch=1))
    eager = make_backend(BackendConfig("cuda", 1, cuda_graphs=False, timing=fast))
    assert eager.describe()["cuda_graphs"] is False
    e = eager.measure(module, shapes)
    g = make_backend(BackendConfig("cuda", 1, timing=fast)).measure(module, shapes)
    assert e.p50_ms > 0 and g.p50_ms > 0
    space = SpaceConfig(channels=4, layers=3, batch=1)
    table = profile(ProfileConfig(space, BackendConfig("cuda", 1, cuda_graphs=False, timing=fast)), tmp_path / "t.csv")
    assert table.meta["settings"]["cuda_graphs"] is False and table.meta["cuda_graphs"] is False
    assert (table.frame["p50_ms"] > 0).all()
