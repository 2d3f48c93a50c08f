"""Long-polls parked in Mission Control, re-checked together rather than each on its own.

A parked ``GET /v1/inbox?wait=`` wakes at once on a send (the store's wake-up; NOTIFY across
servers on PostgreSQL). Some deliveries become claimable with nobody announcing it, though: a
claim whose visibility lapsed, a deferred delivery whose not-before passed, a send by a process
that does not announce. Each parked poll used to re-claim on its own every
``poll_fallback_seconds`` — 500 idle agents cost Mission Control 500 claims a second. Now one task
asks the store, that often, which inboxes with a parked poll hold anything queued or claimed, and
wakes only their polls (which then claim): an idle inbox costs nothing while it waits.
"""

from __future__ import annotations

import asyncio
import logging

from mcos.exceptions import McosError
from mcos.server.context import MissionControl

log = logging.getLogger("mcos.server")


async def recheck_once(mc: MissionControl) -> list[str]:
    """Wake the parked polls of every inbox that holds a queued or claimed delivery (all of
    them, should the store not answer: they claim, as before); the inboxes woken."""
    inboxes = mc.parked.inboxes()
    if not inboxes:
        return []
    try:
        depths = await mc.store.inbox_depths(inboxes)
    except McosError as e:
        log.warning("re-check of parked long-polls failed: %s", e.message)
        woken = inboxes
    else:
        woken = [d.inbox for d in depths if d.queued or d.claimed]
    mc.parked.wake(woken)
    return woken


async def recheck(mc: MissionControl) -> None:
    """Re-check the parked polls every ``poll_fallback_seconds`` until cancelled."""
    while True:
        await asyncio.sleep(mc.settings.poll_fallback_seconds)
        await recheck_once(mc)
