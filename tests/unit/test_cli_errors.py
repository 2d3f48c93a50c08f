"""CLI error lines say the whole message, brackets included."""

from __future__ import annotations

import pytest
import typer

from mcos.cli.common import fail, friendly_errors
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
