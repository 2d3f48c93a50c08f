"""Calendars an agent may read: CalDAV (the ``caldav`` client) and Microsoft 365 (Graph's
calendarView), behind one small interface for the ``calendar_events`` tool.

Events are read over a window, recurring ones expanded to their occurrences, and handed to the
model as untrusted content (an invitation's title and notes are written by whoever sent it).
Which agents may read a calendar is the fleet file's ``[calendars.NAME] agents``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Protocol

from mcos.channels.graph import Graph, user_path
from mcos.config.models import CalendarConfig, Fleet
from mcos.config.secrets import resolve_key
from mcos.exceptions import ChannelError, McosError

MAX_WINDOW = timedelta(days=62)
"""The longest window one call may ask for."""
MAX_EVENTS = 200
"""Events returned at most (the earliest first)."""


class CalendarError(McosError):
    """A calendar could not be read (its server refused or is unreachable)."""

    code = "calendar_error"
    status = 502


@dataclass(frozen=True)
class CalendarEvent:
    """One occurrence of an event, in UTC (an all-day event from midnight to midnight)."""

    calendar: str
    title: str
    start: datetime
    end: datetime
    location: str = ""
    notes: str = ""
    all_day: bool = False

    def line(self) -> str:
        """The event on one line (plus its notes, cut), as the model reads it."""
        when = (
            f"{self.start:%Y-%m-%d} (all day)"
            if self.all_day
            else f"{self.start:%Y-%m-%d %H:%M}–{self.end:%H:%M} UTC"
        )
        where = f" @ {self.location}" if self.location else ""
        notes = " ".join(self.notes.split())[:300]
        return f"{when} [{self.calendar}] {self.title or '(no title)'}{where}" + (
            f"\n    {notes}" if notes else ""
        )


class Calendar(Protocol):
    """A calendar that lists its events over a window."""

    name: str

    async def events(self, start: datetime, end: datetime) -> list[CalendarEvent]:
        """The occurrences overlapping [start, end), earliest first."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def _utc(value: datetime | date) -> tuple[datetime, bool]:
    """A CalDAV DTSTART/DTEND value in UTC, and whether it was a date (all day)."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC), False
    return datetime.combine(value, time(), tzinfo=UTC), True


class CalDavCalendar:
    """A CalDAV calendar (a collection URL, or an account whose calendars are all read)."""

    def __init__(
        self,
        name: str,
        url: str,
        username: str | None,
        password: str | None,
        *,
        verify: str | bool = True,
    ) -> None:
        from caldav.davclient import DAVClient  # noqa: PLC0415 - only for CalDAV fleets

        self.name = name
        self.url = url
        self._client = DAVClient(
            url=url, username=username, password=password, ssl_verify_cert=verify
        )

    async def events(self, start: datetime, end: datetime) -> list[CalendarEvent]:
        """The occurrences in the window (recurrences expanded)."""
        return await asyncio.to_thread(self._events, start, end)

    def _found(self, start: datetime, end: datetime) -> list[Any]:
        """The event resources: of the account's calendar at the URL, or of every calendar
        of the account when the URL is not one of them (the server's, the principal's)."""
        calendars = self._client.principal().calendars()  # type: ignore[no-untyped-call]
        wanted = self.url.rstrip("/")
        chosen = [c for c in calendars if str(c.url).rstrip("/") == wanted] or calendars
        found: list[Any] = []
        for collection in chosen:
            found.extend(collection.search(start=start, end=end, event=True, expand=True))
        return found

    def _events(self, start: datetime, end: datetime) -> list[CalendarEvent]:
        from caldav.lib.error import DAVError  # noqa: PLC0415

        found: list[CalendarEvent] = []
        try:
            for item in self._found(start, end):
                component = item.icalendar_component
                first, all_day = _utc(component.get("dtstart").dt)
                if component.get("dtend") is not None:
                    last, _ = _utc(component.get("dtend").dt)
                else:
                    last = first + (timedelta(days=1) if all_day else timedelta())
                found.append(
                    CalendarEvent(
                        calendar=self.name,
                        title=str(component.get("summary", "")),
                        start=first,
                        end=last,
                        location=str(component.get("location", "")),
                        notes=str(component.get("description", "")),
                        all_day=all_day,
                    )
                )
        except (DAVError, OSError, ValueError) as e:  # HTTP errors are OSErrors too
            msg = f"calendar {self.name}: the CalDAV server at {self.url} failed: {e}"
            raise CalendarError(msg, calendar=self.name) from None
        return sorted(found, key=lambda e: e.start)

    async def aclose(self) -> None:
        """Close the HTTP session."""
        self._client.close()


class GraphCalendar:
    """A Microsoft 365 calendar, read through Graph's calendarView (recurrences expanded)."""

    def __init__(self, name: str, graph: Graph, mailbox: str | None) -> None:
        self.name = name
        self.graph = graph
        self.user = user_path(mailbox)

    async def events(self, start: datetime, end: datetime) -> list[CalendarEvent]:
        """The occurrences in the window, times in UTC."""
        params = {
            "startDateTime": start.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "endDateTime": end.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "$select": "subject,start,end,location,bodyPreview,isAllDay",
            "$orderby": "start/dateTime",
        }
        found: list[CalendarEvent] = []
        try:
            async for page in self.graph.pages(
                f"{self.user}/calendarView",
                params=params,
                headers={"Prefer": 'outlook.timezone="UTC"'},
            ):
                found.extend(self._event(item) for item in page.get("value", []))
        except ChannelError as e:
            raise CalendarError(f"calendar {self.name}: {e.message}", calendar=self.name) from None
        return found

    def _event(self, item: dict[str, Any]) -> CalendarEvent:
        def when(field: str) -> datetime:
            stamp = str((item.get(field) or {}).get("dateTime", ""))[:26]
            parsed = datetime.fromisoformat(stamp)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

        return CalendarEvent(
            calendar=self.name,
            title=str(item.get("subject") or ""),
            start=when("start"),
            end=when("end"),
            location=str((item.get("location") or {}).get("displayName") or ""),
            notes=str(item.get("bodyPreview") or ""),
            all_day=bool(item.get("isAllDay")),
        )

    async def aclose(self) -> None:
        """Close Graph's connections."""
        await self.graph.aclose()


def open_calendar(
    name: str, config: CalendarConfig, *, base_dir: Path, state_dir: Path, where: str
) -> Calendar:
    """Calendar ``name`` with its secrets resolved (a missing one is a ``ConfigError``)."""
    if config.kind == "caldav":
        assert config.url is not None  # the fleet file's validation requires it
        password = (
            resolve_key(config.password, where=where, base_dir=base_dir)
            if config.password
            else None
        )
        return CalDavCalendar(name, config.url, config.username, password)
    from mcos.channels.oauth import OAuthTokens, cache_file  # noqa: PLC0415

    assert config.oauth is not None  # the fleet file's validation requires it
    secret = (
        resolve_key(config.oauth.client_secret, where=where, base_dir=base_dir)
        if config.oauth.client_secret
        else None
    )
    scopes = ("Calendars.Read",) if config.oauth.flow == "device_code" else ()
    tokens = OAuthTokens(
        name, config.oauth, secret=secret, cache_path=cache_file(state_dir, name), scopes=scopes
    )
    return GraphCalendar(name, Graph(name, config.graph_url, tokens), config.mailbox)


def agent_calendars(fleet: Fleet, agent: str) -> dict[str, Calendar]:
    """The calendars the fleet file lets ``agent`` read."""
    return {
        name: open_calendar(
            name,
            config,
            base_dir=fleet.base_dir,
            state_dir=fleet.state_dir,
            where=f"{fleet.path}: calendars.{name}",
        )
        for name, config in fleet.calendars.items()
        if agent in config.agents and config.enabled
    }


def parked_calendars(fleet: Fleet, agent: str) -> list[str]:
    """The calendars ``agent`` may read once they are enabled (``enabled = false``)."""
    return sorted(n for n, c in fleet.calendars.items() if agent in c.agents and not c.enabled)


def parse_when(text: str, *, end: bool = False) -> datetime:
    """An ISO date or date-time as UTC (a date alone: its midnight; as an ``end``, the next
    midnight, so ``2026-12-03``..``2026-12-03`` is that whole day). ValueError if neither."""
    text = text.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).astimezone(UTC)
    midnight = datetime.combine(day, time(), tzinfo=UTC)
    return midnight + timedelta(days=1) if end else midnight
