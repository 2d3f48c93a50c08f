"""An agent's channel host in its own process, for the SIGKILL tests of the durable spool.

Argument: a JSON object — ``mc`` and ``token`` (Mission Control and gene's token), ``spool``
(the spool file), ``state`` (the Discord identify history), ``telegram`` / ``discord`` /
``mock`` channel settings, and ``posts`` (``[channel, chat, text]`` to post, in order). It
receives on every channel exactly as the agent does (the same ``AgentChannels``), posts through
the outbox, prints ``posted`` and runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from mcos.channels.base import Channel, Outbound
from mcos.channels.discord import DiscordChannel
from mcos.channels.mock import MockChannel
from mcos.channels.telegram import TelegramChannel
from mcos.client import AsyncClient
from mcos.config.models import ChannelConfig
from mcos.runtime.channels import AgentChannels


async def report(what: str, detail: str) -> None:
    print(f"report {what}: {detail}", flush=True)


async def main(spec: dict[str, Any]) -> None:
    channels: dict[str, Channel] = {}
    if tg := spec.get("telegram"):
        config = ChannelConfig(
            kind="telegram", token="env:X", api_url=tg["api_url"], chats=tg["chats"]
        )
        channels["tg"] = TelegramChannel("tg", config, tg["token"])
    if dc := spec.get("discord"):
        config = ChannelConfig(
            kind="discord", token="env:X", api_url=dc["api_url"], chats=dc["chats"]
        )
        channels["dc"] = DiscordChannel("dc", config, dc["token"], state_dir=Path(spec["state"]))
    if mock := spec.get("mock"):
        channels["mock"] = MockChannel("mock", Path(mock), poll=0.2)
    client = AsyncClient(spec["mc"], spec["token"], timeout=10)
    try:
        host = AgentChannels(
            "gene", channels, client, report, spool=Path(spec["spool"]), backoff=(0.2, 1.0)
        )
    except TypeError:  # the code before the spool: run as it did, to show what it loses
        host = AgentChannels("gene", channels, client, report)
    host.start()
    posting: dict[str, Channel] = getattr(host, "posting", channels)
    # Posted as a turn's tool calls would be, each one in order; none waits for the others.
    sends = [
        asyncio.create_task(posting[channel].send(Outbound(channel, text, to=chat)))
        for channel, chat, text in spec.get("posts", [])
    ]
    await asyncio.sleep(0)
    print(f"posted {len(sends)}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    asyncio.run(main(json.loads(sys.argv[1])))
