"""The run directory: config.json, metrics.csv, checkpoint.pt (atomic), genotype.json, plots/.

Nothing in a run directory is overwritten by a new run: creating one where a run already
lives is an error unless the caller resumes it. `check_new` says so before any work is done,
and callers create the directory only once their inputs have loaded, so a start that fails on
bad input leaves nothing that blocks the same command from being run again.

torch and pandas are imported where they are used: the CLI checks --out before importing them.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path

from hwnas.distributed import is_main
from hwnas.errors import HwnasError

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.csv"


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file.
    Under torchrun only rank 0 writes (every rank holds the same state; `hwnas.distributed`)."""
    if not is_main():
        return
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


def check_out(path: str | Path, option: str = "--out", folder: bool = True) -> None:
    """A path hwnas can write to: no file where a folder must be (`folder`: `path` itself is one too)."""
    path = Path(path)
    for p in ([path] if folder else []) + list(path.parents):
        if p.exists():
            if not p.is_dir():
                where = "it is a file" if p == path else f"{p} is a file"
                raise HwnasError(f"{option} {path}: {where}, not a folder; choose an {option} "
                                 f"{'that is a folder' if p == path else 'inside a folder'}")
            return


def load_torch_file(path: str | Path, what: str, noun: str, map_location=None):
    """`torch.load(weights_only=True)` with one-line errors: a file holding other Python objects is named as
    not `what` (e.g. "an hwnas checkpoint") and never loaded unsafely; a truncated or foreign file as a
    corrupt `noun` (e.g. "checkpoint"), never with torch's internals."""
    import torch

    try:
        with warnings.catch_warnings():  # torch warns about a foreign file's pickle protocol before refusing it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():  # torch wraps every failure as "Weights only load failed"
            raise HwnasError(f"{path} is not {what}: not a file torch.save wrote; remove it (or choose another "
                             f"path)") from None
        raise HwnasError(f"{path} is not {what}: it holds Python objects beyond tensors and plain data, which hwnas "
                         f"never unpickles; remove it (or choose another path)") from None
    except (RuntimeError, EOFError, ValueError):
        raise HwnasError(f"{path}: corrupt {noun} (truncated, or not written by torch.save); remove it (or choose "
                         f"another path)") from None
    except OSError as e:
        raise HwnasError(f"cannot read {path}: {e.strerror or e}") from None


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def check_new(cls, path: str | Path) -> None:
        """The checks of `create` for a new run, without writing anything (done before any work)."""
        path = Path(path)
        check_out(path)
        if path.is_dir() and any(path.iterdir()):
            raise HwnasError(f"{path} already holds a run; pass --resume to continue it or choose another --out")

    @classmethod
    def create(cls, path: str | Path, config: dict, resume: bool = False) -> RunDir:
        """A new run directory holding `config`, or (resume) the existing one with its own config."""
        run = cls(path)
        if resume:
            if not (run.path / CONFIG).is_file():
                raise HwnasError(f"--resume: {run.path} holds no {CONFIG}; start a new run with --out {run.path}")
            return run
        if not is_main():  # under torchrun rank 0 makes the run; the others checked `path` before it did
            return run
        cls.check_new(run.path)
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
        import pandas as pd

        atomic_write(self.file(METRICS), lambda f: pd.DataFrame(rows).to_csv(f, index=False))

    def save_checkpoint(self, state: dict) -> None:
        import torch

        atomic_write(self.file(CHECKPOINT), lambda f: torch.save(state, f))

    def load_checkpoint(self, map_location=None, keys: tuple[str, ...] = ()) -> dict | None:
        """The saved state (None without a checkpoint); `keys` it must hold, else it is not this run's kind."""
        path = self.file(CHECKPOINT)
        if not path.is_file():
            return None
        state = load_torch_file(path, "an hwnas checkpoint", "checkpoint", map_location)
        missing = [k for k in keys if k not in state] if isinstance(state, dict) else list(keys)
        if missing or not isinstance(state, dict):
            raise HwnasError(f"{path} is not an hwnas checkpoint of this kind of run (it has no "
                             f"{', '.join(missing) or 'state'}); remove it (or choose another --out)")
        return state
