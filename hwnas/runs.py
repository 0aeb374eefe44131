"""The run directory: config.json, metrics.csv, checkpoint.pt (atomic), genotype.json, plots/.

Nothing in a run directory is overwritten by a new run: creating one where a run already
lives is an error unless the caller resumes it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch

from hwnas.errors import HwnasError

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.csv"


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode an ordinary write would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, config: dict, resume: bool = False) -> RunDir:
        """A new run directory holding `config`, or (resume) the existing one with its own config."""
        run = cls(path)
        if resume:
            if not (run.path / CONFIG).is_file():
                raise HwnasError(f"--resume: {run.path} holds no {CONFIG}; start a new run with --out {run.path}")
            return run
        if run.path.exists() and any(run.path.iterdir()):
            raise HwnasError(f"{run.path} already holds a run; pass --resume to continue it or choose another --out")
        run.write_json(CONFIG, config)
        return run

    def file(self, name: str) -> Path:
        return self.path / name

    def read_json(self, name: str) -> dict:
        try:
            return json.loads(self.file(name).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise HwnasError(f"cannot read {self.file(name)}: {e}") from None

    def write_json(self, name: str, obj) -> None:
        atomic_write(self.file(name), lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))

    def write_text(self, name: str, text: str) -> None:
        atomic_write(self.file(name), lambda f: f.write(text.encode()))

    def write_metrics(self, rows: list[dict]) -> None:
        atomic_write(self.file(METRICS), lambda f: pd.DataFrame(rows).to_csv(f, index=False))

    def save_checkpoint(self, state: dict) -> None:
        atomic_write(self.file(CHECKPOINT), lambda f: torch.save(state, f))

    def load_checkpoint(self, map_location=None) -> dict | None:
        path = self.file(CHECKPOINT)
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # a corrupt file must not be a traceback
            raise HwnasError(f"cannot load {path}: {e}") from None
