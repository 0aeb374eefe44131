"""What every command shares: one-line errors, what an interruption leaves, progress (live bars on a
terminal, one line per epoch in a log), readable --help."""
from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hwnas.distributed import is_main
from hwnas.errors import HwnasError, HwnasWarning

# Under torchrun only rank 0 speaks: progress, results and one-line errors (a user error is the same on every
# rank); the other ranks' output is dropped. Tracebacks of unexpected failures still come from every rank.
console = Console(quiet=not is_main())
err_console = Console(stderr=True, quiet=not is_main())
_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The library's `HwnasWarning`s as one `warning:` line like the CLI's own; any other as Python shows it."""
    if issubclass(category, HwnasWarning):
        console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


warnings.showwarning = _show_warning


def user_errors(fn: Callable | None = None, *, interrupted: Callable[[dict], str] | None = None) -> Callable:
    """Turn HwnasError (and a path that cannot be used) into `error: <message>` on stderr and exit status 2 —
    never a traceback. Ctrl-C prints `interrupted`, with `interrupted(options)` saying what the command
    left and how to go on (each command its own: only search, train and prune can resume), exit status 130."""
    if fn is None:
        return functools.partial(user_errors, interrupted=interrupted)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HwnasError as e:
            _fail(str(e))
        except (NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError) as e:
            _fail(_path_error(e))
        except KeyboardInterrupt:
            note = interrupted(kwargs) if interrupted is not None else ""
            err_console.print("[yellow]interrupted[/]" + (f": {escape(note)}" if note else ""), highlight=False,
                              soft_wrap=True)
            raise typer.Exit(130) from None

    return wrapper


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2) from None


def _path_error(e: OSError) -> str:
    """One line for an OS refusal of a path the user gave (a file where a folder must be, no permission)."""
    path = Path(e.filename) if e.filename else None
    if isinstance(e, FileExistsError) and path is not None and path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder; choose a path inside a folder"
    if isinstance(e, NotADirectoryError) and path is not None:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{path}: {blocker} is a file, not a folder; choose a path inside a folder"
    return f"{path}: {e.strerror}; choose another path" if path is not None else str(e)


@contextmanager
def epoch_progress(total_epochs: int, done: int = 0, label: str = "epochs"):
    """Progress over epochs; yields (on_step, on_epoch_end). On a terminal: two live bars (epochs, steps in
    this epoch) and a line per epoch. Otherwise (a log file, a pipe): only the line per epoch, flushed as it
    is printed, so a log shows progress (a live bar is never written there). Rows with `phase` are
    warm-up epochs (a line each, outside the epoch count)."""
    if not is_main():  # under torchrun, rank 0 reports progress
        yield None, None
        return
    if not console.is_terminal:
        yield None, functools.partial(_epoch_line, None, label, total_epochs)
        return
    with Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as progress:
        epochs = progress.add_task(label, total=total_epochs, completed=done)
        steps = progress.add_task("steps", total=1)

        def on_step(i: int, n: int) -> None:
            progress.update(steps, completed=i, total=n)

        def on_epoch_end(row: dict) -> None:
            if "phase" not in row:
                progress.advance(epochs)
            _epoch_line(progress.console, label, total_epochs, row)

        yield on_step, on_epoch_end


def _epoch_line(out: Console | None, label: str, total: int, row: dict) -> None:
    """`search epoch 3/10: train_acc 0.912  val_acc 0.887  (4.1 s)`; a warm-up row names its phase."""
    shown = {k: row[k] for k in ("train_acc", "val_acc", "test_acc") if k in row}
    where = f"{row['phase']} epoch {row['epoch']}/{row['epochs']}" if "phase" in row else f"epoch {row['epoch']}/{total}"
    (out or console).print(f"{label} {where}: " + "  ".join(f"{k} {v:.3f}" for k, v in shown.items())
                           + f"  ({row['epoch_seconds']:.1f} s)", highlight=False, soft_wrap=True)


def readable_help(app: typer.Typer) -> None:
    """--help that reads naturally: a command's description reflowed (the rich help keeps a docstring's
    line breaks, which cut formulas in two), flags shown without a `<bool>` value, repeatable options as
    `<path> …` instead of `<list[Path]>`, arguments in the usage line as `RUN` / `[RUN]` instead of `{run}`."""
    for info in _commands(app):
        doc = info.help or inspect.getdoc(info.callback) or ""
        info.help = "\n\n".join(" ".join(p.split()) for p in doc.split("\n\n"))
    from typer.core import TyperArgument, TyperOption

    if getattr(TyperOption, "_hwnas_readable", False):
        return
    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        if self.is_bool_flag:
            return None
        label = shown(self, ctx)
        if label and label.startswith("<list[") and label.endswith("]>"):
            return f"<{label[len('<list['):-2].lower()}> …"
        return label

    def usage_name(self) -> str:
        name = (self.metavar or self.name).upper()
        return (name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")

    TyperOption.display_type_rich = display_type_rich
    TyperArgument._usage_display_name = usage_name
    TyperOption._hwnas_readable = True


def _commands(app: typer.Typer):
    yield from app.registered_commands
    for group in app.registered_groups:
        yield from _commands(group.typer_instance)
