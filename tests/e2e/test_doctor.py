"""`mcos doctor` names every fault of a broken installation and passes a healthy one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcos.cli import app
from mcos.config.scaffold import init_fleet

CANARY = "sk-ant-api03-CANARYCANARYCANARYCANARY"
runner = CliRunner()


def _doctor(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["doctor", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_a_healthy_fleet_passes(tmp_path: Path) -> None:
    path = init_fleet(tmp_path / "fleet")
    assert runner.invoke(app, ["db", "upgrade", "-f", str(path)]).exit_code == 0
    code, out = _doctor("-f", str(path))
    assert code == 0, out
    assert "ok   store: sqlite at schema version" in out


def test_every_fault_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = init_fleet(tmp_path / "fleet")
    monkeypatch.setenv("MCOS_DOCTOR_EMPTY", "   ")
    monkeypatch.setenv("MCOS_DOCTOR_LITERAL", "${ANTHROPIC_API_KEY}")
    monkeypatch.setenv("MCOS_DOCTOR_GOOD", CANARY)
    (tmp_path / "fleet" / "empty.key").write_text("")
    text = path.read_text()
    claude = 'model = { provider = "anthropic", id = "claude-sonnet-4-6" }'
    offline = 'model = { provider = "offline", id = "offline-1", context_window = 200000 }'
    for agent, key in (
        ("jarvis", "env:MCOS_DOCTOR_EMPTY"),
        ("gene", "file:empty.key"),
        ("sentinel", "env:MCOS_DOCTOR_LITERAL"),
    ):
        text = text.replace(f"[agents.{agent}]\nrole", f'[agents.{agent}]\nkey = "{key}"\nrole', 1)
    text = text.replace(offline, claude)
    path.write_text(text)
    unit = tmp_path / "gateway.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nKillMode=process\nRestart=always\n")
    code, out = _doctor("-f", str(path), "--units", str(unit))
    assert code == 1
    assert "FAIL secret jarvis: env:MCOS_DOCTOR_EMPTY is empty" in out
    assert "FAIL secret gene: file:empty.key is empty" in out
    assert "FAIL secret sentinel: env:MCOS_DOCTOR_LITERAL holds an unexpanded variable" in out
    assert "FAIL store: schema version 0" in out
    assert "run `mcos db upgrade`" in out
    assert "FAIL unit gateway.service: KillMode=process" in out
    code, out = _doctor("-f", str(path), "--json")
    lines = json.loads(out)
    assert {v["check"] for v in lines if v["status"] == "fail"} >= {
        "secret jarvis",
        "secret gene",
        "secret sentinel",
        "store",
    }
    assert CANARY not in out


def test_a_broken_fleet_file_is_named_with_its_key(tmp_path: Path) -> None:
    path = init_fleet(tmp_path / "fleet")
    path.write_text(path.read_text().replace('host = "local"', 'host = "vps2"', 1))
    code, out = _doctor("-f", str(path))
    assert code == 1
    assert "unknown host 'vps2'" in out


def test_live_checks_call_the_provider_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes.anthropic_server import FakeAnthropic

    with FakeAnthropic(api_key="sk-ant-good-key-0123456789") as fake:
        path = init_fleet(tmp_path / "fleet")
        monkeypatch.setenv("MCOS_DOCTOR_GOOD", "sk-ant-good-key-0123456789")
        monkeypatch.setenv("MCOS_DOCTOR_BAD", "sk-ant-revoked-key-987654321")
        offline = 'model = { provider = "offline", id = "offline-1", context_window = 200000 }'
        text = path.read_text()
        for agent, var in (("jarvis", "MCOS_DOCTOR_GOOD"), ("gene", "MCOS_DOCTOR_BAD")):
            start = text.index(f"[agents.{agent}]")
            claude = (
                f'model = {{ provider = "anthropic", id = "claude-sonnet-4-6", '
                f'base_url = "{fake.url}" }}\nkey = "env:{var}"'
            )
            text = text[:start] + text[start:].replace(offline, claude, 1)
        path.write_text(text)
        assert runner.invoke(app, ["db", "upgrade", "-f", str(path)]).exit_code == 0
        code, out = _doctor("-f", str(path), "--live")
    assert code == 1
    assert (
        "ok   secret jarvis: env:MCOS_DOCTOR_GOOD present (26 chars); accepted by anthropic" in out
    )
    assert (
        "FAIL secret gene: env:MCOS_DOCTOR_BAD present (28 chars); live check: the key was refused"
        in out
    )
    assert "revoked-key" not in out


def test_config_check_judges_keys_as_doctor_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `mcos config check` said ok where doctor failed (an empty variable, a literal
    ${ANTHROPIC_KEY}). Now both fail, config check with exit 78 naming agent and reference."""
    path = init_fleet(tmp_path / "fleet")
    monkeypatch.setenv("MCOS_CHECK_EMPTY", "")
    monkeypatch.setenv("MCOS_CHECK_LITERAL", "${ANTHROPIC_KEY}")
    text = path.read_text()
    for agent, var in (("jarvis", "MCOS_CHECK_EMPTY"), ("gene", "MCOS_CHECK_LITERAL")):
        text = text.replace(f"[agents.{agent}]\nrole", f'[agents.{agent}]\nkey = "env:{var}"\nrole')
    path.write_text(text)
    checked = runner.invoke(app, ["config", "check", "-f", str(path)], env={"COLUMNS": "300"})
    assert checked.exit_code == 78
    assert "agents.jarvis.key: agent jarvis: env:MCOS_CHECK_EMPTY is empty" in checked.output
    assert (
        "agents.gene.key: agent gene: env:MCOS_CHECK_LITERAL holds an unexpanded variable "
        "(${ANTHROPIC_KEY}), not a key" in checked.output
    )
    code, out = _doctor("-f", str(path))
    assert code == 1
    assert "FAIL secret jarvis: env:MCOS_CHECK_EMPTY is empty" in out
    assert "FAIL secret gene: env:MCOS_CHECK_LITERAL holds an unexpanded variable" in out


def test_doctor_names_a_deprecated_model_and_how_each_is_priced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deprecated id is a warning naming its replacement (doctor still passes: the model
    answers); a current one says where its price comes from."""
    path = init_fleet(tmp_path / "fleet")
    offline = 'model = { provider = "offline", id = "offline-1", context_window = 200000 }'
    text = path.read_text()
    for agent, model in (("jarvis", "claude-sonnet-4-5"), ("gene", "claude-sonnet-5-5")):
        var = f"MCOS_DOCTOR_{agent.upper()}"
        monkeypatch.setenv(var, f"sk-ant-{agent}-0123456789")
        start = text.index(f"[agents.{agent}]")
        claude = f'model = {{ provider = "anthropic", id = "{model}" }}\nkey = "env:{var}"'
        text = text[:start] + text[start:].replace(offline, claude, 1)
    path.write_text(text)
    assert runner.invoke(app, ["db", "upgrade", "-f", str(path)]).exit_code == 0
    code, out = _doctor("-f", str(path), "--json")
    assert code == 0, out
    models = {v["check"]: v for v in json.loads(out) if v["check"].startswith("model ")}
    assert models == {
        "model jarvis": {
            "check": "model jarvis",
            "status": "warn",
            "detail": "claude-sonnet-4-5 is deprecated since 2026-11-30; use claude-sonnet-5-5 "
            "(priced by genai-prices (anthropic claude-sonnet-4-5): 3 in / 15 out USD per "
            "million tokens)",
            "fix": 'set agents.jarvis.model.id = "claude-sonnet-5-5"',
        },
        "model gene": {
            "check": "model gene",
            "status": "ok",
            "detail": "claude-sonnet-5-5: priced by genai-prices (anthropic claude-sonnet-5-5): "
            "2 in / 10 out USD per million tokens",
            "fix": "",
        },
    }
