"""Data-parallel runs under torchrun (hwnas.distributed): 2 CPU processes (gloo) against one process with the same
global batch, on the embedded digits data.

What must agree, and how closely. Each process takes its half of the same globally shuffled batch, BN normalises
with the global batch's statistics and gradients are averaged before every step, so a data-parallel step is the
one-process step up to floating-point summation order: measured 2e-6 relative on α's and the weights' gradients at
the first step. Later steps amplify that (Adam's first steps follow the sign of α's smallest gradients), so the run
is compared with a tolerance: the derived genotype must be identical after every epoch, losses within 1e-3 and the
training accuracy within 2 samples. Why 1e-3: the same single-process run on 1 and on 2 threads (another summation
order, nothing else) differed by 7e-4 in training loss (α up to 0.021 apart); 1 against 2 processes measured 1.2e-5
(training loss), 4.7e-5 (validation loss), 1 of 192 samples (training accuracy), α up to 0.016 apart.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import hwnas
from hwnas.errors import HwnasError

SEARCH = dict(dataset="digits", layers=3, channels=4, batch_size=64, max_steps=3, epochs=2, device="cpu")
LOSS_TOL = 1e-3


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    hwnas_bin = shutil.which("hwnas") or str(Path(sys.executable).with_name("hwnas"))
    # TMPDIR: torchrun's log folders (torchelastic_*) go into the test's folder, not /tmp, where each run left one
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(cwd)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python",
           hwnas_bin, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _cli(options: dict) -> list[str]:
    out = []
    for k, v in options.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def _assert_same(one: pd.DataFrame, two: pd.DataFrame, batch: int) -> None:
    assert list(one.columns) == list(two.columns) and len(one) == len(two)
    for c in ("train_loss", "val_loss"):
        assert (one[c] - two[c]).abs().max() < LOSS_TOL, (c, list(one[c]), list(two[c]))
    n_train = one["steps"] * batch
    assert ((one["train_acc"] - two["train_acc"]).abs() * n_train).max() <= 2
    assert list(one["genotype"]) == list(two["genotype"])


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    """`torchrun --nproc-per-node 2 hwnas search` = one process: same genotype, metrics within tolerance; only
    rank 0 writes; and `--resume` under torchrun continues a run a single process started."""
    r = _torchrun(["search", "--out", str(tmp_path / "two"), *_cli(SEARCH)], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stdout.count("genotype Genotype(") == 1  # rank 0 reports; rank 1 is silent

    part = tmp_path / "part"   # the one-process run as it stood after epoch 1 (its checkpoint is written first)

    def snapshot(row):
        if row["epoch"] == 1:
            shutil.copytree(tmp_path / "one", part)

    one = hwnas.search(out=tmp_path / "one", on_epoch_end=snapshot, **SEARCH)
    m1, m2 = one.metrics, pd.read_csv(tmp_path / "two" / "metrics.csv")
    _assert_same(m1, m2, SEARCH["batch_size"])
    g1 = json.loads((tmp_path / "one" / "genotype.json").read_text())
    assert json.loads((tmp_path / "two" / "genotype.json").read_text()) == g1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())

    # --resume: two processes finish the run that one process had taken to the end of epoch 1
    assert len(pd.read_csv(part / "metrics.csv")) == 1
    r = _torchrun(["search", "--out", str(part), "--resume"], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    _assert_same(m1, pd.read_csv(part / "metrics.csv"), SEARCH["batch_size"])


def test_prune_refuses_torchrun(monkeypatch, tmp_path):
    """Prune is not data-parallel yet: under torchrun with several processes it stops with one line."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(HwnasError, match="does not run under torchrun"):
        hwnas.prune(out=tmp_path / "p", table="t.csv")


def test_shard_slices_cover_the_batch(monkeypatch):
    """The ranks' slices of a batch are contiguous, disjoint and cover it, for batches that do not split evenly."""
    from hwnas.distributed import shard_slice

    for n in (1, 5, 6, 64):
        parts = []
        for r in range(3):
            monkeypatch.setenv("WORLD_SIZE", "3")
            monkeypatch.setenv("RANK", str(r))
            parts.append(shard_slice(n))
        assert parts[0].start == 0 and parts[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1
