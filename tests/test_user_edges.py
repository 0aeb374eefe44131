"""Issue 15: every bad input and interruption ends cleanly, fast, and leaves the way open.
One parametrised test per row of the issue's table (CLI runner; `slow` only where real training runs)."""
import json
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hwnas.config import SearchConfig
from hwnas.errors import HwnasError
from hwnas.spaces.genotype import DARTS_V2, Genotype
from hwnas_cli.app import app
from tests.cli_helpers import commands, fails_cleanly, ok

runner = CliRunner()
TINY = ["--layers", "3", "--channels", "4", "--batch-size", "32", "--device", "cpu"]
README = Path(__file__).resolve().parents[1] / "README.md"


# 1. --lambda-max nan / inf
@pytest.mark.parametrize("cmd", ["search", "prune"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_lambda_max_must_be_finite_and_positive(tmp_path, cmd, value):
    extra = ["--cost", "params", "--hypernet", "linear"] if cmd == "search" else ["--table", str(tmp_path / "t.csv")]
    fails_cleanly(runner.invoke(app, [cmd, "--out", str(tmp_path / "r"), "--lambda-max", value, *extra]),
                  f"--lambda-max '{value}'", "finite number > 0", first_line=True)
    assert not (tmp_path / "r").exists()


# 2. absurd concat indices: refused when parsed, in constant memory
@pytest.mark.parametrize("concat", ["range(2, 20000000)", "range(-5, 3)", "range(2, 2)", "range(0, 10**3)"])
def test_absurd_concat_is_refused_without_building_it(concat):
    text = str(DARTS_V2).replace("normal_concat=[2, 3, 4, 5]", f"normal_concat={concat}")
    tracemalloc.start()
    try:
        with pytest.raises(HwnasError, match="normal_concat|range"):
            Genotype.parse(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5e6, peak  # listing range(2, 20000000) took 160 MB and more
    fails_cleanly(runner.invoke(app, ["train", "--genotype", text, "--epochs", "0"]), "genotype")


# 3. --out inside a regular file
@pytest.mark.parametrize("args", [
    ["search", "--out", "{f}/run"],
    ["train", "--genotype", "DARTS_V2", "--epochs", "1", "--out", "{f}/run"],
    ["prune", "--table", "t.csv", "--out", "{f}/run"],
    ["export", "--genotype", "DARTS_V2", "--out", "{f}/m.onnx"],
    ["quickstart", "--out", "{f}/q"],
    ["search", "--out", "{f}"],
])
def test_out_inside_a_file_is_one_line(tmp_path, args):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    fails_cleanly(runner.invoke(app, [a.format(f=afile) for a in args]), "is a file, not a folder", first_line=True)
    assert afile.read_text() == "not a folder"


# 4. a start that fails on bad input leaves nothing that blocks the same --out
@pytest.mark.parametrize("args, fragment", [
    (["search", "--table", "{tmp}/missing.csv"], "missing.csv"),
    (["search", "--batch-size", "100000"], "--batch-size"),
    (["search", "--dataset", "idx:{tmp}/empty"], "IDX"),
    (["train", "--genotype", "DARTS_V2", "--dataset", "idx:{tmp}/empty", "--epochs", "1"], "IDX"),
    (["train", "--genotype", "DARTS_V2", "--batch-size", "0", "--epochs", "1"], "--batch-size"),
])
def test_failed_start_leaves_no_run(tmp_path, args, fragment):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    fails_cleanly(runner.invoke(app, [a.format(tmp=tmp_path) for a in args] + ["--out", str(out)]), fragment)
    assert not out.exists()


# 5. interruptions: each command says what it left and how to go on
@pytest.mark.parametrize("args, target, said", [
    (["search", "--out", "{tmp}/s"], "hwnas.search.loop.run_search", "hwnas search --out {tmp}/s --resume"),
    (["train", "--genotype", "DARTS_V2", "--out", "{tmp}/t"], "hwnas.train.train_network",
     "hwnas train --out {tmp}/t --resume"),
    (["train", "--genotype", "DARTS_V2"], "hwnas.train.train_network", "nothing was saved"),
    (["prune", "--table", "t.csv", "--out", "{tmp}/p"], "hwnas.prune.prune_run.run_prune", "--resume"),
])
def test_interrupt_message_fits_the_command(tmp_path, monkeypatch, args, target, said):
    module, name = target.rsplit(".", 1)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(__import__(module, fromlist=[name]), name, interrupted)
    result = runner.invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 130 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert said.format(tmp=tmp_path) in text and "a search can be continued" not in text


@pytest.mark.slow
def test_interrupted_train_resumes_to_the_same_result(tmp_path, monkeypatch):
    args = ["train", "--genotype", "DARTS_V2", *TINY, "--epochs", "2"]
    whole = json.loads(Path(ok(runner.invoke(app, args + ["--out", str(tmp_path / "a")])) and
                            tmp_path / "a" / "result.json").read_text())
    from hwnas.runs import RunDir

    write = RunDir.write_metrics

    def stop_after_first_epoch(self, rows):
        write(self, rows)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(RunDir, "write_metrics", stop_after_first_epoch)
        result = runner.invoke(app, args + ["--out", str(tmp_path / "b")])
    assert result.exit_code == 130 and "--resume" in result.output
    fails_cleanly(runner.invoke(app, args + ["--out", str(tmp_path / "b")]), "--resume")
    out = ok(runner.invoke(app, ["train", "--out", str(tmp_path / "b"), "--resume"]))
    assert "train epoch 2/2" in out and "train epoch 1/2" not in out
    resumed = json.loads((tmp_path / "b" / "result.json").read_text())
    assert resumed["test_acc"] == whole["test_acc"] and resumed["test_loss"] == pytest.approx(whole["test_loss"])


# 6. export --lambda outside [0, Λ] (Λ from lambda_max.json, per target)
@pytest.mark.parametrize("lam", ["5", "-1", "nan", "1.5"])
def test_export_refuses_lambda_outside_the_trained_range(tmp_path, lam):
    run = tmp_path / "run"
    run.mkdir()
    (run / "lambda_max.json").write_text(json.dumps({"lambda_max": [1.0, 2.0]}))
    fails_cleanly(runner.invoke(app, ["export", str(run), "--lambda", lam, "--out", str(tmp_path / "m.onnx")]),
                  f"--lambda {float(lam)}", "outside the trained range", first_line=True)
    assert not (tmp_path / "m.onnx").exists()


# 6 and 9: a real hypernet run, written to a log (not a terminal): a line per warm-up and search epoch;
# export records λ in its report
@pytest.mark.slow
def test_hypernet_run_logs_every_epoch_and_export_records_lambda(tmp_path):
    run = tmp_path / "run"
    out = ok(runner.invoke(app, ["search", "--out", str(run), *TINY, "--cost", "params", "--hypernet", "linear",
                                 "--lambda-warmup-epochs", "1", "--lambda-samples", "2", "--epochs", "1",
                                 "--max-steps", "1"]))
    assert "search warm-up epoch 1/1" in out and "search epoch 1/1" in out
    assert "━" not in out  # no live bar in a log
    lmax = json.loads((run / "lambda_max.json").read_text())["lambda_max"][0]
    text = ok(runner.invoke(app, ["export", str(run), "--lambda", str(lmax * (1 + 1e-9)), "--out",
                                  str(tmp_path / "m.onnx"), "--no-measure"]))
    report = json.loads((tmp_path / "m.onnx.json").read_text())
    assert report["lambda"] == pytest.approx(lmax) and report["lambda_max"] == [lmax] and report["run"] == str(run)
    assert "measured" not in report and "not measured (--no-measure)" in text   # exported and checked, not timed
    fails_cleanly(runner.invoke(app, ["export", str(run), "--lambda", str(lmax * 2), "--out",
                                      str(tmp_path / "n.onnx")]), "outside the trained range")


# 7. checkpoints that are not ours, or are cut short
class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def _evil(path):
    path.write_bytes(pickle.dumps({"epoch": _Payload()}))


def _foreign(path):
    torch.save({"weights": torch.zeros(2)}, path)


def _truncated(path):
    torch.save({"epoch": 1, "net": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])


def _garbage(path):
    path.write_bytes(b"not a checkpoint at all " * 20)


def _malicious_zip(path):
    torch.save({"epoch": _Payload()}, path)


@pytest.mark.parametrize("make, fragment", [(_evil, "is not an hwnas checkpoint"), (_malicious_zip, "is not an hwnas checkpoint"),
                                            (_foreign, "is not an hwnas checkpoint"), (_truncated, "corrupt checkpoint"),
                                            (_garbage, "not a file torch.save wrote")])
def test_checkpoint_not_ours_is_named_so(tmp_path, make, fragment):
    run = tmp_path / "run"
    run.mkdir()
    cfg = SearchConfig(layers=3, channels=4, batch_size=32, epochs=1, max_steps_per_epoch=1, device="cpu")
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    make(run / "checkpoint.pt")
    result = runner.invoke(app, ["search", "--out", str(run), "--resume"])
    fails_cleanly(result, fragment)
    for internal in ("weights_only", "central directory", "this ran"):
        assert internal not in result.output


@pytest.mark.parametrize("make, fragment", [(_evil, "is not a weights file"), (_truncated, "corrupt weights file"),
                                          (_garbage, "not a file torch.save wrote"),
                                            (_foreign, "does not fit this network")])
def test_export_weights_not_ours_is_named_so(tmp_path, make, fragment):
    make(tmp_path / "model.pt")
    result = runner.invoke(app, ["export", "--genotype", "DARTS_V2", "--layers", "3", "--channels", "4",
                                 "--weights", str(tmp_path / "model.pt"), "--out", str(tmp_path / "m.onnx")])
    fails_cleanly(result, fragment)
    for internal in ("weights_only", "central directory", "this ran"):
        assert internal not in result.output
    assert not (tmp_path / "m.onnx").exists()


# 8. option errors print before torch (and the data) are loaded
@pytest.mark.parametrize("args", [
    ["search", "--out", "r", "--arch-grad", "bogus"], ["search", "--out", "r", "--lambda-max", "nan"],
    ["search", "--out", "r", "--epochs", "-1"], ["prune", "--out", "r", "--table", "t.csv", "--hypernet", "bogus"],
    ["train", "--model", "resnet18", "--epochs", "-1"], ["quickstart", "--epochs", "-1"],
    ["train", "--model", "resnet18", "--epochs", "0", "--out", "r"], ["export", "--genotype", "x", "--out", "f/m.onnx"],
])
def test_option_errors_come_before_heavy_imports(tmp_path, args):
    (tmp_path / "f").write_text("a file")
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom hwnas_cli.app import app\n"
            f"r = CliRunner().invoke(app, {args!r})\n"
            "print(r.exit_code, 'torch' in sys.modules)\nprint(r.output)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    first = done.stdout.splitlines()[0]
    assert first == "2 False", done.stdout + done.stderr


# 10. train --epochs 0 with --out
def test_train_epochs_zero_with_out_is_refused(tmp_path):
    fails_cleanly(runner.invoke(app, ["train", "--genotype", "DARTS_V2", "--epochs", "0", "--out", str(tmp_path / "t")]),
                  "--epochs 0", "drop --out", first_line=True)
    assert not (tmp_path / "t").exists()


# 11. --help reads naturally
@pytest.mark.parametrize("cmd", commands(), ids=" ".join)
def test_help_has_natural_metavars(cmd):
    out = ok(runner.invoke(app, [*cmd, "--help"]))
    for odd in ("<bool>", "list[", "{run}"):
        assert odd not in out
    if cmd == ["search"]:  # the description reflowed, not cut where the docstring's lines broke
        assert any("(--table or --cost)" in line for line in out.splitlines())
        assert "L_val+λ·Tᵀγ" in out
    if not cmd:
        for name in ("info", "search", "train", "quickstart", "pareto", "export", "calibrate", "measure", "prune",
                     "profile"):
            assert any(line.split()[:1] == [name] for line in out.splitlines()), name


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("cmd", commands(), ids=" ".join)
def test_help_gives_option_text_at_least_half_the_terminal(cmd, width):
    """Typer's rich boxes put the help column at 56 of 80 and wrapped it into one- and two-word lines; a group's
    list of commands gives each one's summary whole (Click cut a long docstring's first sentence with `...`)."""
    out = ok(runner.invoke(app, [*cmd, "--help"], terminal_width=width))
    lines = out.splitlines()
    if "Commands:" in lines:
        listed = lines[lines.index("Commands:") + 1:]
        assert not [line for line in listed if line.rstrip().endswith("...")], out
    start = next(i for i, line in enumerate(lines) if "Options" in line)
    continued = [line for line in lines[start + 1:] if line.strip(" │") and not line.lstrip(" │").startswith("-")]
    indents = [len(line) - len(line.lstrip(" │")) for line in continued]  # none: every option's help fits one line
    assert max(indents, default=0) <= width // 2, max(indents)
    assert max(len(line) for line in lines) <= width


# 12. the README stands alone in a user's clone
@pytest.mark.parametrize("needle", ["../shared", "<DARTS_V2>"])
def test_readme_needs_nothing_outside_the_clone(needle):
    assert needle not in README.read_text()


def test_published_genotype_name_as_in_the_readme():
    out = ok(runner.invoke(app, ["train", "--genotype", "DARTS_V2", "--epochs", "0", "--layers", "20", "--channels",
                                 "36", "--dataset", "cifar10", "--device", "cpu"]))
    assert "3,349,342" in out


# 13. alphas.png lets a reader judge how far α moved
@pytest.mark.parametrize("epochs, spread", [(1, 1e-3), (4, 1e-3), (4, 2.0)])
def test_alpha_plot_shows_points_the_start_value_and_whole_epochs(epochs, spread):
    from hwnas.plots import alpha_figure

    gen = torch.Generator().manual_seed(0)
    history = [{c: torch.softmax(spread * torch.randn(14, 8, generator=gen), -1) for c in ("normal", "reduce")}
               for _ in range(epochs)]
    fig = alpha_figure(history)
    fig.canvas.draw()
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.lines]
    assert len(panels) == 28
    for ax in panels:
        ops = [ln for ln in ax.lines if len(ln.get_xdata()) == epochs]
        assert len(ops) == 8 and all(ln.get_marker() not in (None, "", "None") for ln in ops)
        assert len({ln.get_color() for ln in ops}) == 8
        lo, hi = ax.get_ylim()
        assert lo <= 0 and hi >= 2 / 8  # the uniform 1/|O| inside, noise not magnified
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
