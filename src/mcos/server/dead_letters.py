"""Dead letters are never silent: the recipient's manager is told and the humans are paged.

The store keeps every dead letter "not yet told" until this module has told someone, so a
notification survives a crash between the dead-lettering and the telling. One message per inbox
per sweep goes to the recipient's ``reports_to`` from Mission Control itself (with an
idempotency key, so two servers telling at once store it once), and the fleet's humans are paged
once per inbox per hour (the pager's key), not once per message.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence

from mcos.domain.audit import AuditEvent
from mcos.domain.messages import Delivery, MessageKind, NewMessage, Priority
from mcos.domain.paging import PageKind
from mcos.exceptions import McosError
from mcos.server.context import MissionControl

log = logging.getLogger(__name__)
SYSTEM = "mission-control"
"""The sender of what Mission Control itself says (as governance's messages)."""
NOTICE_META = "dead_letters"
"""Meta key marking a dead-letter notice (its value: the delivery ids)."""


def _describe(d: Delivery) -> str:
    m = d.message
    tail = f"; {d.deferrals} deferral(s)" if d.deferrals else ""
    return (
        f"- delivery {d.id}: message {m.id} from {m.sender} ({m.priority.value}) "
        f"{m.subject or '(no subject)'!r} — {d.last_error or 'dead'}, "
        f"{d.attempts} attempt(s){tail}"
    )


def notice(inbox: str, dead: Sequence[Delivery]) -> tuple[str, str]:
    """The subject and body telling someone that ``inbox`` has these new dead letters."""
    subject = f"{len(dead)} message(s) for {inbox} dead-lettered"
    body = (
        f"Mission Control gave up delivering {len(dead)} message(s) to {inbox}:\n"
        + "\n".join(_describe(d) for d in dead[:20])
        + (f"\n… and {len(dead) - 20} more" if len(dead) > 20 else "")
        + "\n\nSee them with `mcos dead-letters list --inbox "
        + inbox
        + "`; put one back with `mcos dead-letters requeue ID` once the cause is fixed."
    )
    return subject, body


async def notify_dead_letters(mc: MissionControl, limit: int = 500) -> int:
    """Tell the manager and page the humans of every dead letter not yet told; how many."""
    dead = await mc.store.unnotified_dead_letters(limit)
    if not dead:
        return 0
    managers = {a.name: a.reports_to for a in await mc.store.list_agents()}
    by_inbox: dict[str, list[Delivery]] = defaultdict(list)
    for d in dead:
        by_inbox[d.inbox].append(d)
    now = await mc.store.now()
    told = 0
    for inbox, letters in sorted(by_inbox.items()):
        subject, body = notice(inbox, letters)
        manager = managers.get(inbox)
        ids = ",".join(str(d.id) for d in letters)
        try:
            if manager is not None and manager != inbox:
                digest = hashlib.sha256(f"{inbox}:{ids}".encode()).hexdigest()[:32]
                await mc.store.send(
                    NewMessage(
                        sender=SYSTEM,
                        recipient=manager,
                        kind=MessageKind.ALERT,
                        priority=Priority.HIGH,
                        subject=subject[:200],
                        body=body,
                        idempotency_key=f"dead-letters:{digest}",
                        meta={NOTICE_META: ids[:500], "inbox": inbox},
                    )
                )
            if mc.pager is not None:
                await mc.pager.page(
                    sorted(mc.pager.routes),
                    f"dead-letters:{inbox}:{now:%Y-%m-%dT%H}",
                    PageKind.DEAD_LETTER,
                    subject,
                    body,
                )
        except McosError as e:  # told next sweep: they stay "not yet told"
            log.warning("could not tell of dead letters in %s: %s", inbox, e.message)
            continue
        marked = await mc.store.mark_dead_letters_notified([d.id for d in letters])
        if marked:
            await mc.store.record(
                AuditEvent(
                    actor=f"system:{SYSTEM}",
                    action="dead_letter.notified",
                    targets={"inbox": inbox},
                    detail={"deliveries": marked, "manager": manager or ""},
                )
            )
        told += len(marked)
    return told


async def sweep(mc: MissionControl) -> int:
    """Dead-letter what lapsed or expired in any inbox, then tell of every new dead letter."""
    await mc.store.sweep_dead_letters()
    return await notify_dead_letters(mc)


async def after_dead_lettering(mc: MissionControl, seen: int) -> None:
    """Tell at once when this process dead-lettered something since ``seen`` (the store's
    counter before a claim or nack); failures are left to the periodic sweep."""
    if mc.store.dead_lettered == seen:
        return
    try:
        await notify_dead_letters(mc)
    except McosError as e:
        log.warning("dead-letter notification deferred to the sweep: %s", e.message)
