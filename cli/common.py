"""What every command shares: one-line errors, progress bars, tables."""
from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hwnas.errors import HwnasError

console = Console()
err_console = Console(stderr=True)


def user_errors(fn: Callable) -> Callable:
    """Turn HwnasError into `error: <message>` on stderr and exit status 2 — never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HwnasError as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: a search can be continued with --resume")
            raise typer.Exit(130) from None

    return wrapper


def parse_lambda_max(text: str, allowed: tuple[str, ...] = ("auto",)) -> float | str | None:
    """--lambda-max: 'auto' (None: estimated from Theorem 1), another allowed word (returned as it is), or a number."""
    if text == "auto":
        return None
    if text in allowed:
        return text
    try:
        return float(text)
    except ValueError:
        raise HwnasError(f"--lambda-max {text!r}: expected {' or '.join(repr(a) for a in allowed)} or a number") \
            from None


@contextmanager
def epoch_progress(total_epochs: int, done: int = 0, label: str = "epochs"):
    """A two-line progress display (epochs, steps in this epoch); yields (on_step, on_epoch_end)."""
    with Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as progress:
        epochs = progress.add_task(label, total=total_epochs, completed=done)
        steps = progress.add_task("steps", total=1)

        def on_step(i: int, n: int) -> None:
            progress.update(steps, completed=i, total=n)

        def on_epoch_end(row: dict) -> None:
            progress.advance(epochs)
            shown = {k: row[k] for k in ("train_acc", "val_acc", "test_acc") if k in row}
            progress.console.print(
                f"epoch {row['epoch']}: " + "  ".join(f"{k} {v:.3f}" for k, v in shown.items())
                + f"  ({row['epoch_seconds']:.1f} s)", highlight=False)

        yield on_step, on_epoch_end
