"""Starting a fake's uvicorn server on a thread and waiting, with a deadline, until it serves."""

from __future__ import annotations

import threading
from collections.abc import Callable

import uvicorn
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed


def wait_serving(
    server: uvicorn.Server,
    thread: threading.Thread,
    what: str,
    ready: Callable[[], bool] = lambda: True,
    timeout: float = 30.0,
) -> None:
    """Until ``server`` (run by ``thread``) has started and ``ready()`` holds.

    Raises RuntimeError (not a test failure: the benchmarks use the fakes too) when the thread
    dies or ``timeout`` passes, after telling the server to exit so no thread is left serving.
    """

    def up() -> bool:
        if not thread.is_alive():
            msg = f"{what} stopped before it started"
            raise RuntimeError(msg)
        return bool(server.started) and ready()

    started = Retrying(
        retry=retry_if_result(lambda ok: not ok),
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.01),
        retry_error_callback=lambda _: False,
    )
    try:
        if not started(up):
            msg = f"{what} did not start within {timeout:g}s"
            raise RuntimeError(msg)
    except RuntimeError:
        server.should_exit = True
        raise
