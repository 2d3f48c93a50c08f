"""An OTLP/HTTP traces receiver on loopback: what an OpenTelemetry Collector does with
``POST /v1/traces``, reduced to keeping the spans for a test to read.

It speaks the real wire protocol: the body is a protobuf ``ExportTraceServiceRequest``
(``Content-Type: application/x-protobuf``, gzip when ``Content-Encoding`` says so), decoded
with ``opentelemetry-proto``; the answer is an ``ExportTraceServiceResponse``. Anything else
is refused as a collector would (415 for another content type, 400 for a body that does not
decode), so an exporter that drifted from the protocol fails the test.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import uvicorn
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.api.conftest import free_port
from tests.fakes.serving import wait_serving

PROTOBUF = "application/x-protobuf"
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _value(v: AnyValue) -> Any:
    """An OTLP attribute value as plain Python."""
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver decoded it (ids in lowercase hex, as in ``traceparent``)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    links: list[tuple[str, str]]
    status: int
    """0 unset, 1 ok, 2 error."""
    events: list[str]


@dataclass
class FakeCollector:
    """``POST /v1/traces`` on a free loopback port; ``spans`` holds every span received."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    exports: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    """Each export request's HTTP headers."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _port: int | None = None

    async def _traces(self, request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0] != PROTOBUF:
            return PlainTextResponse("only application/x-protobuf is accepted", 415)
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        try:
            export.ParseFromString(body)
        except DecodeError as e:
            return PlainTextResponse(f"not an ExportTraceServiceRequest: {e}", 400)
        got = []
        for rs in export.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(
                        ReceivedSpan(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            kind=KINDS[s.kind],
                            attributes={kv.key: _value(kv.value) for kv in s.attributes},
                            resource=resource,
                            links=[(ln.trace_id.hex(), ln.span_id.hex()) for ln in s.links],
                            status=s.status.code,
                            events=[e.name for e in s.events],
                        )
                    )
        with self._lock:
            self.spans += got
            self.exports += 1
            self.headers.append(dict(request.headers))
        answer = ExportTraceServiceResponse().SerializeToString()
        return Response(answer, media_type=PROTOBUF)

    def named(self, prefix: str) -> list[ReceivedSpan]:
        """The spans received so far whose name starts with ``prefix``."""
        with self._lock:
            return [s for s in self.spans if s.name.startswith(prefix)]

    @property
    def endpoint(self) -> str:
        """The traces URL to give an exporter."""
        if self._port is None:
            raise RuntimeError("FakeCollector is not running: call start() first")
        return f"http://127.0.0.1:{self._port}/v1/traces"

    def start(self) -> Self:
        """Serve on a free loopback port; returns once it accepts connections."""
        port = free_port()
        app = Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])])
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        )
        thread = threading.Thread(target=server.run, name="FakeCollector", daemon=True)
        thread.start()
        wait_serving(server, thread, f"FakeCollector on port {port}")
        self._server, self._thread, self._port = server, thread, port
        return self

    def stop(self) -> None:
        """Stop serving; a no-op when not running."""
        server, thread = self._server, self._thread
        self._server = self._thread = self._port = None
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(15)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
