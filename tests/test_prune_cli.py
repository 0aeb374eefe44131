"""`hwnas prune` and `hwnas export` of a prune run, through typer's CliRunner, on digits (8×8) with a
synthetic resnet18 table and a ResNet18 trained here for 4 epochs: the whole pipeline at toy size."""
import contextlib
import itertools
import json
import os
import shutil
from dataclasses import replace

import pytest
import torch
from hwnas_cli.app import app
from typer.testing import CliRunner

from hwnas.latency import resnet_keys as rk
from hwnas.latency.space import SpaceConfig
from hwnas.prune.gate_hypernet import intact_logits
from tests.cli_helpers import fails_cleanly, ok
from tests.test_latency_table import synthetic

runner = CliRunner()
DIGITS = SpaceConfig(space="resnet18", input_h=8, input_w=8, in_channels=1, batch=1)
TINY = ["--epochs", "1", "--max-steps", "2", "--batch-size", "16", "--lambda-samples", "3", "--eval-samples", "48",
        "--empirical-points", "2", "--empirical-steps", "1", "--pareto-points", "3", "--phase1-steps", "10",
        "--device", "cpu"]   # phase 1 runs to its default 200 steps or the tolerance (62 steps, 5 s, here) otherwise


def trained_digits_resnet18(path, epochs=4):
    """A ResNet18 trained on the weights half of digits' train split (what `hwnas prune` holds the validation
    half out from): about 94 % test accuracy after 4 epochs, well clear of chance."""
    from hwnas.data import Splits, load_dataset, search_split
    from hwnas.train import TrainConfig, train_network

    s = load_dataset("digits", None, False)
    (xw, yw), _ = search_split(s.x_train, s.y_train, 0)
    r = train_network(None, TrainConfig(model="resnet18", dataset="digits", epochs=epochs, batch_size=32, lr=0.05,
                                        drop_path_prob=0.0, seed=0, device="cpu", amp=False),
                      splits=Splits(s.info, xw, yw, s.x_test, s.y_test))
    torch.save(r.model.cpu().state_dict(), path)
    return r.test_acc


def shared_trained_weights(tmp_path_factory, dest):
    """`trained_digits_resnet18` into `dest`, trained once per test session: under pytest-xdist the first worker to
    need it trains it into a directory all workers share (under a file lock) and the others copy it — when a
    worker steals part of this module, its copy of the module fixture would otherwise retrain (17 s)."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:
        assert trained_digits_resnet18(dest) > 0.8
        return
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent / f"prune-cli-weights-{run_id}.pt"
    with FileLock(f"{shared}.lock"):
        if not shared.is_file():
            assert trained_digits_resnet18(f"{shared}.part") > 0.8
            os.replace(f"{shared}.part", shared)
    shutil.copyfile(shared, dest)


@pytest.fixture(scope="module")
def prune_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune")
    synthetic(DIGITS, latency=lambda k: 0.001 * k.c_in * (float(k.op[-4:]) if k.op.startswith("resnet_b") else 0.2)
              ).save(root / "t.csv")
    shared_trained_weights(tmp_path_factory, root / "w.pt")
    args = ["prune", "--out", str(root / "run"), "--table", str(root / "t.csv"), "--weights", str(root / "w.pt"),
            "--dataset", "digits", *TINY]
    out = ok(runner.invoke(app, args))
    return root, args, out


def test_prune_writes_the_run_directory(prune_run):
    root, _, out = prune_run
    run = root / "run"
    for name in ("config.json", "pretrained.pt", "pretrained.json", "lambda_max.json", "metrics.csv",
                 "checkpoint.pt", "pareto.csv", "plots/lambda_max.png", "plots/pareto_front.png",
                 "plots/pareto_gates.png"):
        assert (run / name).is_file(), name
    pre = json.loads((run / "pretrained.json").read_text())
    assert pre["gated_lambda0_val_acc"] == pre["val_acc"]   # phase 1: λ = 0 is the pretrained network
    rec = json.loads((run / "lambda_max.json").read_text())
    for key in ("label_entropy", "worst_valid_loss", "cost_bound", "lambda_max_source", "empirical", "agreement"):
        assert key in rec
    assert (rec["lambda_images"], rec["eval_images"], rec["empirical_points"]) == (48, 48, 2)   # what Λ used
    import pandas as pd

    frame = pd.read_csv(run / "pareto.csv")
    assert len(frame) == 3 and frame["lambda"].iloc[0] == 0.0
    for col in ("gates", "frac[layer1.0]", "shortcut[layer4.0]", "predicted_latency_ms", "params", "flops", "val_acc",
                "test_acc", "pareto_optimal"):
        assert col in frame
    assert frame["val_acc"].iloc[0] == pytest.approx(pre["val_acc"])
    assert "Λ" in out and "hwnas export" in out


def test_prune_refuses_to_overwrite_and_resumes(prune_run):
    _, args, _ = prune_run
    fails_cleanly(runner.invoke(app, args), "already holds a run", "--resume")
    ok(runner.invoke(app, args + ["--resume"]))


def test_export_of_a_prune_run(prune_run):
    root, _, _ = prune_run
    lmax = json.loads((root / "run" / "lambda_max.json").read_text())["lambda_max"][0]
    out = root / "m.onnx"
    text = ok(runner.invoke(app, ["export", str(root / "run"), "--lambda", str(lmax / 2), "--out", str(out)]))
    report = json.loads((root / "m.onnx.json").read_text())
    assert report["max_abs_diff"] < 1e-4 and report["top1_identical"] and report["batches_checked"] == [1, 5]
    for key in ("measured", "predicted_latency_ms", "unpruned", "speedup_measured", "gates", "params"):
        assert key in report
    assert report["unpruned"]["measured"]["p50_ms"] > 0 and "unpruned" in text
    fails_cleanly(runner.invoke(app, ["export", str(root / "run"), "--lambda", "1", "--out", str(out)]), "exists")
    fails_cleanly(runner.invoke(app, ["export", str(root / "run"), "--lambda", str(lmax * 3), "--out",
                                      str(root / "x.onnx")]), "outside the trained range")
    fails_cleanly(runner.invoke(app, ["export", str(root / "run"), "--out", str(root / "y.onnx")]), "--lambda")


def test_every_pareto_lambda_exports(prune_run, tmp_path):
    """A hypernet whose per-gate argmax breaks layer2.0 (branch and projection shortcut removed) for λ > 0:
    pareto.csv has no broken row and every one of its λ exports (the old per-gate argmax refused them)."""

    import pandas as pd

    root, _, _ = prune_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    b1 = torch.zeros(46)
    b1[2 * 5: 3 * 5] = torch.tensor([20.0, 0, 0, 0, 0])   # layer2.0: branch removed as λ grows ...
    b1[40:42] = torch.tensor([10.0, 0.0])                 # ... and its projection shortcut too
    state["hypernet"]["net.b2"] = intact_logits(3.0).view_as(state["hypernet"]["net.b2"])
    state["hypernet"]["net.b1"] = b1.view_as(state["hypernet"]["net.b1"])
    torch.save(state, run / "checkpoint.pt")
    ok(runner.invoke(app, ["prune", "--out", str(run), "--table", str(root / "t.csv"), "--resume"]))   # a finished run: only pareto.csv is made again, from this hypernet
    frame = pd.read_csv(run / "pareto.csv")
    assert frame["predicted_latency_ms"].notna().all()
    assert frame["gates"].iloc[-1] != frame["gates"].iloc[0]   # λ = Λ prunes layer2.0 (validly)
    assert frame["frac[layer2.0]"].iloc[-1] == 0.0 and frame["shortcut[layer2.0]"].iloc[-1] == 1
    from hwnas.prune.prune_run import load_pruned

    for lam, gates in zip(frame["lambda"], frame["gates"]):   # what export builds at each λ of pareto.csv
        g = load_pruned(run, float(lam))[2]
        assert g.is_valid() and g.describe() == gates
    lam = frame["lambda"].iloc[-1]   # Λ: broken under the per-gate argmax; exported end to end
    text = ok(runner.invoke(app, ["export", str(run), "--lambda", repr(float(lam)), "--out", str(tmp_path / "m.onnx"),
                                  "--no-measure"]))
    report = json.loads((tmp_path / "m.onnx.json").read_text())
    assert report["gates"] == frame["gates"].iloc[-1] and report["top1_identical"]
    # --no-measure: exported and checked, neither network timed
    assert "not measured" in text and "× predicted" in text
    assert "measured" not in report and "measured" not in report["unpruned"] and "speedup_measured" not in report


def test_pareto_csv_shows_gate_sets_between_the_grid_points(prune_run, tmp_path):
    """Issue #12.4: a hypernet whose gates change only between the even grid's points (here 0, Λ/1000 and Λ:
    4 blocks go to ¼ width at λ/Λ ≈ 0.013–0.18). pareto.csv's 3 rows are 3 distinct gate sets (the even grid
    showed 2: intact and all four pruned), each exported as it is listed."""

    import pandas as pd

    from hwnas.prune.prune_run import load_pruned

    root, _, _ = prune_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    b1 = torch.zeros(46)
    for block, slope in enumerate((4.0, 5.0, 6.0, 8.0)):   # ¼ width wins past input 3/slope
        b1[5 * block + 1] = slope
    state["hypernet"]["net.b2"] = intact_logits(3.0).view_as(state["hypernet"]["net.b2"])
    state["hypernet"]["net.b1"] = b1.view_as(state["hypernet"]["net.b1"])
    torch.save(state, run / "checkpoint.pt")
    ok(runner.invoke(app, ["prune", "--out", str(run), "--table", str(root / "t.csv"), "--resume"]))
    frame = pd.read_csv(run / "pareto.csv")
    assert len(frame) == 3 and frame["gates"].nunique() == 3, frame["gates"].tolist()
    assert [row.count("0.25") for row in frame["gates"]] == [0, 2, 4]
    for lam, gates in zip(frame["lambda"], frame["gates"]):
        assert load_pruned(run, float(lam))[2].describe() == gates


def test_bad_inputs_are_one_line_errors(tmp_path, prune_run):
    root, _, _ = prune_run
    base = ["prune", "--table", str(root / "t.csv"), "--dataset", "digits", "--device", "cpu"]
    fails_cleanly(runner.invoke(app, base + ["--out", str(tmp_path / "a"), "--weights", "nope.pt"]), "no such file")
    fails_cleanly(runner.invoke(app, base + ["--out", str(tmp_path / "b"), "--hypernet", "none"]), "--hypernet")
    fails_cleanly(runner.invoke(app, base + ["--out", str(tmp_path / "c"), "--lambda-max", "big"]), "'auto' or")
    fails_cleanly(runner.invoke(app, base + ["--out", str(tmp_path / "d"), "--model", "vgg"]), "resnet18")
    fails_cleanly(runner.invoke(app, ["prune", "--out", str(tmp_path / "e"), "--table", str(tmp_path / "no.csv"),
                                      "--device", "cpu"]), "no latency table")
    other = SpaceConfig(space="resnet18", input_h=28, input_w=28, in_channels=1, batch=1)
    synthetic(other).save(tmp_path / "t28.csv")
    fails_cleanly(runner.invoke(app, ["prune", "--out", str(tmp_path / "f"), "--table", str(tmp_path / "t28.csv"),
                                      "--weights", str(root / "w.pt"), "--device", "cpu"]), "input_h 28")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    fails_cleanly(runner.invoke(app, base + ["--out", str(tmp_path / "g"), "--weights", str(tmp_path / "bad.pt"),
                                             *TINY]), "is not a ResNet18")
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("case", ["untrained", "100 classes", "3 input channels", "imagenet stem", "not resnet18"])
def test_bad_starting_points_end_in_one_line(tmp_path, prune_run, case):
    """A starting network near chance, or weights of another shape: one line naming the problem, exit 2,
    before any run directory is made."""
    root, _, _ = prune_run
    torch.manual_seed(0)
    if case == "untrained":
        state, want = rk.torchvision_resnet18(DIGITS).state_dict(), ["near chance", "train it first"]
    elif case == "100 classes":
        state, want = rk.torchvision_resnet18(replace(DIGITS, num_classes=100)).state_dict(), ["100 classes"]
    elif case == "3 input channels":
        state, want = rk.torchvision_resnet18(replace(DIGITS, in_channels=3)).state_dict(), ["takes 3 input channel"]
    elif case == "imagenet stem":
        state, want = rk.torchvision_resnet18(replace(DIGITS, input_h=224, input_w=224)).state_dict(), ["stem", "7×7"]
    else:
        from torchvision.models import resnet34

        state = resnet34(num_classes=10).state_dict()
        state["conv1.weight"] = rk.torchvision_resnet18(DIGITS).state_dict()["conv1.weight"]
        want = ["is not a ResNet18", "unexpected tensor"]
    torch.save(state, tmp_path / "w.pt")
    result = runner.invoke(app, ["prune", "--table", str(root / "t.csv"), "--dataset", "digits", "--out",
                                 str(tmp_path / "run"), "--weights", str(tmp_path / "w.pt"), *TINY])
    fails_cleanly(result, *want)
    assert len([ln for ln in result.output.splitlines() if ln.strip()]) <= 3   # one error line (rich may wrap it)
    assert not (tmp_path / "run").exists()
    fails_cleanly(runner.invoke(app, ["train", "--model", "resnet18", "--genotype", "x", "--epochs", "0"]),
                  "--model resnet18 without --genotype")


def test_train_resnet18_reports_its_size():
    out = ok(runner.invoke(app, ["train", "--model", "resnet18", "--dataset", "digits", "--epochs", "0",
                                 "--device", "cpu"]))
    assert f"{sum(p.numel() for p in rk.torchvision_resnet18(DIGITS).parameters()):,}" in out


@pytest.mark.slow
def test_prune_with_empirical_lambda_max(prune_run, tmp_path):
    root, _, _ = prune_run
    args = ["prune", "--out", str(tmp_path / "e"), "--table", str(root / "t.csv"), "--weights", str(root / "w.pt"),
            "--dataset", "digits", *TINY, "--lambda-max", "empirical", "--max-steps", "1", "--pareto-points", "2"]
    ok(runner.invoke(app, args))
    rec = json.loads((tmp_path / "e" / "lambda_max.json").read_text())
    assert rec["lambda_max_source"].startswith("empirical")
    fits = rec["empirical"]["fits"]
    assert rec["lambda_max"][0] in [f["lambda"] for f in fits]
    assert "theorem_lambda_max" in rec and "label_entropy" in rec   # Theorem 1's parts are recorded all the same
    fails_cleanly(runner.invoke(app, ["prune", "--out", str(tmp_path / "z"), "--table", str(root / "t.csv"),
                                      "--lambda-max", "empirical", "--empirical-points", "0"]), "empirical-points")


def test_lambda_defaults_are_cheap_and_recorded():
    """Λ's evaluations default to the first 1,024 validation images and the fixed-λ fits to none unless they set
    Λ (--lambda-max empirical: 6); a run made before the option keeps Λ on every evaluation image."""
    from hwnas.config import PruneConfig
    from hwnas.errors import HwnasError

    cfg = PruneConfig(table="t.csv")
    assert (cfg.lambda_images, cfg.empirical_points, cfg.empirical_fits) == (1024, None, 0)
    assert PruneConfig(table="t.csv", lambda_max_from="empirical").empirical_fits == 6
    assert PruneConfig(table="t.csv", empirical_points=3).empirical_fits == 3
    for bad in (dict(lambda_images=-1), dict(empirical_points=-1), dict(lambda_max_from="empirical", empirical_points=1)):
        with pytest.raises(HwnasError):
            PruneConfig(table="t.csv", **bad)
    old = {k: v for k, v in cfg.to_dict().items() if k != "lambda_images"}
    assert PruneConfig.from_dict(old).lambda_images == 0


def test_lambda_is_evaluated_on_the_first_lambda_images(prune_run, tmp_path, monkeypatch):
    """--lambda-images N: Theorem 1's gate sets (and the fixed-λ fits) are evaluated on the first N of the
    evaluation images, the rest of the run on all of them; lambda_max.json records both counts."""
    from hwnas.latency.table import LatencyTable
    from hwnas.prune import prune_run as pr
    from hwnas.prune.prune import PruneData
    from hwnas.runs import RunDir
    from hwnas.train import resnet18_space

    root, _, _ = prune_run
    cfg = replace(pr.load_config(RunDir(root / "run")), lambda_images=16, lambda_samples=2, empirical_points=2,
                  empirical_steps=1)
    data = PruneData(cfg, torch.device("cpu"))
    assert torch.equal(data.lambda_eval.x, data.eval.x[:16]) and len(data.eval.x) == 48
    seen = []
    theorem = pr.theorem_lambda_max

    def counting(network, cost, batches, *a, **k):
        seen.append(sum(len(y) for _, y in batches()))
        return theorem(network, cost, batches, *a, **k)

    monkeypatch.setattr(pr, "theorem_lambda_max", counting)
    accuracies = []
    evaluate = pr.evaluate
    monkeypatch.setattr(pr, "evaluate", lambda net, loader: accuracies.append(len(loader.x)) or evaluate(net, loader))
    model = pr.load_pruned(root / "run", 0.0)[1]
    cost = pr.GateCost.from_table(LatencyTable.load(cfg.table), resnet18_space(cfg.dataset, cfg.data_dir))
    run = RunDir(tmp_path / "lam")
    run.path.mkdir()

    @contextlib.contextmanager
    def quiet(label, total, done=0):
        yield None, None

    rec = pr._lambda_max(run, cfg, model, cost, data, {"val_acc": 0.9}, quiet, lambda s: None)
    assert seen == [16] and set(accuracies) == {16}   # Theorem 1's losses, the fits' accuracies and acc0
    assert (rec["lambda_images"], rec["eval_images"], rec["empirical_points"]) == (16, 48, 2)
    assert json.loads(run.file("lambda_max.json").read_text())["lambda_images"] == 16


class _Interrupt(Exception):
    pass


@pytest.mark.slow
def test_finetuned_prune_resumes_to_the_uninterrupted_result(prune_run, tmp_path):
    """--finetune trains the weights (they move), and a run cut after epoch 1 and resumed ends bit-identical."""
    from contextlib import contextmanager

    import pandas as pd

    from hwnas.prune.prune import PruneConfig
    from hwnas.prune.prune_run import run_prune

    root, _, _ = prune_run
    cfg = PruneConfig(weights=str(root / "w.pt"), dataset="digits", table=str(root / "t.csv"), epochs=2,
                      steps_per_epoch=2, batch_size=16, lambda_samples=3, eval_samples=48, empirical_points=0,
                      pareto_points=2, phase1_steps=10, finetune=True, finetune_lr=0.05, device="cpu")

    @contextmanager
    def cut_after_first_epoch(label, total, done):
        def on_epoch_end(row):
            if label == "prune" and row["epoch"] == 1:
                raise _Interrupt
        yield None, on_epoch_end

    run_prune(cfg, tmp_path / "full")
    with pytest.raises(_Interrupt):
        run_prune(cfg, tmp_path / "cut", progress=cut_after_first_epoch)
    run_prune(cfg, tmp_path / "cut", resume=True)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    for part in ("hypernet", "model"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=0)
    start = torch.load(tmp_path / "full" / "pretrained.pt", weights_only=True)  # the weights phase 2 started from
    moved = [k for k in start if start[k].is_floating_point() and not torch.equal(start[k], a["model"][k].cpu())]
    assert any(k.endswith("conv1.weight") for k in moved)  # fine-tuning trained the convolutions
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full" / "metrics.csv").drop(columns="epoch_seconds"),
                                  pd.read_csv(tmp_path / "cut" / "metrics.csv").drop(columns="epoch_seconds"))


def test_imagenet_shaped_weights_start_a_small_stem_resnet18():
    """--weights imagenet adapts torchvision's ImageNet state (3-channel 7×7 stem, 1000 classes) to the dataset:
    every tensor whose shape fits is loaded, the stem and the classifier keep their initialisation."""
    from torchvision.models import resnet18

    from hwnas.train import TrainConfig, train_network

    torch.manual_seed(5)
    imagenet = resnet18(weights=None).state_dict()   # the shapes of IMAGENET1K_V1 (no download needed)
    model = train_network(None, TrainConfig(model="resnet18", dataset="digits", epochs=0, device="cpu"),
                          initial_state=imagenet).model.state_dict()
    assert torch.equal(model["layer3.1.conv2.weight"], imagenet["layer3.1.conv2.weight"])
    assert torch.equal(model["layer2.0.downsample.0.weight"], imagenet["layer2.0.downsample.0.weight"])
    assert model["conv1.weight"].shape == (64, 1, 3, 3) and model["fc.weight"].shape == (10, 512)


@pytest.mark.slow
def test_defaults_prune_a_trained_network_along_lambda(prune_run, tmp_path):
    """A trained network pruned with hwnas prune's defaults (Λ rule, phase 1, hypernet, learning rate; only the
    amount of work cut): at least 3 gate sets along λ, all valid, predicted latency non-increasing, and the
    largest λ's at most half the intact network's (issue #12.1: the intact network at every λ before; then
    0.73× on the MNIST ResNet18, with the intact network's BN statistics and λ drawn uniformly)."""
    import pandas as pd

    root, _, _ = prune_run
    out = tmp_path / "d"
    ok(runner.invoke(app, ["prune", "--out", str(out), "--table", str(root / "t.csv"), "--weights",
                           str(root / "w.pt"), "--dataset", "digits", "--device", "cpu", "--epochs", "2",
                           "--max-steps", "40", "--eval-samples", "256", "--empirical-points", "0"]))
    frame = pd.read_csv(out / "pareto.csv")
    from hwnas.spaces.gated_resnet import BLOCKS, PROJECTIONS, GateSet

    for _, row in frame.iterrows():
        g = GateSet(tuple(row[f"frac[{b}]"] for b in BLOCKS), tuple(bool(row[f"shortcut[{p}]"]) for p in PROJECTIONS))
        assert g.is_valid() and g.describe() == row["gates"]
    assert frame["gates"].nunique() >= 3, frame["gates"].tolist()
    ms = frame["predicted_latency_ms"].to_numpy()
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(ms)), ms
    assert ms[-1] <= 0.5 * ms[0], ms   # issue #12.1: the cheapest at most half the intact network's latency
    pre = json.loads((out / "pretrained.json").read_text())
    assert pre["phase1_steps"] > 0 and pre["gated_lambda0_val_acc"] >= pre["val_acc"] - 0.01


def test_channel_multiple_holds_through_pareto_cost_and_export(prune_run, tmp_path):
    """Issue #12.5: `--channel-multiple 64` and a hypernet that wants half width everywhere as λ grows: every
    pareto.csv row keeps multiples of 64 (layer1 stays at 64 where the plain run's gates keep 32), its predicted
    latency is the table's for that gate set, and the ONNX of `hwnas export` has those widths in its graph."""
    import pandas as pd

    from hwnas.latency.table import LatencyTable
    from hwnas.prune.prune_run import load_pruned
    from hwnas.spaces.gated_resnet import BLOCKS, PROJECTIONS, GateSet
    from tests.test_prune_widths import conv_shapes

    root, args, _ = prune_run
    run = tmp_path / "run"
    ok(runner.invoke(app, [a if a != str(root / "run") else str(run) for a in args] + ["--channel-multiple", "64"]))
    assert json.loads((run / "config.json").read_text())["channel_multiple"] == 64
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    b1 = torch.zeros(46)
    for i in range(len(BLOCKS)):
        b1[5 * i + 2] = 20.0                                  # half width in every block as λ grows
    state["hypernet"]["net.b2"] = intact_logits(3.0).view_as(state["hypernet"]["net.b2"])
    state["hypernet"]["net.b1"] = b1.view_as(state["hypernet"]["net.b1"])
    torch.save(state, run / "checkpoint.pt")
    ok(runner.invoke(app, ["prune", "--out", str(run), "--table", str(root / "t.csv"), "--resume"]))
    frame = pd.read_csv(run / "pareto.csv")
    table = LatencyTable.load(root / "t.csv")
    for _, row in frame.iterrows():
        g = GateSet(tuple(row[f"frac[{b}]"] for b in BLOCKS), tuple(bool(row[f"shortcut[{p}]"]) for p in PROJECTIONS))
        assert g.fits(64) and all(row[f"channels[{b}]"] % 64 == 0 for b in BLOCKS)
        assert row["predicted_latency_ms"] == pytest.approx(table.predict(g.arch()))
        assert row["expected_cost_ms"] == pytest.approx(row["predicted_latency_ms"], rel=1e-5)
    last = frame.iloc[-1]
    lam = float(last["lambda"])
    assert [last[f"channels[{b}]"] for b in BLOCKS] == [64, 64, 64, 64, 128, 128, 256, 256]
    # the same hypernet in the run without the option keeps layer1 at 32
    plain = tmp_path / "plain"

    shutil.copytree(root / "run", plain)
    plain_state = torch.load(plain / "checkpoint.pt", weights_only=True)
    plain_state["hypernet"] = state["hypernet"]
    plain_state["lambda_max"] = state["lambda_max"]
    torch.save(plain_state, plain / "checkpoint.pt")
    assert load_pruned(plain, lam)[2].channels()[:2] == (32, 32)
    ok(runner.invoke(app, ["export", str(run), "--lambda", repr(lam), "--out", str(tmp_path / "m.onnx"), "--no-measure"]))
    report = json.loads((tmp_path / "m.onnx.json").read_text())
    assert report["gates"] == last["gates"] and report["channels[layer1.0]"] == 64
    outs = sorted(s[0] for s in conv_shapes(tmp_path / "m.onnx"))
    branches = [64, 64, 64, 64, 64, 128, 64, 128, 128, 256, 128, 256, 256, 512, 256, 512]   # conv1, conv2 per block
    assert outs == sorted([64, 128, 256, 512] + branches)   # + the stem and the three projection shortcuts
