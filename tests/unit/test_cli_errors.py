"""CLI error lines say the whole message, brackets included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import mcos
from mcos.cli import app
from mcos.cli.common import console, fail, friendly_errors, table
from mcos.exceptions import ConfigError, ConfigErrors, Forbidden


def test_a_refusal_keeps_the_quorum_it_quotes(capsys: pytest.CaptureFixture[str]) -> None:
    """A 403 naming ``1 of [role:orchestrator, human]`` is printed with its brackets (Rich
    would read them as markup and print 'needs 1 of )')."""
    message = "broadcast_urgent may not be done alone (needs 1 of [role:orchestrator, human])"
    with pytest.raises(typer.Exit) as ended, friendly_errors():
        raise Forbidden(message)
    assert ended.value.exit_code == 1
    assert "needs 1 of [role:orchestrator, human])" in capsys.readouterr().err


def test_config_errors_keep_their_key_paths(capsys: pytest.CaptureFixture[str]) -> None:
    """Key paths such as ``agents.[jarvis]`` and ``[bold]`` text survive as written."""
    with pytest.raises(typer.Exit) as ended, friendly_errors():
        raise ConfigErrors([ConfigError("fleet.toml", "[server] store", "'[bold]x' is not a URL")])
    assert ended.value.exit_code == 78
    assert "fleet.toml: [server] store: '[bold]x' is not a URL" in capsys.readouterr().err
    with pytest.raises(typer.Exit):
        fail("[/] unbalanced")
    assert "[/] unbalanced" in capsys.readouterr().err


def test_server_and_config_text_in_lines_and_tables_prints_literally(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whatever the CLI prints — a subject from the server, a fleet file's key path — keeps its
    brackets, in a line and in a table cell alike."""
    console.print("[URGENT] needs 1 of [role:orchestrator, human] [/]")
    table("inbox", ["subject"], [["[bold]deploy[/bold] [role:ops]"]])
    out = capsys.readouterr().out
    assert "[URGENT] needs 1 of [role:orchestrator, human] [/]" in out
    assert "[bold]deploy[/bold] [role:ops]" in out


def test_a_unit_files_problem_keeps_its_brackets(tmp_path: Path) -> None:
    """`mcos systemd check` names the file as it is ('a[b]c.service' printed 'ac.service')."""
    unit = tmp_path / "a[b]c.service"
    unit.write_text("[Unit]\nDescription=x\n\n[Service]\nExecStart=/bin/true\nKillMode=process\n")
    result = CliRunner().invoke(app, ["systemd", "check", str(unit)])
    assert result.exit_code == 1
    assert f"{unit}:" in result.output


def test_the_cli_styles_without_markup() -> None:
    """The consoles print no markup, so a styled line written as markup would show its tags:
    style with ``styled()`` or ``style=`` instead (this catches one added later)."""
    markup = re.compile(r"\[/\]|\[/?(bold|red|green|yellow|dim|italic|cyan|blue|magenta)\b")
    for path in sorted((Path(mcos.__file__).parent / "cli").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not markup.search(line), f"{path.name}:{number}: Rich markup: {line.strip()}"
