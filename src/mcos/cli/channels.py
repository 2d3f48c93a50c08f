"""Channels: ``mcos channel tail`` follows what agents posted to a mock channel."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from mcos.cli import common, follow
from mcos.cli.common import FleetOpt, console, friendly_errors

app = typer.Typer(
    name="channel", help="Channels: follow a mock channel's posts.", no_args_is_help=True
)


@app.command("tail")
def channel_tail(
    name: Annotated[str, typer.Argument(help="A mock channel of the fleet file.")],
    follow_: Annotated[
        bool, typer.Option("--follow", "-F", help="Keep printing new posts.")
    ] = False,
    fleet: FleetOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each post as one line of JSON, as stored.")
    ] = False,
) -> None:
    """Print what agents posted to a mock channel (its outbox), with each post's buttons and
    how to press one (a file in the channel's inbox holding the button's data)."""
    with friendly_errors():
        loaded = common.load(fleet)
        if name not in loaded.channels:
            known = ", ".join(loaded.channels) or "none"
            common.fail(f"no channel {name!r} in {loaded.path} (known: {known})")
        root = loaded.channel_path(name)
    for line in follow.lines(root / "outbox" / "posts.jsonl", follow=follow_):
        if not line.strip():
            continue
        post = json.loads(line)
        if as_json:
            sys.stdout.write(json.dumps(post) + "\n")
            sys.stdout.flush()
        else:
            console.print(describe(post, root / "inbox"), highlight=False, soft_wrap=True)


def describe(post: dict[str, Any], inbox: Path) -> Text:
    """One post for people: when, to whom, subject and text, then its buttons."""
    to = f" → {post['to']}" if post.get("to") else ""
    subject = f"[{post['subject']}] " if post.get("subject") else ""
    text = Text.assemble((f"{post['at'][:19]}{to}: ", "dim"), subject, post["text"])
    buttons = [(str(label), str(data)) for label, data in post.get("buttons") or []]
    if buttons:
        text.append("\n  buttons: ")
        text.append(" · ".join(f"[{label}] {data}" for label, data in buttons), style="bold")
        data = buttons[0][1]
        shown = common.shown_path(inbox)
        text.append(f"\n  press one: echo {data} > {shown}/{data.replace(':', '-')}.txt")
    return text
