"""Channels: ``mcos channel tail`` follows what agents posted to a mock channel."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from mcos.cli import common, follow
from mcos.cli.common import FleetOpt, WaitOpt, console, err_console, friendly_errors, poll

app = typer.Typer(
    name="channel", help="Channels: follow a mock channel's posts.", no_args_is_help=True
)


@app.command("tail")
def channel_tail(
    name: Annotated[str, typer.Argument(help="A mock channel of the fleet file.")],
    follow_: Annotated[
        bool, typer.Option("--follow", "-F", help="Keep printing new posts.")
    ] = False,
    wait: WaitOpt = 0,
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
    posts = root / "outbox" / "posts.jsonl"
    _, some = poll(posts.exists, bool, wait)
    if wait > 0 and not some:
        err_console.print(f"nothing posted to {name} after {wait:g}s", style="red")
        raise typer.Exit(1)
    for line in follow.lines(posts, follow=follow_):
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
    subject = post.get("subject") or ""
    subject = f"[{subject}] " if subject and subject not in post["text"] else ""
    text = Text.assemble((f"{post['at'][:19]}{to}: ", "dim"), subject, post["text"])
    buttons = [(str(label), str(data)) for label, data in post.get("buttons") or []]
    if buttons:
        text.append("\n  buttons: ")
        text.append(" · ".join(f"[{label}] {data}" for label, data in buttons), style="bold")
        data = buttons[0][1]
        shown = common.shown_path(inbox)
        sender = f"From: {post['to']}\\n" if post.get("to") else ""
        press = f"printf '{sender}{data}\\n' > {shown}/{data.replace(':', '-')}.txt"
        text.append(f"\n  press one as {post.get('to') or 'anyone'}: {press}")
    return text
