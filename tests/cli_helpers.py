"""Assertions shared by the CLI tests: success without a traceback, or a clean one-line failure."""


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.output


def fails_cleanly(result, *fragments, first_line: bool = False) -> None:
    """Exit status 2, an `error:` line, no traceback; `first_line`: the error is the first thing printed."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert any(ln.startswith("error:") for ln in lines), result.output
    if first_line:
        assert lines[0].startswith("error:"), result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    for f in fragments:
        assert f in text


def commands(group=None, path: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command and subcommand of `hwnas` (groups included), as argument lists: [], ["search"], …,
    ["profile", "bundle"], so a test over them covers a command added later."""
    if group is None:
        import typer.main
        from hwnas_cli.app import app

        group = typer.main.get_command(app)
    found = [list(path)]
    for name, cmd in getattr(group, "commands", {}).items():
        found += commands(cmd, (*path, name))
    return found
