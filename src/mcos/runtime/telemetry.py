"""OpenTelemetry spans for an agent's turns, model calls and tool calls.

Off unless the fleet file sets ``[telemetry] otlp_endpoint``: then every turn is an
``invoke_agent`` span, each model call a ``chat`` span and each tool call an ``execute_tool``
span under it, named and attributed by the OpenTelemetry GenAI semantic conventions, and
exported over OTLP/HTTP (protobuf) in batches. When off nothing of OpenTelemetry is imported
and every hook is a no-op.

One trace runs through Mission Control: a message carries its sender's W3C trace context in
its ``meta`` (``traceparent``, ``tracestate``); the turn that handles it is a child of the first
such message and links the others; the messages the turn sends carry the turn's context.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mcos.config.models import Fleet, parse_key_ref
from mcos.config.secrets import resolve_key
from mcos.domain.budget import Usage
from mcos.models.base import ModelReply

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from mcos.api_models import MessageOut

__all__ = ["Recorder", "Telemetry", "trace_meta"]

# GenAI semantic conventions (gen_ai.* attributes; spelled out: the Python constants live in
# an incubating module that may move).
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"
"""The attribute ``gen_ai.provider.name`` replaced; still set for backends that read it."""
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
AGENT_NAME = "gen_ai.agent.name"
CONVERSATION = "gen_ai.conversation.id"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
ERROR_TYPE = "error.type"
CHAT, EXECUTE_TOOL, INVOKE_AGENT = "chat", "execute_tool", "invoke_agent"

TRACEPARENT, TRACESTATE = "traceparent", "tracestate"
"""The W3C Trace Context keys a message's ``meta`` carries."""

_open = 0
"""Telemetry instances exporting in this process: none, and :func:`trace_meta` costs nothing."""


class Recorder:
    """A span being recorded — or nothing, when telemetry is off."""

    __slots__ = ("span",)

    def __init__(self, span: Span | None = None) -> None:
        self.span = span

    def set(self, attributes: Mapping[str, Any]) -> None:
        """Add attributes (None values skipped)."""
        if self.span is not None:
            self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def usage(self, usage: Usage) -> None:
        """Token counts by the conventions: input counts every prompt token, cached ones too."""
        self.set(
            {
                INPUT_TOKENS: usage.input + usage.cache_read + usage.cache_write,
                OUTPUT_TOKENS: usage.output,
                CACHE_READ_TOKENS: usage.cache_read,
                CACHE_WRITE_TOKENS: usage.cache_write,
            }
        )

    def reply(self, reply: ModelReply) -> None:
        """What a model call answered: its model, why it stopped, its tokens."""
        if self.span is not None:
            self.set({RESPONSE_MODEL: reply.model, FINISH_REASONS: [reply.stop_reason]})
            self.usage(reply.usage)

    def fail(self, error_type: str, description: str = "") -> None:
        """Mark the span failed (``error.type`` and an error status)."""
        if self.span is None:
            return
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

        self.span.set_attribute(ERROR_TYPE, error_type)
        self.span.set_status(Status(StatusCode.ERROR, description[:500] or None))


class Telemetry:
    """One agent's span source: a tracer exporting to the fleet's OTLP endpoint, or off."""

    def __init__(self, agent: str, provider: TracerProvider | None = None) -> None:
        self.agent = agent
        self.provider = provider
        self.tracer: Tracer | None = provider.get_tracer("mcos.runtime") if provider else None

    @classmethod
    def open(cls, fleet: Fleet, agent: str) -> Telemetry:
        """As ``[telemetry]`` says: exporting when an endpoint is set, else off (free).
        A header's key reference that cannot be resolved is a ``ConfigError``."""
        config = fleet.telemetry
        if config.otlp_endpoint is None:
            return cls(agent)
        where = f"{fleet.path}: telemetry.headers"
        headers = {k: _header(v, f"{where}.{k}", fleet) for k, v in config.headers.items()}
        # Imported only here: an agent without telemetry never pays for the SDK.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

        resource = Resource.create(
            {
                "service.name": config.service_name,
                "service.namespace": fleet.fleet.name,
                "service.instance.id": agent,
            }
        )
        provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint, headers=headers, timeout=5)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        global _open  # noqa: PLW0603 (a process-wide count, read by trace_meta)
        _open += 1
        return cls(agent, provider)

    @property
    def on(self) -> bool:
        """Whether spans are exported."""
        return self.tracer is not None

    @contextlib.contextmanager
    def turn(
        self, kind: str, provider: str, model: str, messages: Sequence[MessageOut] = ()
    ) -> Iterator[Recorder]:
        """An ``invoke_agent`` span around one turn: a child of the first message that carries
        a trace context, linked to the others."""
        if self.tracer is None:
            yield Recorder()
            return
        from opentelemetry import trace  # noqa: PLC0415
        from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
            TraceContextTextMapPropagator,
        )

        propagator = TraceContextTextMapPropagator()
        contexts = [propagator.extract(dict(m.meta)) for m in messages if TRACEPARENT in m.meta]
        spans = [trace.get_current_span(c).get_span_context() for c in contexts]
        valid = [(c, s) for c, s in zip(contexts, spans, strict=True) if s.is_valid]
        parent = valid[0][0] if valid else None
        links = [trace.Link(s) for _, s in valid[1:]]
        attributes = {
            OPERATION: INVOKE_AGENT,
            AGENT_NAME: self.agent,
            PROVIDER: provider,
            SYSTEM: provider,
            REQUEST_MODEL: model,
            "mcos.turn.kind": kind,
            "mcos.message.ids": [m.id for m in messages],
        }
        if messages:
            attributes[CONVERSATION] = str(messages[0].thread_id)
        with self._span(f"{INVOKE_AGENT} {self.agent}", attributes, parent, links) as span:
            yield span

    @contextlib.contextmanager
    def chat(self, provider: str, model: str, max_tokens: int, purpose: str) -> Iterator[Recorder]:
        """A ``chat`` span around one model call (a client span: the model API is remote)."""
        if self.tracer is None:
            yield Recorder()
            return
        attributes = {
            OPERATION: CHAT,
            PROVIDER: provider,
            SYSTEM: provider,
            REQUEST_MODEL: model,
            REQUEST_MAX_TOKENS: max_tokens,
            "mcos.purpose": purpose,
        }
        with self._span(f"{CHAT} {model}", attributes, client=True) as span:
            yield span

    @contextlib.contextmanager
    def tool(self, name: str, call_id: str) -> Iterator[Recorder]:
        """An ``execute_tool`` span around one tool call."""
        if self.tracer is None:
            yield Recorder()
            return
        kind = "extension" if "__" in name else "function"  # MCP tools: SERVER__TOOL
        attributes = {
            OPERATION: EXECUTE_TOOL,
            TOOL_NAME: name,
            TOOL_CALL_ID: call_id,
            TOOL_TYPE: kind,
            AGENT_NAME: self.agent,
        }
        with self._span(f"{EXECUTE_TOOL} {name}", attributes) as span:
            yield span

    @contextlib.contextmanager
    def _span(
        self,
        name: str,
        attributes: Mapping[str, Any],
        parent: Any = None,
        links: Sequence[Any] = (),
        *,
        client: bool = False,
    ) -> Iterator[Recorder]:
        """A span made current for its block; an exception ends it failed, named by type."""
        assert self.tracer is not None
        from opentelemetry.trace import SpanKind  # noqa: PLC0415

        with self.tracer.start_as_current_span(
            name,
            context=parent,
            kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
            attributes=dict(attributes),
            links=links,
        ) as span:
            recorder = Recorder(span)
            try:
                yield recorder
            except BaseException as e:
                recorder.fail(type(e).__name__, str(e))
                raise

    def close(self) -> None:
        """Export what is buffered and stop (the agent stops)."""
        global _open  # noqa: PLW0603
        if self.provider is not None:
            self.provider.shutdown()
            self.provider, self.tracer = None, None
            _open -= 1


def trace_meta() -> dict[str, str]:
    """The current span's W3C trace context, as message ``meta`` to send with a message (empty
    when no telemetry exports in this process, or no span is current)."""
    if not _open:
        return {}
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
        TraceContextTextMapPropagator,
    )

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier


def _header(value: str, where: str, fleet: Fleet) -> str:
    """A literal header value, or the secret a key reference points at."""
    try:
        parse_key_ref(value)
    except ValueError:
        return value
    return resolve_key(value, where=where, base_dir=fleet.base_dir)
