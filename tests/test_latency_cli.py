import functools
import json

import pytest
from typer.testing import CliRunner

from hwnas_cli.app import app
from tests.cli_helpers import fails_cleanly, ok

runner = CliRunner()
TINY = ["--channels", "4", "--layers", "3", "--threads", "1", "--batch", "1", "--budget", "0.002"]


def _ok(result) -> str:
    """The output with its whitespace collapsed: rich wraps at 80 columns, where depends on the tmp path's length."""
    return " ".join(ok(result).split())
_fails_cleanly = functools.partial(fails_cleanly, first_line=True)  # profile checks before any output


@pytest.mark.slow
def test_profile_resume_and_calibrate(tmp_path):
    out = tmp_path / "cpu.csv"
    text = _ok(runner.invoke(app, ["profile", "--device", "cpu", "--space", "darts", *TINY, "--out", str(out)]))
    assert "48 keys" in text and "48 measured now" in text
    text = _ok(runner.invoke(app, ["profile", "--device", "cpu", "--space", "darts", *TINY, "--out", str(out)]))
    assert "0 measured now, 48 already there" in text
    text = _ok(runner.invoke(app, ["calibrate", "--table", str(out), "--samples", "4", "--folds", "4"]))
    assert "MAPE" in text and "Spearman" in text
    report = json.loads((tmp_path / "cpu.csv.calibration.json").read_text())
    assert set(report["figures"]) == {"sum", "linear", "per-kind", "linear+params"} and len(report["samples"]) == 4 + 2
    assert [r["drawn"] for r in report["samples"]] == ["cheapest", *["random"] * 4, "costliest"]
    assert (tmp_path / "cpu.csv.calibration.png").stat().st_size > 1000
    stored = json.loads((tmp_path / "cpu.csv.json").read_text())["calibration"]
    assert stored["chosen"] in report["figures"] and (stored["correction"] is None) == (stored["chosen"] == "sum")


@pytest.mark.parametrize("args, fragments", [
    (["profile", "--device", "npu"], ["unknown --device 'npu'"]),
    (["profile", "--space", "vit"], ["unknown space 'vit'"]),
    (["profile", "--input-size", "3y3"], ["--input-size '3y3'"]),
    (["profile", "--device", "mobile", "--threads", "4"], ["1 thread and batch 1"]),
    (["profile", "--channels", "5"], ["even channel count"]),
    (["profile", "--graph-opt", "max"], ["--graph-opt 'max'"]),
    (["calibrate", "--table", "nowhere.csv"], ["no latency table at nowhere.csv"]),
    (["profile", "import", "nowhere"], ["lacks bundle.json"]),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, fragments):
    _fails_cleanly(runner.invoke(app, args + (["--out", str(tmp_path / "x.csv")] if args[0] == "profile"
                                              and args[1] != "import" else [])), *fragments)


def test_tensorrt_profile_fails_cleanly_here(tmp_path):
    import importlib.util

    import torch

    if importlib.util.find_spec("tensorrt") and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present: the error path is not reachable")
    _fails_cleanly(runner.invoke(app, ["profile", "--device", "tensorrt", "--out", str(tmp_path / "t.csv")]),
                   "TensorRT" if not importlib.util.find_spec("tensorrt") else "GPU")
