"""Generated launchd jobs load with plistlib and pass our lint; the lint catches what launchctl
lets through; `mcos launchd exec` turns a configuration error into an exit launchd leaves be."""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcos.cli import app
from mcos.config import load_fleet
from mcos.config.scaffold import init_fleet
from mcos.exceptions import EX_CONFIG
from mcos.supervisor.launchd import check, generate, launchd_exit

FIELD_JOB = {
    "Label": "ai.openclaw.gateway",
    "ProgramArguments": ["/usr/local/bin/openclaw", "gateway"],
    "KeepAlive": True,
    "AbandonProcessGroup": True,
    "ThrottleInterval": 0,
    "StartInterval": "60",
    "KeepAliev": {"SuccessfulExit": False},
    "EnvironmentVariables": {"TELEGRAM_BOT_TOKEN": "123:abc", "ANTHROPIC_API_KEY": " "},
}
"""A job as written by hand: keeps restarting on any exit, abandons its children, a typo."""


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """The business fleet's jobs for the Mac Mini, written and read back with plistlib."""
    home = tmp_path_factory.mktemp("mini")
    fleet = load_fleet(init_fleet(home / "biz", template="business"))
    out = {}
    for job in generate(fleet, "mini"):
        path = home / job.name
        path.write_bytes(job.dumps())
        assert check(path) == [], job.name
        out[job.label] = plistlib.loads(path.read_bytes())
    return out


class TestGenerate:
    """The jobs restart failures only, stop their whole group, and log to files."""

    def test_labels(self, jobs: dict[str, dict[str, object]]) -> None:
        """Mission Control and the mini supervisor, labelled by fleet and host."""
        assert sorted(jobs) == ["org.mcos.business.mini", "org.mcos.business.server"]

    def test_restart_policy(self, jobs: dict[str, dict[str, object]]) -> None:
        """KeepAlive on failure, a pause between starts, SIGKILL 30 s after SIGTERM."""
        for job in jobs.values():
            assert job["KeepAlive"] == {"SuccessfulExit": False}
            assert job["ThrottleInterval"] == 10
            assert job["ExitTimeOut"] == 30
            assert job["AbandonProcessGroup"] is False
            assert job["RunAtLoad"] is True

    def test_runs_through_the_exit_guard(self, jobs: dict[str, dict[str, object]]) -> None:
        """Each job runs `mcos launchd exec -- …`: the supervisor `up --host mini`."""
        args = jobs["org.mcos.business.mini"]["ProgramArguments"]
        assert isinstance(args, list)
        assert args[3:8] == ["mcos", "launchd", "exec", "--", "up"]
        assert args[8:10] == ["--host", "mini"]

    def test_logs_to_files(self, jobs: dict[str, dict[str, object]]) -> None:
        """Standard output and error go to files in the fleet's state folder."""
        for label, job in jobs.items():
            assert str(job["StandardOutPath"]).endswith(f"state/logs/{label}.out.log")
            assert str(job["StandardErrorPath"]).endswith(f"state/logs/{label}.err.log")


class TestCheck:
    """The lint names each mistake launchd would accept silently."""

    def test_field_job(self, tmp_path: Path) -> None:
        """Restart loops, abandoned children, typos, wrong types, secrets, lost logs."""
        path = tmp_path / "ai.openclaw.gateway.plist"
        path.write_bytes(plistlib.dumps(FIELD_JOB))
        problems = "\n".join(f.problem for f in check(path))
        for expected in (
            "KeepAlive = true restarts every exit",
            "AbandonProcessGroup = true leaves child processes alive",
            "ThrottleInterval = 0",
            "KeepAliev: not a launchd key",
            "StartInterval: must be int, not str",
            "carries the secret TELEGRAM_BOT_TOKEN",
            "EnvironmentVariables.ANTHROPIC_API_KEY is empty",
            "no StandardOutPath",
            "no StandardErrorPath",
            "exit 78) would be restarted in a loop",
        ):
            assert expected in problems, expected

    def test_label_and_program(self, tmp_path: Path) -> None:
        """A label that is not the file's name, nothing to run, a KeepAlive typo."""
        path = tmp_path / "org.example.job.plist"
        path.write_bytes(plistlib.dumps({"Label": "org.example.other",
                                         "KeepAlive": {"SucessfulExit": False}}))  # fmt: skip
        problems = "\n".join(f.problem for f in check(path))
        assert "differs from the file name" in problems
        assert "nothing to run" in problems
        assert "KeepAlive.SucessfulExit: not a KeepAlive condition" in problems

    def test_not_a_plist(self, tmp_path: Path) -> None:
        """A file that is not a property list is named, not a traceback."""
        path = tmp_path / "broken.plist"
        path.write_text("<plist><dict><key>Label</key>")
        [finding] = check(path)
        assert "not a property list" in finding.problem


class TestCli:
    """`mcos launchd generate`, `check` and `exec`, as an operator types them."""

    def test_generate_then_check(self, tmp_path: Path) -> None:
        """Generate for mini without Mission Control (it runs on the VPS), then check: ok."""
        runner = CliRunner()
        init_fleet(tmp_path / "biz", template="business")
        fleet = str(tmp_path / "biz" / "fleet.toml")
        out = tmp_path / "jobs"
        made = runner.invoke(app, ["launchd", "generate", "--host", "mini", "--no-server",
                                   "--out", str(out), "-f", fleet])  # fmt: skip
        assert made.exit_code == 0, made.output
        [job] = out.iterdir()
        assert job.name == "org.mcos.business.mini.plist"
        assert (tmp_path / "biz" / "state" / "logs").is_dir()  # launchd does not create it
        checked = runner.invoke(app, ["launchd", "check", str(job)])
        assert checked.exit_code == 0, checked.output
        wrong = runner.invoke(app, ["launchd", "generate", "--host", "macbook", "-f", fleet])
        assert wrong.exit_code == 1
        assert "known: mini, vps" in wrong.output

    def test_check_fails_on_a_bad_job(self, tmp_path: Path) -> None:
        """A bad job exits 1 with its problems listed."""
        path = tmp_path / "ai.openclaw.gateway.plist"
        path.write_bytes(plistlib.dumps(FIELD_JOB))
        checked = CliRunner().invoke(app, ["launchd", "check", str(path)])
        assert checked.exit_code == 1
        assert "AbandonProcessGroup" in checked.output

    def test_exec_turns_a_configuration_error_into_a_clean_exit(self, tmp_path: Path) -> None:
        """`mcos server` on a broken fleet file exits 78; through `launchd exec` it exits 0 and
        says why, so KeepAlive = {SuccessfulExit = false} does not restart it forever."""
        bad = tmp_path / "fleet.toml"
        bad.write_text('[hosts.a]\n[agents.x]\nrole = "ops"\nhost = "nope"\n')
        runner = CliRunner()
        direct = runner.invoke(app, ["server", "--fleet", str(bad)])
        assert direct.exit_code == EX_CONFIG
        guarded = runner.invoke(app, ["launchd", "exec", "--", "server", "--fleet", str(bad)])
        assert guarded.exit_code == 0
        assert "unknown host 'nope'" in guarded.output
        assert "launchd does not restart it" in guarded.output

    def test_exec_passes_other_failures_on(self) -> None:
        """Any other failure keeps its status, so launchd restarts it; 78 alone becomes 0."""
        assert launchd_exit(EX_CONFIG) == 0
        assert launchd_exit(1) == 1
        assert launchd_exit(0) == 0
        assert launchd_exit(-9) == -9
        usage = CliRunner().invoke(app, ["launchd", "exec", "--", "no-such-command"])
        assert usage.exit_code == 2
