"""`mcos up` acts with its host's own token, never the founder's operator token."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from mcos.client import Calls
from mcos.config.scaffold import init_fleet
from tests.e2e.cli_helpers import mcos
from tests.supervisor.conftest import RigFactory, agent_pids, wait_for

pytestmark = pytest.mark.postgres

AGENTS = """
[agents.gene]
role = "ops"
host = "mini"
"""


def test_mcos_up_runs_with_its_host_token_file_and_no_operator_token(
    fleet_rig_factory: RigFactory,
) -> None:
    """The operator saves mini's token (`mcos token create --host mini --save`); the operator
    token then leaves the machine. `mcos up --host mini` finds its own token in
    STATE/hosts/mini.token, runs gene, and everything it does is audited as host:mini."""
    rig = fleet_rig_factory(AGENTS)
    state = rig.fleet.parent / "state"
    env = {"MCOS_TOKEN": rig.token}
    saved = mcos("token", "create", "--host", "mini", "--save", "-f", str(rig.fleet), env=env)
    token_file = state / "hosts" / "mini.token"
    assert str(token_file) in saved.stdout.replace("\n", "")
    assert rig.token not in saved.stdout
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert (state / "hosts").stat().st_mode & 0o077 == 0
    shutil.move(state / "operator.token", rig.fleet.parent / "operator.token.away")
    sup = rig.up("mini", env={})  # neither $MCOS_HOST_TOKEN nor $MCOS_TOKEN
    wait_for("gene running", lambda: len(agent_pids(rig.fleet).get("gene", [])) == 1)
    with rig.client() as op:
        granted = op.do(Calls.audit(action="lease.granted"))
        minted = [t for t in op.do(Calls.tokens("gene")) if t.revoked_at is None]
    assert {r.actor for r in granted} == {"host:mini"}
    assert [t.label.split()[0] for t in minted] == ["host:mini"]
    sup.process.send_signal(signal.SIGTERM)
    assert sup.process.wait(30) == 0, sup.output()
    with rig.client() as op:  # it revoked gene's token as it stopped
        assert all(t.revoked_at is not None for t in op.do(Calls.tokens("gene")))


def test_mcos_up_refuses_a_host_token_file_others_can_read(tmp_path: Path) -> None:
    fleet = init_fleet(tmp_path / "fleet", template="small")
    token_file = tmp_path / "fleet" / "state" / "hosts" / "local.token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("mcos_aaaaaaaaaaaa_" + "b" * 43 + "\n")
    os.chmod(token_file, 0o644)
    done = mcos("up", "--host", "local", "-f", str(fleet), check=False)
    assert done.returncode == 78, done.stderr
    assert f"mode 0644 lets others read the host token; chmod 600 {token_file}" in " ".join(
        done.stderr.split()
    )
