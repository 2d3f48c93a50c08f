"""A local Telegram Bot API for the parts mcos uses: long-polled getUpdates with Telegram's
one-poller rule, getMe, sendMessage (with inline keyboards and 429 flood control),
answerCallbackQuery, setWebhook/deleteWebhook.

Telegram allows one getUpdates per bot token at a time: a second request terminates the
first with 409 "Conflict: terminated by other getUpdates request". The fake does the same and
counts every conflict, so a test can assert that two pollers of one token never overlapped.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Self

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.api.conftest import PromptServer, free_port
from tests.fakes.serving import wait_serving

CONFLICT = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
    "is running"
)


@dataclass
class Bot:
    """One bot token's state."""

    username: str
    updates: list[dict[str, Any]] = field(default_factory=list)
    polling: int = 0
    """Request id of the getUpdates in progress (0: none)."""
    terminated: set[int] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)
    next_update: int = 1
    answered: list[dict[str, Any]] = field(default_factory=list)
    webhook: dict[str, Any] = field(default_factory=dict)
    last_sent: dict[str, float] = field(default_factory=dict)


class FakeTelegram:
    """The Bot API on a loopback port: ``url + "/bot" + token + "/getUpdates"``."""

    def __init__(self, tokens: dict[str, str]) -> None:
        """``tokens``: bot token → bot username."""
        self.bots = {t: Bot(u) for t, u in tokens.items()}
        self.conflicts = 0
        self.polls = 0
        self.throttled = 0
        self.flood_every = 0
        """When > 0: every Nth sendMessage is refused with 429 (flood control)."""
        self.retry_after = 1
        self.min_gap = 0.0
        """When > 0: a message to a chat sooner than this after the last one is a 429."""
        self._sends = 0
        self._stopping = False
        self._lock = threading.Lock()
        self._ids = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = free_port()
        self.app = self._build()

    @property
    def url(self) -> str:
        """The API base (what ``https://api.telegram.org`` is for the real one)."""
        return f"http://127.0.0.1:{self.port}"

    def push(self, token: str, text: str, chat_id: int = 1) -> None:
        """A user sends the bot a message."""
        with self._lock:
            bot = self.bots[token]
            bot.updates.append(
                {
                    "update_id": bot.next_update,
                    "message": {
                        "message_id": bot.next_update,
                        "date": int(time.time()),
                        "chat": {"id": chat_id, "type": "private"},
                        "from": {"id": chat_id, "is_bot": False, "first_name": "Founder"},
                        "text": text,
                    },
                }
            )
            bot.next_update += 1

    def press(self, token: str, data: str, user_id: int, chat_id: int | None = None) -> None:
        """A user presses an inline button under one of the bot's messages."""
        with self._lock:
            bot = self.bots[token]
            chat = chat_id if chat_id is not None else user_id
            bot.updates.append(
                {
                    "update_id": bot.next_update,
                    "callback_query": {
                        "id": f"cb{bot.next_update}",
                        "from": {"id": user_id, "is_bot": False, "first_name": "Founder"},
                        "chat_instance": "1",
                        "data": data,
                        "message": {
                            "message_id": 1,
                            "date": int(time.time()),
                            "chat": {"id": chat, "type": "private"},
                            "text": "a page",
                        },
                    },
                }
            )
            bot.next_update += 1

    def texts(self, token: str, chat_id: int | str | None = None) -> list[str]:
        """What the bot sent (to one chat), in the order Telegram accepted it."""
        with self._lock:
            return [
                m["text"]
                for m in self.bots[token].sent
                if chat_id is None or str(m["chat_id"]) == str(chat_id)
            ]

    def _build(self) -> FastAPI:
        app = FastAPI()

        def error(code: int, description: str) -> JSONResponse:
            return JSONResponse(
                {"ok": False, "error_code": code, "description": description}, status_code=code
            )

        async def params(request: Request) -> dict[str, Any]:
            found: dict[str, Any] = dict(request.query_params)
            if request.method == "POST":
                kind = request.headers.get("content-type", "")
                if "json" in kind:
                    found.update(await request.json())
                elif kind:
                    found.update(dict(await request.form()))
            return found

        @app.api_route("/bot{token}/getMe", methods=["GET", "POST"])
        async def get_me(token: str) -> JSONResponse:
            bot = self.bots.get(token)
            if bot is None:
                return error(401, "Unauthorized")
            return JSONResponse(
                {"ok": True, "result": {"id": 42, "is_bot": True, "username": bot.username}}
            )

        @app.api_route("/bot{token}/getUpdates", methods=["GET", "POST"])
        async def get_updates(token: str, request: Request) -> JSONResponse:
            bot = self.bots.get(token)
            if bot is None:
                return error(401, "Unauthorized")
            p = await params(request)
            if bot.webhook.get("url"):
                return error(409, "Conflict: can't use getUpdates method while webhook is active")
            offset = int(p.get("offset", 0))
            wait = min(float(p.get("timeout", 0)), 50.0)
            with self._lock:
                self._ids += 1
                me = self._ids
                self.polls += 1
                if bot.polling:
                    bot.terminated.add(bot.polling)
                    self.conflicts += 1
                bot.polling = me
                bot.updates = [u for u in bot.updates if u["update_id"] >= offset]
            deadline = time.monotonic() + wait
            while True:
                if await request.is_disconnected():
                    # The poller is gone (killed mid-poll): it no longer holds the token, as
                    # Telegram drops a request whose connection closed.
                    with self._lock:
                        if bot.polling == me:
                            bot.polling = 0
                    return error(499, "client closed the request")
                if self._stopping:  # what the parked poll would get from a server going away
                    return error(502, "Bad Gateway")
                with self._lock:
                    if me in bot.terminated:
                        bot.terminated.discard(me)
                        return error(409, CONFLICT)
                    if bot.updates or time.monotonic() >= deadline:
                        if bot.polling == me:
                            bot.polling = 0
                        return JSONResponse({"ok": True, "result": list(bot.updates)})
                await asyncio.sleep(0.02)

        @app.api_route("/bot{token}/sendMessage", methods=["POST"])
        async def send_message(token: str, request: Request) -> JSONResponse:
            bot = self.bots.get(token)
            if bot is None:
                return error(401, "Unauthorized")
            p = await params(request)
            if "chat_id" not in p or not p.get("text"):
                return error(400, "Bad Request: message text is empty")
            chat = str(p["chat_id"])
            if not chat.lstrip("-").isdigit():
                return error(400, "Bad Request: chat not found")
            with self._lock:
                self._sends += 1
                now = time.monotonic()
                flood = self.flood_every > 0 and self._sends % self.flood_every == 0
                too_soon = self.min_gap > 0 and now - bot.last_sent.get(chat, -1e9) < self.min_gap
                if flood or too_soon:
                    self.throttled += 1
                    return JSONResponse(
                        {
                            "ok": False,
                            "error_code": 429,
                            "description": f"Too Many Requests: retry after {self.retry_after}",
                            "parameters": {"retry_after": self.retry_after},
                        },
                        status_code=429,
                    )
                bot.last_sent[chat] = now
                markup = p.get("reply_markup")
                entry = {"chat_id": chat, "text": p["text"], "at": now}
                if markup:
                    entry["reply_markup"] = (
                        json.loads(markup) if isinstance(markup, str) else markup
                    )
                bot.sent.append(entry)
                message_id = len(bot.sent)
            return JSONResponse(
                {
                    "ok": True,
                    "result": {
                        "message_id": message_id,
                        "date": int(time.time()),
                        "chat": {
                            "id": int(chat),
                            "type": "group" if chat.startswith("-") else "private",
                        },
                        "from": {"id": 42, "is_bot": True, "first_name": bot.username},
                        "text": p["text"],
                    },
                }
            )

        @app.api_route("/bot{token}/answerCallbackQuery", methods=["POST"])
        async def answer_callback(token: str, request: Request) -> JSONResponse:
            bot = self.bots.get(token)
            if bot is None:
                return error(401, "Unauthorized")
            p = await params(request)
            if not p.get("callback_query_id"):
                return error(400, "Bad Request: query is too old or query ID is invalid")
            with self._lock:
                bot.answered.append(p)
            return JSONResponse({"ok": True, "result": True})

        @app.api_route("/bot{token}/setWebhook", methods=["POST"])
        async def set_webhook(token: str, request: Request) -> JSONResponse:
            bot = self.bots.get(token)
            if bot is None:
                return error(401, "Unauthorized")
            p = await params(request)
            with self._lock:
                bot.webhook = {"url": p.get("url", ""), "secret_token": p.get("secret_token")}
            return JSONResponse({"ok": True, "result": True, "description": "Webhook was set"})

        @app.api_route("/bot{token}/deleteWebhook", methods=["GET", "POST"])
        async def delete_webhook(token: str) -> JSONResponse:
            bot = self.bots.get(token)
            if bot is None:
                return error(401, "Unauthorized")
            with self._lock:
                bot.webhook = {}
            return JSONResponse({"ok": True, "result": True})

        return app

    def start(self) -> Self:
        """Serve in a background thread until :meth:`stop`."""
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self._server = PromptServer(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_serving(self._server, self._thread, "the fake Telegram server")
        return self

    def stop(self) -> None:
        """Shut the server down, answering the getUpdates parked in it (uvicorn's shutdown waits
        for every running request: a poller still alive would hold it for its whole timeout)."""
        self._stopping = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
