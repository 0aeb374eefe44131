import json
from pathlib import Path

from typer.testing import CliRunner

from hwnas.spaces.genotype import DARTS_V2
from hwnas_cli.app import app
from tests.cli_helpers import fails_cleanly as _fails_cleanly
from tests.cli_helpers import ok as _ok

runner = CliRunner()


def test_info_lists_versions_and_backends():
    out = _ok(runner.invoke(app, ["info"]))
    for word in ("torch", "onnxruntime", "ort-cpu", "tensorrt", "mobile-int8", "cpu_model"):
        assert word in out
    # the CPU's family/model and the vector instructions torch uses on it: what tells two "AMD EPYC" hosts apart
    import torch

    from hwnas.info import cpu_model, environment
    assert cpu_model().endswith(torch.backends.cpu.get_cpu_capability())
    # the hypervisor's steal since boot, from /proc/stat where Linux has it (hwnas.latency.steal)
    steal = environment()["cpu_steal_since_boot_pct"]
    assert "cpu_steal_since_boot_pct" in out
    assert (steal is None) == (not Path("/proc/stat").is_file()) and (steal is None or 0.0 <= steal <= 100.0)


def test_train_epochs_zero_reports_the_reference_parameter_count():
    out = _ok(runner.invoke(app, ["train", "--genotype", str(DARTS_V2), "--epochs", "0", "--layers", "20",
                                  "--channels", "36", "--dataset", "cifar10", "--device", "cpu"]))
    assert "3,349,342" in out


def test_search_then_refuse_overwrite_then_resume(tmp_path):
    args = ["search", "--out", str(tmp_path / "r"), "--layers", "3", "--channels", "4", "--batch-size", "32",
            "--epochs", "1", "--max-steps", "2", "--device", "cpu"]
    out = _ok(runner.invoke(app, args))
    assert "Genotype(normal=" in out
    assert json.loads((tmp_path / "r" / "genotype.json").read_text())["darts"].startswith("Genotype(")
    _fails_cleanly(runner.invoke(app, args), "already holds a run", "--resume")
    _ok(runner.invoke(app, args + ["--resume"]))


def test_bad_inputs_are_one_line_errors(tmp_path):
    _fails_cleanly(runner.invoke(app, ["search", "--out", str(tmp_path / "a"), "--dataset", "nope"]), "unknown dataset")
    _fails_cleanly(runner.invoke(app, ["search", "--out", str(tmp_path / "b"), "--relax", "tanh"]), "relaxation")
    _fails_cleanly(runner.invoke(app, ["search", "--out", str(tmp_path / "c"), "--dataset", "mnist",
                                       "--data-dir", str(tmp_path)]), "--download")
    _fails_cleanly(runner.invoke(app, ["train", "--genotype", "Genotype(normal=[", "--epochs", "0"]), "cannot parse")
    _fails_cleanly(runner.invoke(app, ["search", "--out", str(tmp_path / "d"), "--resume"]), "no config.json")
    _fails_cleanly(runner.invoke(app, ["search", "--out", str(tmp_path / "f"), "--arch-grad", "x"]), "--arch-grad")
    if not __import__("torch").cuda.is_available():
        _fails_cleanly(runner.invoke(app, ["search", "--out", str(tmp_path / "e"), "--device", "cuda:0"]),
                       "asked for CUDA", "sees no GPU")
