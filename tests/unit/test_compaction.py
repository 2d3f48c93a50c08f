"""What a compaction keeps: a summary first, then the recent turns, always a valid conversation."""

from __future__ import annotations

from mcos.models.base import TextBlock, ToolCall, ToolResult, Turn
from mcos.runtime.context import compacted, is_summary, notes_summary, workstate_summary

CALL = ToolCall("toolu_1", "memory_search", {"query": "x"})
ROUND = [Turn("assistant", (CALL,)), Turn("user", (ToolResult("toolu_1", "found"),))]


def test_a_window_opening_on_the_round_in_progress_keeps_it_after_the_summary() -> None:
    history = [Turn.user("long notes"), *ROUND]
    kept = compacted(history, 2, workstate_summary("task: x"))
    assert [t.role for t in kept] == ["user", "assistant", "user"]
    assert kept[0].text.startswith("(Earlier session compacted.")
    assert kept[1:] == ROUND


def test_orphaned_tool_results_go_with_their_calls() -> None:
    kept = compacted([Turn.user("notes"), *ROUND], 1, notes_summary(["did a"]))
    assert [t.role for t in kept] == ["user", "assistant"]
    assert "- did a" in kept[0].text
    assert not any(isinstance(b, ToolResult) for t in kept for b in t.blocks)


def test_a_second_compaction_replaces_the_first_summary() -> None:
    once = compacted([Turn.user("question"), Turn("assistant", (TextBlock("answer"),))], 6, "")
    once = compacted(once, 6, workstate_summary("first"))
    twice = compacted(once, 6, workstate_summary("second"))
    assert sum(is_summary(b) for b in twice[0].blocks) == 1
    assert "second" in twice[0].text
    assert "first" not in twice[0].text
    assert "question" in twice[0].text
