"""A consumer process for the kill test: claims one delivery, prints it, then hangs."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

from mcos.store import make_store


async def main(url: str) -> None:
    store = make_store(url)
    await store.open()
    [d] = await store.claim("jarvis", visibility=timedelta(seconds=1))
    print(d.id, d.receipt, flush=True)
    await asyncio.sleep(3600)  # killed long before this ends


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
