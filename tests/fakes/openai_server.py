"""A local fake of the OpenAI Chat Completions API, as Ollama, vLLM and LM Studio serve it.

Driven by the real ``openai`` SDK over real HTTP (``base_url=fake.url + "/v1"``). It checks
what a strict server checks (bearer key, message roles, every ``tool`` message answering a
``tool_calls`` id of the assistant message before it) and answers from the same script types
as the Anthropic fake, so one test can run against either provider.

Unknown request fields are ignored, as the local servers do; ``api_key=None`` accepts any key
(Ollama ignores it).
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tests.fakes.scripts import (
    JSON,
    ApiError,
    Overloaded,
    RateLimited,
    RecordedRequest,
    Reply,
    ScriptedServer,
    SpendLimit,
    Text,
    ToolUse,
    count_tokens,
    dumps,
    new_id,
    pieces,
    seconds_header,
    sse,
)

__all__ = [
    "ApiError",
    "FakeOpenAI",
    "Overloaded",
    "RateLimited",
    "RecordedRequest",
    "Reply",
    "SpendLimit",
    "Text",
    "ToolUse",
]

ROLES = ("system", "user", "assistant", "tool")
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
FINISH_REASONS = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}
MODELS = ("llama3.1:8b", "qwen2.5:7b-instruct")
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. "
    "For more information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)


@dataclass
class Refusal(Exception):
    """An error response in the OpenAI shape."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse(
            {"error": error},
            status_code=self.status,
            headers={"x-request-id": new_id("req_", 32), **self.headers},
        )


def invalid(param: str, message: str) -> Refusal:
    return Refusal(400, message, param=param)


def text_of(content: object) -> str:
    """The text of a message's content: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


# -- validation ------------------------------------------------------------------------------


def check_content(content: object, param: str, *, required: bool) -> None:
    if content is None:
        if required:
            raise invalid(param, f"Missing required parameter: '{param}'.")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid(param, f"Invalid type for '{param}': expected a string or an array.")
    for k, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise invalid(f"{param}[{k}]", f"content part {kind!r} is not supported by this fake")
        if not isinstance(part.get("text"), str):
            raise invalid(f"{param}[{k}].text", "Missing required parameter: 'text'.")


def check_tool_calls(calls: object, param: str) -> list[str]:
    """An assistant message's tool calls; returns their ids."""
    if not isinstance(calls, list):
        raise invalid(param, f"Invalid type for '{param}': expected an array.")
    ids = []
    for k, call in enumerate(calls):
        path = f"{param}[{k}]"
        if not isinstance(call, dict) or not isinstance(call.get("id"), str):
            raise invalid(f"{path}.id", f"Missing required parameter: '{path}.id'.")
        if call.get("type", "function") != "function":
            raise invalid(f"{path}.type", "Invalid value: expected 'function'.")
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(f"{path}.function", f"Missing required parameter: '{path}.function'.")
        if not isinstance(function.get("arguments"), str):
            raise invalid(
                f"{path}.function.arguments",
                "Invalid type: 'arguments' must be a JSON-encoded string.",
            )
        ids.append(call["id"])
    return ids


def unanswered(param: str, open_calls: list[str]) -> Refusal:
    return invalid(
        param,
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response "
        f"messages: {', '.join(open_calls)}",
    )


def check_tool_message(message: JSON, param: str, answerable: set[str]) -> str:
    """A ``tool`` message; returns the tool call id it answers."""
    check_content(message.get("content"), f"{param}.content", required=True)
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise invalid(f"{param}.tool_call_id", "Missing required parameter: 'tool_call_id'.")
    if call_id not in answerable:
        raise invalid(
            f"{param}.tool_call_id",
            f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in "
            "'tool_calls' of previous message.",
        )
    return call_id


def check_messages(messages: object) -> None:
    """Roles, content, and the tool_calls ↔ tool message pairing."""
    if not isinstance(messages, list):
        raise invalid("messages", "Missing required parameter: 'messages'.")
    if not messages:
        raise invalid("messages", "[] is too short - 'messages'")
    open_calls: list[str] = []  # ids of the last assistant's tool_calls not yet answered
    answerable: set[str] = set()
    for i, message in enumerate(messages):
        param = f"messages.[{i}]"
        if not isinstance(message, dict):
            raise invalid(param, f"Invalid type for '{param}': expected an object.")
        role = message.get("role")
        if role not in ROLES:
            supported = ", ".join(f"'{r}'" for r in ROLES)
            raise invalid(
                f"{param}.role", f"Invalid value: {role!r}. Supported values are: {supported}."
            )
        if role == "tool":
            call_id = check_tool_message(message, param, answerable)
            open_calls = [c for c in open_calls if c != call_id]
            continue
        if open_calls:
            raise unanswered(f"{param}.role", open_calls)
        answerable = set()
        if role == "assistant" and message.get("tool_calls") is not None:
            open_calls = check_tool_calls(message["tool_calls"], f"{param}.tool_calls")
            answerable = set(open_calls)
            check_content(message.get("content"), f"{param}.content", required=False)
        else:
            check_content(message.get("content"), f"{param}.content", required=role != "assistant")
    if open_calls:
        raise unanswered("messages", open_calls)


def check_tools(tools: object, tool_choice: object) -> None:
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid("tools", "Invalid type for 'tools': expected an array.")
        for i, tool in enumerate(tools):
            param = f"tools[{i}]"
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise invalid(f"{param}.type", "Invalid value: expected 'function'.")
            function = tool.get("function")
            if not isinstance(function, dict):
                raise invalid(
                    f"{param}.function", f"Missing required parameter: '{param}.function'."
                )
            name = function.get("name")
            if not isinstance(name, str) or not NAME_PATTERN.match(name):
                raise invalid(
                    f"{param}.function.name",
                    f"Invalid '{param}.function.name': string does not match pattern. "
                    f"Expected a string that matches the pattern '{NAME_PATTERN.pattern}'.",
                )
            if not isinstance(function.get("parameters", {}), dict):
                raise invalid(f"{param}.function.parameters", "Invalid type: expected an object.")
            names.append(name)
    if tool_choice is None or tool_choice in ("none", "auto"):
        return
    if tool_choice == "required" and names:
        return
    if isinstance(tool_choice, dict):
        function = tool_choice.get("function")
        if isinstance(function, dict) and function.get("name") in names:
            return
    raise invalid("tool_choice", "Invalid value for 'tool_choice': no matching tool provided.")


def max_output_tokens(body: JSON) -> int | None:
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is None:
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise invalid("max_tokens", "Invalid 'max_tokens': integer below minimum value (1).")
    return limit


def check_request(body: JSON) -> int | None:
    """Validate a chat completion request; returns the output token limit."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "you must provide a model parameter")
    if not isinstance(body.get("stream", False), bool):
        raise invalid("stream", "Invalid type for 'stream': expected a boolean.")
    if body.get("stream_options") is not None:
        if not body.get("stream"):
            raise invalid(
                "stream_options",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            )
        if not isinstance(body["stream_options"], dict):
            raise invalid(
                "stream_options", "Invalid type for 'stream_options': expected an object."
            )
    if body.get("n", 1) != 1:
        raise invalid("n", "only n=1 is supported by this fake")
    check_messages(body.get("messages"))
    check_tools(body.get("tools"), body.get("tool_choice"))
    return max_output_tokens(body)


# -- counting and answering ------------------------------------------------------------------


def prompt_tokens(body: JSON) -> int:
    """Tokens of the prompt: message texts, tool call arguments, tool definitions as JSON."""
    total = sum(count_tokens(dumps(tool)) for tool in body.get("tools") or [])
    for message in body["messages"]:
        total += count_tokens(text_of(message.get("content")))
        for call in message.get("tool_calls") or []:
            total += count_tokens(call["function"]["arguments"])
    return total


@dataclass
class Completion:
    """The assistant message a scripted answer becomes."""

    content: str | None
    tool_calls: list[JSON]
    finish_reason: str

    def tokens(self) -> int:
        return count_tokens(self.content or "") + sum(
            count_tokens(c["function"]["arguments"]) for c in self.tool_calls
        )


def tool_call(name: str, arguments: JSON, call_id: str | None = None) -> JSON:
    return {
        "id": call_id or new_id("call_", 24),
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def completion_for(answer: Text | ToolUse | Reply) -> Completion:
    if isinstance(answer, Text):
        return Completion(answer.text, [], "stop")
    if isinstance(answer, ToolUse):
        return Completion(
            answer.text, [tool_call(answer.name, answer.input, answer.id)], "tool_calls"
        )
    texts = [str(b.get("text", "")) for b in answer.content if b.get("type") == "text"]
    calls = [
        tool_call(str(b["name"]), dict(b.get("input", {})), b.get("id"))
        for b in answer.content
        if b.get("type") == "tool_use"
    ]
    finish = FINISH_REASONS.get(answer.stop_reason, answer.stop_reason)
    return Completion("".join(texts) if texts else None, calls, finish)


def truncate(completion: Completion, limit: int | None) -> Completion:
    """Cut at the output limit (``finish_reason: length``); tool calls that do not fit go."""
    if limit is None or completion.tokens() <= limit:
        return completion
    return Completion((completion.content or "")[: limit * 4], [], "length")


def refusal_for(answer: RateLimited | Overloaded | SpendLimit | ApiError) -> Refusal:
    if isinstance(answer, RateLimited):
        return Refusal(
            429,
            answer.message,
            type="requests",
            code="rate_limit_exceeded",
            headers={
                "retry-after": seconds_header(answer.retry_after),
                "x-ratelimit-limit-requests": "60",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{seconds_header(answer.retry_after)}s",
            },
        )
    if isinstance(answer, Overloaded):
        return Refusal(503, answer.message, type="server_error")
    if isinstance(answer, SpendLimit):
        return Refusal(
            429,
            answer.message or QUOTA_MESSAGE,
            type="insufficient_quota",
            code="insufficient_quota",
        )
    return Refusal(answer.status, answer.message, type=answer.type, headers=dict(answer.headers))


# -- the server ------------------------------------------------------------------------------


class FakeOpenAI(ScriptedServer):
    """Chat Completions on a loopback port, answering from a script.

    ``api_key``: the bearer key to require, or ``None`` to accept any (like Ollama).
    The SDK's ``base_url`` is ``fake.base_url`` (``fake.url + "/v1"``).
    """

    def __init__(self, api_key: str | None = "sk-test", *, max_recorded: int | None = None) -> None:
        super().__init__(max_recorded=max_recorded)
        self.api_key = api_key

    @property
    def base_url(self) -> str:
        """What to pass to ``openai.OpenAI(base_url=...)``."""
        return self.url + "/v1"

    def build_app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.post("/v1/chat/completions")
        async def completions(request: Request) -> Response:
            raw = await request.body()
            return await run_in_threadpool(self.create_completion, dict(request.headers), raw)

        @app.get("/v1/models")
        async def models(request: Request) -> Response:
            try:
                self.authenticate(dict(request.headers))
            except Refusal as refusal:
                return refusal.response()
            data = [
                {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "library"}
                for m in MODELS
            ]
            return JSONResponse({"object": "list", "data": data})

        @app.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
            message = f"Unknown request URL: {request.method} {request.url.path}."
            code = "unknown_url" if exc.status_code == 404 else None
            return Refusal(exc.status_code, message, code=code).response()

        return app

    def authenticate(self, headers: dict[str, str]) -> None:
        if self.api_key is None:
            return
        bearer = headers.get("authorization", "")
        if not bearer.lower().startswith("bearer ") or not bearer[7:].strip():
            raise Refusal(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        key = bearer[7:].strip()
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise Refusal(
                401, f"Incorrect API key provided: {key[:4]}****.", code="invalid_api_key"
            )

    def create_completion(self, headers: dict[str, str], raw: bytes) -> Response:
        """``POST /v1/chat/completions``: validate, answer from the script, count usage."""
        body: JSON = {}
        try:
            self.authenticate(headers)
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                raise invalid("", "We could not parse the JSON body of your request.") from None
            if not isinstance(parsed, dict):
                raise invalid("", "The request body must be a JSON object.")
            body = parsed
            limit = check_request(body)
            answer = self.next_answer(body)
            if isinstance(answer, RateLimited | Overloaded | SpendLimit | ApiError):
                raise refusal_for(answer)
        except Refusal as refusal:
            self.record(RecordedRequest(body, headers, refusal.status))
            return refusal.response()
        completion = truncate(completion_for(answer), limit)
        prompt = prompt_tokens(body)
        output = max(1, completion.tokens())
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "total_tokens": prompt + output,
        }
        message: JSON = {"role": "assistant", "content": completion.content, "refusal": None}
        if completion.tool_calls:
            message["tool_calls"] = completion.tool_calls
        self.record(RecordedRequest(body, headers, 200, usage))
        head: JSON = {
            "id": new_id("chatcmpl-", 29),
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }
        if body.get("stream"):
            options = body.get("stream_options") or {}
            return StreamingResponse(
                self.stream_chunks(
                    head, completion, usage if options.get("include_usage") else None
                ),
                media_type="text/event-stream",
                headers={"x-request-id": new_id("req_", 32)},
            )
        return JSONResponse(
            {
                **head,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": completion.finish_reason,
                    }
                ],
                "usage": usage,
            },
            headers={"x-request-id": new_id("req_", 32)},
        )

    def stream_chunks(
        self, head: JSON, completion: Completion, usage: JSON | None
    ) -> Iterator[bytes]:
        """A completion as the real API streams it: ``chat.completion.chunk`` deltas (the role,
        the text, each tool call's name then its arguments), a final chunk with the finish
        reason, the usage chunk (empty choices) when ``stream_options.include_usage`` asked
        for it, and ``[DONE]``."""
        with_usage = {"usage": None} if usage is not None else {}

        def chunk(delta: JSON, finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse(
                {**head, "object": "chat.completion.chunk", "choices": [choice]} | with_usage
            )

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        gated = False
        for part in pieces(completion.content or "") if completion.content else []:
            yield chunk({"content": part})
            if not gated:
                gated = True
                self.wait_at_gate()
        for index, call in enumerate(completion.tool_calls):
            opening = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            yield chunk({"tool_calls": [opening]})
            for part in pieces(call["function"]["arguments"]):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
        yield chunk({}, completion.finish_reason)
        if usage is not None:
            yield sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        yield sse("[DONE]")
