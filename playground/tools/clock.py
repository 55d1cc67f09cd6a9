"""The clock tool: the current date and time in UTC and in the server's local zone, or in a named
IANA time zone (``clock[Europe/Paris]``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from playground.tools import ToolError

# Inputs that just mean "now" (models write all of these).
_NOW_WORDS = {"", "now", "time", "date", "today", "current", "current time", "current date", "utc", "local"}


def _fmt(moment: datetime) -> str:
    return moment.strftime("%A %d %B %Y, %H:%M:%S %Z (UTC%z)")


class Clock:
    name = "clock"
    description = "clock[]: the current date and time (UTC and local); clock[Europe/Paris] for a time zone"

    def __init__(self, now: Callable[[], datetime] | None = None):
        self._now = now or (lambda: datetime.now(UTC))

    def run(self, arg: str) -> str:
        moment = self._now().astimezone(UTC)
        zone = arg.strip().strip("`'\"").strip()
        if zone.lower() in _NOW_WORDS:
            local = moment.astimezone()
            return f"UTC: {_fmt(moment)}; local: {_fmt(local)}"
        if len(zone) > 64 or ".." in zone:
            raise ToolError("clock takes nothing, or a time zone name such as Europe/Paris")
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ToolError(
                f"unknown time zone {zone!r}; use clock[] or a name such as Europe/Paris or America/New_York"
            ) from exc
        return f"{zone}: {_fmt(moment.astimezone(tz))}; UTC: {_fmt(moment)}"
