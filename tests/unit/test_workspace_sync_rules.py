"""The pure rules of workspace sync: which paths a manifest may name, what a pull does with
each file, and the fleet file's ``[workspace_sync]`` with an agent's overrides."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mcos.config.models import AgentConfig, Fleet, FleetFile, WorkspaceSyncConfig
from mcos.domain.workspace_sync import (
    Action,
    Base,
    WorkspaceFile,
    batches,
    change,
    fetch_plan,
    hash_problem,
    path_problem,
    plan_pull,
)

A, B, C = "a" * 64, "b" * 64, "c" * 64


class TestPaths:
    """A manifest names relative paths inside the workspace, outside ``.mcos/``."""

    @pytest.mark.parametrize(
        "path", ["MEMORY.md", "memory/2026-12-03.md", "notes/a b/ç.md", ".hidden/x", "a..b.md"]
    )
    def test_fine(self, path: str) -> None:
        """Ordinary workspace files pass, dots inside names too."""
        assert path_problem(path) is None

    @pytest.mark.parametrize(
        ("path", "problem"),
        [
            ("", "empty"),
            ("../x", ".."),
            ("a/../../x", ".."),
            ("/etc/passwd", "absolute"),
            ("c:/x", "absolute"),
            ("a\\b", "backslash"),
            ("a//b", "empty"),
            ("./a", "'.'"),
            ("a/", "empty"),
            (".mcos/memory.db", ".mcos"),
            ("a\nb", "control"),
            ("x" * 1001, "limit"),
        ],
    )
    def test_refused(self, path: str, problem: str) -> None:
        """Each way out of the workspace, or into the runtime's own state, is named."""
        found = path_problem(path)
        assert found is not None
        assert problem in found

    def test_hashes(self) -> None:
        """Only 64 lowercase hex digits are a sha256."""
        assert hash_problem(A) is None
        assert hash_problem(A.upper()) is not None
        assert hash_problem(A[:63]) is not None


class TestPlanPull:
    """Three-way: this host's files, its base (last sync), the fleet's latest version."""

    def test_a_fresh_host_takes_every_file(self) -> None:
        """Missing files are written; a differing local file never synced is kept aside."""
        plan = plan_pull({"MEMORY.md": B}, Base(0, {}), 3, {"MEMORY.md": A, "SOUL.md": C})
        assert plan == {"MEMORY.md": Action.WRITE_KEEP_LOCAL, "SOUL.md": Action.WRITE}

    def test_unchanged_here_takes_the_newer_version(self) -> None:
        """A file as this host last synced it is overwritten by the fleet's newer one."""
        plan = plan_pull({"M": A, "L": A}, Base(2, {"M": A, "L": A}), 5, {"M": B, "L": A})
        assert plan == {"M": Action.WRITE}

    def test_edited_here_after_the_last_push_is_kept(self) -> None:
        """Nobody pushed since this host's base: its own newer edit stays (the next push
        sends it) — a restart on the same host after a failed push loses nothing."""
        plan = plan_pull({"M": B}, Base(4, {"M": A}), 4, {"M": A})
        assert plan == {"M": Action.KEEP_LOCAL}

    def test_both_changed_the_fleet_wins_and_the_local_copy_is_kept(self) -> None:
        plan = plan_pull({"M": C}, Base(4, {"M": A}), 6, {"M": B})
        assert plan == {"M": Action.WRITE_KEEP_LOCAL}

    def test_deleted_by_the_live_instance(self) -> None:
        """A file the fleet dropped goes here too, only if unchanged here since the base;
        a file only this host has (never synced) stays."""
        local = {"gone.md": A, "edited.md": C, "mine.md": B}
        plan = plan_pull(local, Base(1, {"gone.md": A, "edited.md": A}), 2, {})
        assert plan == {"gone.md": Action.DELETE}

    def test_an_older_fleet_version_changes_nothing(self) -> None:
        """A store restored from an old backup: this host keeps its files."""
        assert plan_pull({"M": A}, Base(9, {"M": A}), 3, {"M": B, "N": C}) == {}


class TestConfig:
    """``[workspace_sync]`` and ``[agents.X.workspace_sync]``."""

    def test_defaults_are_on_and_exclude_documents(self) -> None:
        c = WorkspaceSyncConfig()
        assert c.enabled
        assert c.max_file_bytes == 1024 * 1024
        assert "knowledge/" in c.exclude
        assert "*.pdf" in c.exclude

    def test_an_agent_overrides_only_the_keys_it_gives(self) -> None:

        fleet = Fleet.model_validate(
            {
                "workspace_sync": {"max_file_bytes": 5000, "exclude": ["*.bin"]},
                "agents": {
                    "gene": {"role": "ops", "host": "mini", "workspace_sync": {"enabled": False}},
                    "jarvis": {"role": "orchestrator", "host": "vps"},
                },
            }
        )
        gene, jarvis = fleet.workspace_sync_for("gene"), fleet.workspace_sync_for("jarvis")
        assert (gene.enabled, gene.max_file_bytes, gene.exclude) == (False, 5000, ["*.bin"])
        assert (jarvis.enabled, jarvis.max_file_bytes) == (True, 5000)

    @pytest.mark.parametrize(
        "bad",
        [
            {"max_file_bytes": 0},
            {"max_file_bytes": 9 * 1024 * 1024},
            {"exclude": [" "]},
            {"unknown": 1},
        ],
    )
    def test_bad_values_are_refused(self, bad: dict[str, object]) -> None:
        with pytest.raises(ValidationError):
            FleetFile.model_validate({"workspace_sync": bad})
        with pytest.raises(ValidationError):
            AgentConfig.model_validate({"role": "ops", "host": "h", "workspace_sync": bad})


class TestChange:
    """A commit writes the difference, not the whole workspace again."""

    def test_only_what_moved(self) -> None:
        before = [WorkspaceFile("M", A, 1), WorkspaceFile("L", B, 2), WorkspaceFile("old", C, 3)]
        after = [WorkspaceFile("M", A, 1), WorkspaceFile("L", C, 4), WorkspaceFile("new", B, 2)]
        diff = change(before, after)
        assert diff.removed == ["old"]
        assert diff.written == [WorkspaceFile("L", C, 4), WorkspaceFile("new", B, 2)]
        assert diff.unnamed == []  # B and C are still named (new, L)
        assert change(after, [WorkspaceFile("M", A, 1)]).unnamed == sorted([B, C])


class TestBatches:
    """Blobs travel in batches bounded in bytes and in count; a large one alone."""

    def test_bytes_and_count_bound_each_batch_in_order(self) -> None:
        """A batch closes before the item that would take it past either bound."""
        items = [("a", 3), ("b", 3), ("c", 4), ("d", 1), ("e", 1), ("f", 1)]
        assert batches(items, max_bytes=10, max_count=3) == [["a", "b", "c"], ["d", "e", "f"]]
        assert batches(items, max_bytes=6, max_count=10) == [["a", "b"], ["c", "d", "e"], ["f"]]
        assert batches([], max_bytes=6) == []

    def test_an_item_over_the_byte_bound_goes_alone(self) -> None:
        """A file larger than a batch is still sent, in a batch of its own."""
        items = [("a", 2), ("big", 50), ("b", 2)]
        assert batches(items, max_bytes=10) == [["a"], ["big"], ["b"]]

    def test_fetch_plan_takes_what_fits_and_names_the_unknown(self) -> None:
        """A fetch answers the first hashes that fit, leaves the rest; any unknown hash means
        nothing is answered (the asker's manifest is out of date)."""
        sizes = {A: 6, B: 6, C: 20}
        assert fetch_plan([A, B, C], sizes, 12) == ([A, B], [C], [])
        assert fetch_plan([C, A], sizes, 12) == ([C], [A], [])
        assert fetch_plan([A, "d" * 64, B], sizes, 12) == ([], [], ["d" * 64])
        assert fetch_plan([], sizes, 12) == ([], [], [])
