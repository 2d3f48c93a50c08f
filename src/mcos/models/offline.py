"""The offline model: deterministic, free, no network — for demos, rehearsals and tests.

It does what a diligent agent would do with the runtime's findings, by rule: acknowledge each
message in its thread — one that came in on a channel by asking for approval of exactly that
answer (the turn holds untrusted content), and posting it once the request is approved — note
failing checks and cron jobs in the daily log, and write
WORKSTATE.md when asked to flush. As a ``triage_model`` it takes the first look by rule: a
report or reply with no question mark is news. Everything it writes says "offline model", so
nobody mistakes its output for a real model's judgement. Its token counts are estimates (4 bytes
a token).
"""

from __future__ import annotations

import json
import re

from mcos.domain.budget import FREE, Pricing, Usage
from mcos.domain.curation import guardrail_lines
from mcos.domain.first_look import SETTLEABLE_KINDS, TOOL
from mcos.models.base import ModelReply, ModelRequest, TextBlock, ToolCall, ToolResult

LABEL = "offline model"
FLUSH_MARKER = "FLUSH WORKSTATE"
"""The runtime's flush turn contains this; the offline model answers with write_workstate."""
_MESSAGE = re.compile(
    r"^- \[message (?P<id>\d+)\] from (?P<sender>\S+) \((?P<kind>[a-z]+)[^)]*\)"
    r"(?P<tags>(?: \[[a-z_]+ [^\]]+\])*): (?P<subject>.*)$",
    re.MULTILINE,
)
_APPROVAL_TAG = re.compile(r"\[approval (\d+)\]")
_TAG = re.compile(r"\[(?P<key>[a-z_]+) (?P<value>[^\]]+)\]")
_APPROVED_POST = re.compile(r"^Request (?P<id>\d+) approved: post_to_channel$")
_PAYLOAD = re.compile(r"^Payload: (?P<json>\{.*\})$", re.MULTILINE)
SYSTEM_SENDER = "mission-control"
"""Messages from Mission Control itself (gates, committees, directives) are not replied to."""
_OTHER = re.compile(
    r"^- \[(?P<source>(?:check|cron|incident|budget|channel|routine)[^\]]*)\] ?(?P<rest>.*)$",
    re.M,
)
CURATE_MARKER = "CURATE MEMORY"
"""A curation turn starts with this; the offline model answers with curate_memory."""
_FENCED = "<<<{tag}\n(?P<body>.*?)\n?>>>END {tag}"
_MEMORY = re.compile(_FENCED.format(tag="MEMORY.md"), re.DOTALL)
_LOGS = re.compile(_FENCED.format(tag="LOGS"), re.DOTALL)
_CAP = re.compile(r"At most (?P<cap>[\d,]+) characters")
_ENTRY = re.compile(r"^- \d{2}:\d{2}:\d{2} (?P<text>.+)$", re.MULTILINE)
_DAY = re.compile(r"^## (?P<day>\d{4}-\d{2}-\d{2})$", re.MULTILINE)
_BOOKKEEPING = re.compile(r"^(?:\w+ turn \(|started|stopped|curation|routine items)")
"""Log entries the runtime writes about itself: not worth distilling."""
DISTILLED = 5
"""Log entries the offline model distils into MEMORY.md per curation."""


def _tokens(text_bytes: int) -> int:
    return max(1, -(-text_bytes // 4))


class OfflineModel:
    """A rule-following stand-in for a language model."""

    provider = "offline"
    caches = False
    metered = False
    label = LABEL

    def __init__(self, model: str = "offline-1", price: Pricing = FREE) -> None:
        self.model = model
        self.price = price
        self._calls = 0

    def _plan(self, request: ModelRequest) -> list[ToolCall]:
        offered = {t.name for t in request.tools}
        last = request.turns[-1] if request.turns else None
        if last is None or not any(isinstance(b, TextBlock) for b in last.blocks):
            # Only tool results: the answer to our own calls, nothing new to act on. (Results
            # of a finished round can also open a turn, merged with its new text.)
            return []
        text = last.text
        calls: list[tuple[str, dict[str, object]]] = []
        if FLUSH_MARKER in text and "write_workstate" in offered:
            calls.append(("write_workstate", _workstate(request)))
            return [self._call(n, i) for n, i in calls]
        if text.startswith(CURATE_MARKER) and "curate_memory" in offered:
            return [self._call("curate_memory", {"text": curated(text)})]
        notes: list[str] = []
        for m in _MESSAGE.finditer(text):
            subject = m["subject"].strip()[:120]
            approval = _APPROVAL_TAG.search(m["tags"] or "")
            if m["kind"] == "directive" and approval and "acknowledge_directive" in offered:
                calls.append(("acknowledge_directive", {"approval_id": int(approval[1])}))
            if m["sender"] == SYSTEM_SENDER:
                if (post := _approved_post(m, text)) is not None and "post_to_channel" in offered:
                    calls.append(("post_to_channel", post))
                notes.append(f"message {m['id']} from Mission Control ({m['kind']}): {subject}")
                continue
            tags = {t["key"]: t["value"] for t in _TAG.finditer(m["tags"] or "")}
            body = f"Acknowledged: {subject}. Handled by rule ({LABEL})."
            by_email = "content from email channel" in _segment(text, m)  # e-mail: governed apart
            if (
                "channel" in tags
                and not by_email
                and "request_approval" in offered
                and m["kind"] != "reply"
            ):
                # An answer going out on a channel, from a turn holding its untrusted text:
                # only with an approved request for exactly that post (asked for here).
                # (naming the message: two answers alike would be one request, 409 the other)
                answer = f"Acknowledged: {subject} (message {m['id']}). Handled by rule ({LABEL})."
                post = {"channel": tags["channel"], "to": tags.get("reply_to", ""), "text": answer}
                calls.append(
                    (
                        "request_approval",
                        {
                            "action": "post_to_channel",
                            "payload": post,
                            "rationale": f"answer to message {m['id']}",
                        },
                    )
                )
            elif "reply" in offered and m["kind"] != "reply":
                calls.append(("reply", {"message_id": int(m["id"]), "body": body}))
            notes.append(f"message {m['id']} from {m['sender']} ({m['kind']}): {subject}")
        notes.extend(
            f"{'looked at ' if m['source'].startswith('routine ') else ''}{m['source']}: "
            f"{m['rest'].strip()[:160]}"
            for m in _OTHER.finditer(text)
        )
        if "memory_write" in offered:
            summary = "; ".join(notes) if notes else "routine heartbeat review, nothing to act on"
            calls.append(("memory_write", {"text": f"[{LABEL}] {summary}"}))
        return [self._call(n, i) for n, i in calls]

    def _triage(self, request: ModelRequest) -> ToolCall:
        """A first look by rule: a report or reply that asks nothing is news; anything else,
        or a question mark anywhere in the message, needs the main model."""
        text = request.turns[-1].text if request.turns else ""
        items: list[dict[str, object]] = []
        for m in _MESSAGE.finditer(text):
            asks = m["kind"] not in SETTLEABLE_KINDS or "?" in m["subject"] + _segment(text, m)
            why = "asks for something" if asks else "informational, nothing asked"
            items.append({"item": f"message {m['id']}", "needs_main": asks, "reason": why})
        needs = not items or any(i["needs_main"] for i in items)
        why = "something needs the main model" if needs else "only news, nothing to act on"
        return self._call(TOOL, {"needs_main": needs, "reason": f"{why} ({LABEL})", "items": items})

    def _call(self, name: str, payload: dict[str, object]) -> ToolCall:
        self._calls += 1
        return ToolCall(f"offline_{self._calls}", name, dict(payload))

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Answer by rule; tool calls first, then a closing line once the results are in."""
        forced = request.tool_choice == TOOL and any(t.name == TOOL for t in request.tools)
        calls = [self._triage(request)] if forced else self._plan(request)
        if calls:
            text = f"{LABEL}: {len(calls)} action(s)"
            blocks: tuple[TextBlock | ToolCall | ToolResult, ...] = (TextBlock(text), *calls)
            stop = "tool_use"
        else:
            text = f"{LABEL}: done"
            blocks = (TextBlock(text),)
            stop = "end_turn"
        usage = Usage(
            input=_tokens(request.prompt_bytes), output=_tokens(len(repr(blocks).encode()))
        )
        return ModelReply(text, tuple(calls), usage, stop, self.model, blocks)

    async def aclose(self) -> None:
        """Nothing to release."""


def _segment(text: str, m: re.Match[str]) -> str:
    """The lines of the message whose header ``m`` matched, up to the next item."""
    end = text.find("\n- [", m.end())
    return text[m.end() : end if end >= 0 else len(text)]


def _approved_post(m: re.Match[str], text: str) -> dict[str, object] | None:
    """The post an approved ``post_to_channel`` request names (with its id), from Mission
    Control's report of the approval: its payload line follows the message's header."""
    approved = _APPROVED_POST.match(m["subject"].strip())
    found = _PAYLOAD.search(_segment(text, m))
    if approved is None or found is None:
        return None
    try:
        payload = json.loads(found["json"])
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    return {**payload, "approval_id": int(approved["id"])}


def _workstate(request: ModelRequest) -> dict[str, object]:
    recent = [t.text.strip() for t in request.turns if t.role == "user" and t.text.strip()]
    headline = recent[-2].splitlines()[0][:200] if len(recent) > 1 else "no open task"
    return {
        "current_task": headline,
        "decisions": f"none recorded ({LABEL})",
        "open_threads": f"{len(recent)} user turn(s) in this session",
        "next_steps": "continue from the daily log",
    }


def curated(text: str) -> str:
    """A curated MEMORY.md by rule, from a curation turn's text: the current file, with a
    section of the last few distinct log entries (not the runtime's own bookkeeping) added,
    then the oldest lines that are neither guardrails nor headings dropped until it fits the
    cap the turn names. Every guardrail line is kept verbatim."""
    found = _MEMORY.search(text)
    memory = found["body"] if found else ""
    logs = _LOGS.search(text)
    entries = logs["body"] if logs else ""
    cap_match = _CAP.search(text)
    cap = int(cap_match["cap"].replace(",", "")) if cap_match else 4_000
    days = _DAY.findall(entries)
    picked: list[str] = []
    for m in reversed(list(_ENTRY.finditer(entries))):
        entry = m["text"].removeprefix(f"[{LABEL}] ").strip()
        if _BOOKKEEPING.match(entry) or entry in picked:
            continue
        picked.append(entry)
        if len(picked) == DISTILLED:
            break
    head = memory.rstrip() or "# MEMORY"
    section = [f"# Distilled from the daily logs {days[-1] if days else ''} ({LABEL})".strip()]
    section += [f"- {entry[:200]}" for entry in reversed(picked)] or ["- nothing new"]
    lines = [*head.splitlines(), "", *section]
    guards = set(guardrail_lines(memory))
    while len("\n".join(lines)) + 1 > cap:
        drop = next(
            (
                i
                for i, line in enumerate(lines)
                if line.strip() and line.strip() not in guards and not line.startswith("#")
            ),
            None,
        )
        if drop is None:
            break
        del lines[drop]
    return "\n".join(lines) + "\n"
