"""A matrix that would leave an item undecidable stops `mcos config check` with exit 78, the
key path and who would be stuck; the scaffolded fleet and a one-human fleet are accepted."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.cli_helpers import mcos


def _fleet(tmp_path: Path, authority: str = "") -> Path:
    mcos("init", str(tmp_path / "f"))
    path = tmp_path / "f" / "fleet.toml"
    path.write_text(path.read_text() + authority)
    return path


class TestUndecidableMatrix:
    """Liveness is checked at load, like every other configuration error."""

    def test_the_scaffolded_fleet_has_no_dead_end(self, tmp_path: Path) -> None:
        """One orchestrator, one security agent, one human: every item decidable."""
        result = mcos("config", "check", "-f", str(_fleet(tmp_path)))
        assert "warning" not in result.stdout
        assert result.stdout.strip().endswith(": ok")

    def test_a_dead_end_is_refused_with_the_key_path(self, tmp_path: Path) -> None:
        """Only humans may confirm a P1, but the founder is the only human: the founder's own
        P1 could never be decided. Refused, naming the key and the stuck reporter."""
        path = _fleet(tmp_path, '\n[authority."confirm_incident:P1"]\nalone = ["human"]\n')
        result = mcos("config", "check", "-f", str(path), check=False)
        assert result.returncode == 78
        said = " ".join(result.stderr.split())  # the console wraps long lines
        assert (
            'authority."declare_incident:P1".approve: a P1 incident raised by agent:gene, '
            "agent:jarvis, agent:sentinel, human:founder could never be decided"
        ) in said
        assert "Traceback" not in result.stderr
