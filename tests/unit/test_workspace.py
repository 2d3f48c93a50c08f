"""The workspace as the prompt sees it: order, caps with visible cuts, OpenClaw files, logs."""

from __future__ import annotations

import multiprocessing
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcos.exceptions import ConfigError
from mcos.runtime.workspace import (
    ORDER,
    Limits,
    TurnKind,
    Workspace,
    assemble,
    cut,
    guardrail_entries,
    is_effectively_empty,
)
from tests.waiting import wait_until

OPENCLAW = Path(__file__).parent.parent / "fixtures" / "openclaw_workspace"


def files(**sizes: int) -> dict[str, str]:
    return {f"{name}.md": name[0] * size for name, size in sizes.items()}


class TestOrder:
    """Files load in one fixed order, by turn kind."""

    def test_fixed_order_whatever_the_input(self) -> None:
        """The prompt lists files in the documented order, not the dict's."""
        given_files = {n: f"text of {n}" for n in reversed(ORDER)}
        prompt = assemble(given_files, TurnKind.HEARTBEAT)
        assert [s.file for s in prompt.sections] == list(ORDER)
        assert prompt.text.index("# SOUL.md") < prompt.text.index("# WORKSTATE.md")

    def test_heartbeat_file_only_on_heartbeats(self) -> None:
        """HEARTBEAT.md rides only heartbeat turns; MEMORY.md rides every kind (isolated too)."""
        given_files = dict.fromkeys(ORDER, "x")
        main = [s.file for s in assemble(given_files, TurnKind.MAIN).sections]
        isolated = [s.file for s in assemble(given_files, TurnKind.ISOLATED).sections]
        assert "HEARTBEAT.md" not in main
        assert "MEMORY.md" in main
        assert "MEMORY.md" in isolated
        assert "HEARTBEAT.md" not in isolated

    @given(
        st.dictionaries(st.sampled_from(ORDER), st.integers(0, 30_000), min_size=1),
        st.integers(2_000, 30_000),
        st.integers(10_000, 80_000),
    )
    def test_the_cached_prefix_is_the_same_bytes_for_every_kind(
        self, sizes: dict[str, int], file_cap: int, total_cap: int
    ) -> None:
        """SOUL … MEMORY.md are cut alike whatever the kind (one cache entry for all kinds);
        HEARTBEAT.md and WORKSTATE.md are only ever in the tail, after the breakpoint."""
        given_files = {name: name[0] * n for name, n in sizes.items()}
        limits = Limits(file_cap, total_cap)
        prompts = {kind: assemble(given_files, kind, limits) for kind in TurnKind}
        assert len({p.stable for p in prompts.values()}) == 1
        for kind, p in prompts.items():
            assert "# HEARTBEAT.md" not in p.stable
            assert "# WORKSTATE.md" not in p.stable
            carried = kind is TurnKind.HEARTBEAT and "HEARTBEAT.md" in given_files
            assert ("# HEARTBEAT.md" in p.tail) is carried

    def test_missing_files_are_reported(self) -> None:
        """A missing required file is listed; optional IDENTITY/TOOLS are not."""
        prompt = assemble({"SOUL.md": "me"}, TurnKind.MAIN)
        assert "GUARDRAILS.md" in prompt.missing
        assert "IDENTITY.md" not in prompt.missing
        assert "TOOLS.md" not in prompt.missing


class TestCaps:
    """Cuts keep head and tail, name the file, and are reported."""

    def test_per_file_cap(self) -> None:
        """A file over the per-file cap is cut with a marker naming it, and reported."""
        text = "HEAD" + "m" * 30_000 + "TAIL"
        prompt = assemble({"MEMORY.md": text}, TurnKind.MAIN, Limits(file_cap=20_000))
        [section] = prompt.sections
        assert section.text.startswith("HEAD")
        assert section.text.endswith("TAIL")
        assert "mcos cut" in section.text
        assert "MEMORY.md" in section.text
        [t] = prompt.truncations
        assert t.file == "MEMORY.md"
        assert t.original == len(text)
        assert "per-file cap" in t.describe()

    def test_total_cap_cuts_working_state_before_identity(self) -> None:
        """Over the total cap, the later files shrink first and SOUL/GUARDRAILS are kept whole."""
        given_files = {
            "SOUL.md": "s" * 15_000,
            "GUARDRAILS.md": "g" * 2_000,
            "AGENTS.md": "a" * 15_000,
            "MEMORY.md": "m" * 15_000,
            "WORKSTATE.md": "w" * 15_000,
        }
        prompt = assemble(given_files, TurnKind.MAIN, Limits(file_cap=20_000, total_cap=40_000))
        by_file = {s.file: s.text for s in prompt.sections}
        assert by_file["SOUL.md"] == given_files["SOUL.md"]
        assert by_file["GUARDRAILS.md"] == given_files["GUARDRAILS.md"]
        assert {t.file for t in prompt.truncations} >= {"WORKSTATE.md"}
        assert all(t.reason == "total cap" for t in prompt.truncations)

    @given(
        st.dictionaries(st.sampled_from(ORDER), st.integers(0, 40_000), min_size=1),
        st.integers(2_000, 30_000),
        st.integers(10_000, 80_000),
    )
    def test_caps_hold_and_every_cut_is_reported(
        self, sizes: dict[str, int], file_cap: int, total_cap: int
    ) -> None:
        """No file passes its cap; the total passes its cap only by the markers and floors."""
        given_files = {name: "x" * n for name, n in sizes.items()}
        prompt = assemble(given_files, TurnKind.HEARTBEAT, Limits(file_cap, total_cap))
        cut_files = {t.file for t in prompt.truncations}
        for s in prompt.sections:
            if s.file in cut_files:
                assert "mcos cut" in s.text
                assert s.file in s.text
            else:
                assert s.text == given_files[s.file]
            assert len(s.text) <= file_cap + 200
        body = sum(len(s.text) for s in prompt.sections)
        assert body <= max(total_cap, 1_000 * len(prompt.sections)) + 200 * len(cut_files)

    def test_cut_is_identity_under_the_cap(self) -> None:
        """A file within its cap is untouched."""
        assert cut("A.md", "short", 100, "x") == ("short", None)


class TestOpenClaw:
    """A workspace made for OpenClaw loads unchanged."""

    def test_loads_unchanged(self) -> None:
        """Frontmatter is dropped from the prompt, BOOTSTRAP.md is not loaded, files untouched."""
        before = {p.name: p.read_bytes() for p in OPENCLAW.glob("*.md")}
        ws = Workspace(OPENCLAW)
        prompt = ws.prompt(TurnKind.HEARTBEAT)
        assert "summary:" not in prompt.text
        assert "read_when" not in prompt.text
        assert "You're not a chatbot" in prompt.text
        assert prompt.ignored == ["BOOTSTRAP.md"]
        assert "BOOTSTRAP" not in prompt.text.split("# ")[0]
        assert ws.heartbeat_disabled()
        assert {p.name: p.read_bytes() for p in OPENCLAW.glob("*.md")} == before

    def test_effectively_empty(self) -> None:
        """Headings, comments and frontmatter say nothing; one real line does."""
        assert is_effectively_empty("---\nsummary: x\n---\n# HEARTBEAT\n\n<!-- later -->\n")
        assert not is_effectively_empty("# HEARTBEAT\n- check the mail queue\n")


class TestGuardrails:
    """GUARDRAILS.md holds at most 15 entries."""

    def test_count(self) -> None:
        """Bullets and numbered items at the top level count; nested ones do not."""
        text = "# Never\n1. a\n2) b\n- c\n  - nested\n* d\nprose\n"
        assert guardrail_entries(text) == 4

    def test_over_fifteen_is_a_config_error(self, tmp_path: Path) -> None:
        """Sixteen entries refuse to load, naming the file and the count."""
        (tmp_path / "SOUL.md").write_text("me")
        (tmp_path / "GUARDRAILS.md").write_text("".join(f"- rule {i}\n" for i in range(16)))
        with pytest.raises(ConfigError) as err:
            Workspace(tmp_path).prompt(TurnKind.MAIN)
        assert "GUARDRAILS.md" in err.value.message
        assert "16 entries" in err.value.message


class TestFiles:
    """Daily logs append; WORKSTATE.md is replaced atomically."""

    def test_daily_log_appends(self, tmp_path: Path) -> None:
        """Entries go to memory/YYYY-MM-DD.md of the given clock, in order, never rewritten."""
        ws = Workspace(tmp_path)
        at = datetime(2026, 11, 24, 9, 30, 5, tzinfo=UTC)
        path = ws.append_log(at, "handled directive 12")
        ws.append_log(at.replace(second=9), "HEARTBEAT_OK")
        assert path == tmp_path / "memory" / "2026-11-24.md"
        assert path.read_text() == "- 09:30:05 handled directive 12\n- 09:30:09 HEARTBEAT_OK\n"

    def test_kill_during_flush_keeps_the_old_file(self, tmp_path: Path) -> None:
        """SIGKILL while WORKSTATE.md is being rewritten leaves the old or the new file, whole."""
        ws = Workspace(tmp_path)
        old = "# WORKSTATE\ncurrent task: the old one\n"
        ws.write_atomic("WORKSTATE.md", old)
        new = "# WORKSTATE\n" + "next steps\n" * 2_000_000
        ctx = multiprocessing.get_context("fork")
        current = tmp_path / "WORKSTATE.md"
        # The kill lands at points seen on disk: a rewrite begun, half written, and a rewrite
        # after one that completed.
        points = [
            ("a rewrite begun", lambda tmp: _size(tmp) >= 0),
            ("half the text written", lambda tmp: _size(tmp) > len(new) // 2),
            (
                "a rewrite after one done",
                lambda tmp: _size(current) == len(new) and _size(tmp) >= 0,
            ),
        ]
        for what, reached in points:
            child = ctx.Process(target=_rewrite_forever, args=(tmp_path, new))
            child.start()
            assert child.pid is not None
            tmp = tmp_path / f".WORKSTATE.md.tmp-{child.pid}"
            try:
                wait_until(what, lambda reached=reached, tmp=tmp: reached(tmp), interval=0.001)
            finally:
                os.kill(child.pid, signal.SIGKILL)
                child.join()
            assert current.read_text() in (old, new)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # replaced or not yet there
        return -1


def _rewrite_forever(root: Path, text: str) -> None:
    ws = Workspace(root)
    while True:
        ws.write_atomic("WORKSTATE.md", text)
