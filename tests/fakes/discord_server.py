"""A local Discord API for the parts mcos uses: REST under ``/api/v10`` and the gateway.

Driven by the real discord.py, so it speaks Discord's wire format: ``Authorization: Bot
TOKEN``; every response carries ``Via: 1.1 google`` (discord.py treats a 429 without it as a
Cloudflare ban and gives up instead of waiting ``retry_after``); the gateway sends HELLO, answers
IDENTIFY with READY then GUILD_CREATE, heartbeats with op 11, RESUME with the missed events and
RESUMED, and compresses frames with ``zlib-stream`` when the URL asks for it (discord.py always
does, unless the ``zstandard`` package is installed, when it asks for ``zstd-stream``).

What the fake exists to check is the IDENTIFY budget: it counts every IDENTIFY, decrements
``session_start_limit.remaining``, and when a bot identifies with none left it does what Discord
does — ends every session of the bot (close 4004) and resets its token, so REST answers 401.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import uvicorn
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from tests.api.conftest import free_port
from tests.fakes.serving import wait_serving

DISCORD_EPOCH_MS = 1_420_070_400_000
GUILDS = 1 << 0
GUILD_MESSAGES = 1 << 9
MESSAGE_CONTENT = 1 << 15
PRIVILEGED = (1 << 1) | (1 << 8) | MESSAGE_CONTENT
MAX_CONTENT = 2000
REPLAY = 500
"""Events a session keeps for RESUME."""


def _hello(interval_ms: int) -> dict[str, Any]:
    return {"op": 10, "d": {"heartbeat_interval": interval_ms}, "s": None, "t": None}


@dataclass
class Bot:
    """One bot token's account."""

    user_id: str
    username: str
    application_id: str
    total: int = 1000
    remaining: int = 1000
    reset_at: float = 0.0
    """``time.monotonic()`` when ``remaining`` is back to ``total``."""
    revoked: bool = False
    """The token was reset (Discord does so when the IDENTIFY budget ran out)."""

    def user(self) -> dict[str, Any]:
        """The bot's user object, as ``GET /users/@me`` and READY carry it."""
        return {
            "id": self.user_id,
            "username": self.username,
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "system": False,
            "mfa_enabled": False,
            "verified": True,
            "email": None,
            "flags": 0,
            "public_flags": 0,
            "premium_type": 0,
            "locale": "en-US",
        }


@dataclass
class Identify:
    """One IDENTIFY the gateway received."""

    token_ok: bool
    intents: int
    at: float
    accepted: bool


@dataclass
class _Conn:
    """One gateway websocket and its transport compression."""

    ws: WebSocket
    zlib_stream: Any = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, payload: dict[str, Any]) -> None:
        text = json.dumps(payload, separators=(",", ":"))
        async with self.lock:
            if self.zlib_stream is not None:
                data = self.zlib_stream.compress(text.encode()) + self.zlib_stream.flush(
                    zlib.Z_SYNC_FLUSH
                )
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_text(text)


@dataclass
class Session:
    """A gateway session: what RESUME picks up."""

    id: str
    token: str
    intents: int
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    conn: _Conn | None = None


class FakeDiscord:
    """Discord's REST API and gateway on a loopback port (``api_url`` = ``url + "/api/v10"``)."""

    def __init__(
        self,
        tokens: dict[str, str],
        channels: dict[str, str],
        *,
        guild_id: str = "900000000000000001",
        session_start_limit: tuple[int, int, int] = (1000, 1000, 86_400_000),
        heartbeat_interval_ms: int = 41_250,
        privileged_intents: bool = True,
    ) -> None:
        """``tokens``: bot token → username; ``channels``: text channel id → name (one guild).

        ``session_start_limit``: (total, remaining, reset_after in ms) for every token.
        ``privileged_intents``: whether the bots may ask for message content (else 4014).
        """
        total, remaining, reset_ms = session_start_limit
        self.bots = {
            t: Bot(
                user_id=str(800_000_000_000_000_001 + i),
                username=u,
                application_id=str(800_000_000_000_000_001 + i),
                total=total,
                remaining=remaining,
                reset_at=time.monotonic() + reset_ms / 1000,
            )
            for i, (t, u) in enumerate(tokens.items())
        }
        self.reset_ms = reset_ms
        self.channels = dict(channels)
        self.guild_id = guild_id
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.privileged_intents = privileged_intents
        self.identify_log: list[Identify] = []
        self.resumes = 0
        self.resume_paths: list[str] = []
        self.heartbeats = 0
        self.posted: list[dict[str, Any]] = []
        self.post_attempts = 0
        self.unhandled: list[str] = []
        """REST routes discord.py asked for that the fake does not know."""
        self.compression: list[str] = []
        """The ``compress`` parameter of each gateway connection ("" for none)."""
        self._rate_limit: list[float] = []
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._snowflakes = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = free_port()
        self.app = self._build()

    # -- what tests use -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The host (what ``https://discord.com`` is for the real one)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The REST base discord.py's ``Route.BASE`` points at."""
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """What ``GET /gateway/bot`` names."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def identifies(self) -> int:
        """Every IDENTIFY received, accepted or not."""
        return len(self.identify_log)

    @property
    def connected(self) -> int:
        """Sessions with a live websocket."""
        return sum(1 for s in self.sessions.values() if s.conn is not None)

    def remaining(self, token: str) -> int:
        """The token's ``session_start_limit.remaining`` now."""
        return self._budget(self.bots[token]).remaining

    def rate_limit_next_post(self, retry_after: float = 0.05, times: int = 1) -> None:
        """Answer the next ``times`` message posts with 429 and this ``retry_after``."""
        with self._lock:
            self._rate_limit.extend([retry_after] * times)

    def snowflake(self) -> str:
        """A fresh id whose timestamp is now, as Discord's are."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((ms << 22) | (next(self._snowflakes) & 0xFFF))

    def inject_message(
        self, channel_id: str, author: str, content: str, *, author_id: str | None = None
    ) -> dict[str, Any]:
        """A user writes ``content`` in a guild text channel; every session gets MESSAGE_CREATE.

        Returns the message object (without the per-session content stripping).
        """
        uid = author_id or str(700_000_000_000_000_000 + (zlib.crc32(author.encode()) % 10**9))
        user = {
            "id": uid,
            "username": author,
            "discriminator": "0",
            "global_name": author.title(),
            "avatar": None,
            "public_flags": 0,
        }
        message = self._message(channel_id, user, content)
        self._call(self._broadcast(message))
        return message

    def drop_connections(self, *, code: int = 4000, invalidate: bool = False) -> None:
        """Close every gateway websocket (as a Discord node restart does).

        ``invalidate``: also forget the sessions, so a RESUME gets op 9 and must re-IDENTIFY.
        """
        self._call(self._drop(code, invalidate))

    # -- internals ------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._loop is None:
            coro.close()
            msg = "the fake Discord server is not running"
            raise RuntimeError(msg)
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def _budget(self, bot: Bot) -> Bot:
        if time.monotonic() >= bot.reset_at:
            bot.remaining = bot.total
            bot.reset_at = time.monotonic() + self.reset_ms / 1000
        return bot

    def _message(self, channel_id: str, author: dict[str, Any], content: str) -> dict[str, Any]:
        return {
            "id": self.snowflake(),
            "type": 0,
            "channel_id": channel_id,
            "guild_id": self.guild_id,
            "author": author,
            "member": {
                "roles": [],
                "joined_at": "2024-01-01T00:00:00.000000+00:00",
                "nick": None,
                "deaf": False,
                "mute": False,
                "flags": 0,
            },
            "content": content,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "flags": 0,
        }

    async def _dispatch(self, session: Session, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        payload = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.events = [*session.events[-REPLAY:], payload]
        if session.conn is not None:
            with suppress(Exception):
                await session.conn.send(payload)

    async def _broadcast(self, message: dict[str, Any]) -> None:
        for session in list(self.sessions.values()):
            if not session.intents & GUILD_MESSAGES:
                continue
            data = dict(message)
            if not session.intents & MESSAGE_CONTENT:
                # Without the privileged intent Discord blanks what a bot may not read.
                data.update(content="", embeds=[], attachments=[], components=[])
            await self._dispatch(session, "MESSAGE_CREATE", data)

    async def _drop(self, code: int, invalidate: bool) -> None:
        # The close handshake needs the client's answer, and the client may live on the very
        # loop that called drop_connections and now waits for this: close in the background.
        for session in list(self.sessions.values()):
            conn, session.conn = session.conn, None
            if conn is not None:
                task = asyncio.create_task(self._close(conn, code), name="fake-discord-drop")
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        if invalidate:
            self.sessions.clear()

    @staticmethod
    async def _close(conn: _Conn, code: int) -> None:
        with suppress(Exception):
            await conn.ws.close(code=code)

    def _guild(self, bot: Bot) -> dict[str, Any]:
        everyone = {
            "id": self.guild_id,
            "name": "@everyone",
            "color": 0,
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": 0,
            "permissions": str((1 << 10) | (1 << 11) | (1 << 16)),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        channels: list[dict[str, Any]] = [
            {
                "id": cid,
                "type": 0,
                "guild_id": self.guild_id,
                "name": name,
                "position": i,
                "permission_overwrites": [],
                "nsfw": False,
                "topic": None,
                "last_message_id": None,
                "rate_limit_per_user": 0,
                "parent_id": None,
                "flags": 0,
            }
            for i, (cid, name) in enumerate(self.channels.items())
        ]
        return {
            "id": self.guild_id,
            "name": "Fleet",
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": "700000000000000001",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [everyone],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": "2024-01-01T00:00:00.000000+00:00",
            "large": False,
            "unavailable": False,
            "member_count": 2,
            "members": [
                {
                    "user": bot.user(),
                    "roles": [],
                    "joined_at": "2024-01-01T00:00:00.000000+00:00",
                    "nick": None,
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                }
            ],
            "channels": channels,
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    async def _identify(self, conn: _Conn, d: dict[str, Any]) -> Session | None:
        token = str(d.get("token", ""))
        intents = int(d.get("intents", 0))
        bot = self.bots.get(token)
        ok = bot is not None and not bot.revoked
        with self._lock:
            self.identify_log.append(Identify(ok, intents, time.time(), accepted=False))
        if bot is None or bot.revoked:
            await conn.ws.close(code=4004, reason="Authentication failed.")
            return None
        if intents & PRIVILEGED and not self.privileged_intents:
            await conn.ws.close(code=4014, reason="Disallowed intent(s).")
            return None
        if self._budget(bot).remaining <= 0:
            # Out of session starts: Discord terminates every session and resets the token.
            bot.revoked = True
            for other in [s for s in self.sessions.values() if s.token == token]:
                if other.conn is not None:
                    with suppress(Exception):
                        await other.conn.ws.close(code=4004, reason="Authentication failed.")
                del self.sessions[other.id]
            await conn.ws.close(code=4004, reason="Authentication failed.")
            return None
        bot.remaining -= 1
        with self._lock:
            self.identify_log[-1].accepted = True
        session = Session(id=uuid.uuid4().hex, token=token, intents=intents, conn=conn)
        self.sessions[session.id] = session
        ready = {
            "v": 10,
            "user": bot.user(),
            "guilds": [{"id": self.guild_id, "unavailable": True}],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/resume-gateway",
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "application": {"id": bot.application_id, "flags": 0},
            "_trace": ['["fake-discord",{"micros":0}]'],
        }
        if "shard" in d:
            ready["shard"] = d["shard"]
        await self._dispatch(session, "READY", ready)
        await self._dispatch(session, "GUILD_CREATE", self._guild(bot))
        return session

    async def _resume(self, conn: _Conn, d: dict[str, Any], path: str) -> Session | None:
        self.resumes += 1
        self.resume_paths.append(path)
        session = self.sessions.get(str(d.get("session_id", "")))
        if session is None or session.token != d.get("token"):
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return None
        seq = int(d.get("seq") or 0)
        session.conn = conn
        for event in session.events:
            if event["s"] > seq:
                await conn.send(event)
        await self._dispatch(session, "RESUMED", {"_trace": ['["fake-discord",{"micros":0}]']})
        return session

    async def _handshake(self, ws: WebSocket) -> _Conn | None:
        """Accept the websocket and check its URL parameters as Discord does."""
        params = ws.query_params
        await ws.accept()
        compress = params.get("compress", "")
        self.compression.append(compress)
        conn = _Conn(ws)
        if params.get("v") not in (None, "10"):
            await ws.close(code=4012, reason="Invalid API version.")
            return None
        if params.get("encoding", "json") != "json":
            await ws.close(code=4002, reason="Error while decoding payload.")
            return None
        if compress == "zlib-stream":
            conn.zlib_stream = zlib.compressobj()
        elif compress:
            await ws.close(code=4000, reason=f"the fake supports zlib-stream only, not {compress}")
            return None
        return conn

    async def _gateway(self, ws: WebSocket, path: str) -> None:  # noqa: PLR0912 - one branch per opcode
        conn = await self._handshake(ws)
        if conn is None:
            return
        session: Session | None = None
        try:
            await conn.send(_hello(self.heartbeat_interval_ms))
            while True:
                frame = json.loads(await ws.receive_text())
                op, d = frame.get("op"), frame.get("d")
                if op == 1:
                    self.heartbeats += 1
                    await conn.send({"op": 11, "d": None, "s": None, "t": None})
                elif op == 2:
                    if session is not None:
                        await ws.close(code=4005, reason="Already authenticated.")
                        return
                    session = await self._identify(conn, d or {})
                    if session is None:
                        return
                elif op == 6:
                    session = await self._resume(conn, d or {}, path)
                elif op in (3, 4, 8):
                    if session is None:
                        await ws.close(code=4003, reason="Not authenticated.")
                        return
                else:
                    await ws.close(code=4001, reason="Unknown opcode.")
                    return
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if session is not None and session.conn is conn:
                session.conn = None

    def _build(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            self._loop = asyncio.get_running_loop()
            yield

        app = FastAPI(lifespan=lifespan)

        @app.middleware("http")
        async def via(request: Request, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers["Via"] = "1.1 google"
            return response

        def error(status: int, message: str, code: int = 0, **extra: Any) -> JSONResponse:
            return JSONResponse({"message": message, "code": code, **extra}, status_code=status)

        def bot_of(request: Request) -> Bot | None:
            auth = request.headers.get("authorization", "")
            bot = self.bots.get(auth.removeprefix("Bot ")) if auth.startswith("Bot ") else None
            return None if bot is None or bot.revoked else bot

        def unauthorized() -> JSONResponse:
            return error(401, "401: Unauthorized")

        @app.get("/api/v10/users/@me")
        async def me(request: Request) -> JSONResponse:
            bot = bot_of(request)
            if bot is None:
                return unauthorized()
            return JSONResponse(bot.user())

        @app.get("/api/v10/oauth2/applications/@me")
        async def application(request: Request) -> JSONResponse:
            bot = bot_of(request)
            if bot is None:
                return unauthorized()
            return JSONResponse(
                {
                    "id": bot.application_id,
                    "name": bot.username,
                    "icon": None,
                    "description": "",
                    "summary": "",
                    "type": None,
                    "bot_public": False,
                    "bot_require_code_grant": False,
                    "verify_key": "0" * 64,
                    "owner": {
                        "id": "700000000000000001",
                        "username": "founder",
                        "discriminator": "0",
                        "global_name": "Founder",
                        "avatar": None,
                        "public_flags": 0,
                    },
                    "team": None,
                    "flags": 0,
                    "bot": bot.user(),
                    "redirect_uris": [],
                    "interactions_endpoint_url": None,
                }
            )

        @app.get("/api/v10/gateway")
        async def gateway() -> JSONResponse:
            return JSONResponse({"url": self.gateway_url})

        @app.get("/api/v10/gateway/bot")
        async def gateway_bot(request: Request) -> JSONResponse:
            bot = bot_of(request)
            if bot is None:
                return unauthorized()
            self._budget(bot)
            reset_ms = max(0, int((bot.reset_at - time.monotonic()) * 1000))
            return JSONResponse(
                {
                    "url": self.gateway_url,
                    "shards": 1,
                    "session_start_limit": {
                        "total": bot.total,
                        "remaining": bot.remaining,
                        "reset_after": reset_ms,
                        "max_concurrency": 1,
                    },
                }
            )

        @app.get("/api/v10/channels/{channel_id}")
        async def channel(channel_id: str, request: Request) -> JSONResponse:
            if bot_of(request) is None:
                return unauthorized()
            if channel_id not in self.channels:
                return error(404, "Unknown Channel", 10003)
            return JSONResponse(
                {
                    "id": channel_id,
                    "type": 0,
                    "guild_id": self.guild_id,
                    "name": self.channels[channel_id],
                    "position": 0,
                    "permission_overwrites": [],
                    "nsfw": False,
                    "topic": None,
                    "last_message_id": None,
                    "rate_limit_per_user": 0,
                    "parent_id": None,
                    "flags": 0,
                }
            )

        @app.post("/api/v10/channels/{channel_id}/messages")
        async def post_message(channel_id: str, request: Request) -> JSONResponse:
            bot = bot_of(request)
            if bot is None:
                return unauthorized()
            with self._lock:
                self.post_attempts += 1
                limited = self._rate_limit.pop(0) if self._rate_limit else None
            reset = time.time() + 1
            bucket = {
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Reset": f"{reset:.3f}",
                "X-RateLimit-Bucket": "fake0000bucket",
            }
            if limited is not None:
                return JSONResponse(
                    {
                        "message": "You are being rate limited.",
                        "retry_after": limited,
                        "global": False,
                    },
                    status_code=429,
                    headers={
                        **bucket,
                        "Retry-After": str(max(1, round(limited))),
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset-After": f"{limited:.3f}",
                        "X-RateLimit-Scope": "user",
                    },
                )
            if channel_id not in self.channels:
                return error(404, "Unknown Channel", 10003)
            body = await request.json()
            content = str(body.get("content") or "")
            if not content and not body.get("embeds"):
                return error(400, "Cannot send an empty message", 50006)
            if len(content) > MAX_CONTENT:
                return error(
                    400,
                    "Invalid Form Body",
                    50035,
                    errors={
                        "content": {
                            "_errors": [
                                {
                                    "code": "BASE_TYPE_MAX_LENGTH",
                                    "message": "Must be 2000 or fewer in length.",
                                }
                            ]
                        }
                    },
                )
            message = self._message(channel_id, bot.user(), content)
            del message["member"]
            ref = body.get("message_reference")
            if ref:
                message["type"] = 19
                message["message_reference"] = {
                    "message_id": str(ref.get("message_id")),
                    "channel_id": channel_id,
                    "guild_id": self.guild_id,
                }
            with self._lock:
                self.posted.append(message)
            # Discord echoes a bot's own message to its gateway sessions too.
            await self._broadcast({**message, "member": {"roles": [], "joined_at": None}})
            return JSONResponse(
                message,
                headers={
                    **bucket,
                    "X-RateLimit-Remaining": "4",
                    "X-RateLimit-Reset-After": "1.000",
                },
            )

        @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        async def unknown(rest: str, request: Request) -> JSONResponse:
            self.unhandled.append(f"{request.method} /api/{rest}")
            return error(404, "404: Not Found")

        @app.websocket("/gateway")
        async def gateway_ws(ws: WebSocket) -> None:
            await self._gateway(ws, "/gateway")

        @app.websocket("/resume-gateway")
        async def resume_ws(ws: WebSocket) -> None:
            await self._gateway(ws, "/resume-gateway")

        return app

    def start(self) -> Self:
        """Serve in a background thread until :meth:`stop`."""
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_serving(
            self._server, self._thread, "the fake Discord server", lambda: self._loop is not None
        )
        return self

    def stop(self) -> None:
        """Close the gateway sessions and shut the server down."""
        if self._loop is not None and self._server is not None and self._server.started:
            with suppress(Exception):
                self._call(self._drop(1001, invalidate=True))
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
