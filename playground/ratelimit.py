"""Per-user and per-address rate limits on chat turns and feedback events, in memory, with the
moving-window strategy of the ``limits`` library (each key keeps the times of its last N hits, so
"20 per minute" means at most 20 in any 60 seconds: no burst at a window boundary).

A scope ("chat": anything that makes the model generate; "feedback": ratings, votes, reports) has one
limit per user and one per client address; a request passes only if both have room, and then counts
against both. Limits are strings like "20/minute", "5 per 10 seconds", "off".

Client address: ``request.client.host``. uvicorn (under Gradio) already replaces it with the
X-Forwarded-For client when the connection comes from 127.0.0.1 (its default ``forwarded_allow_ips``),
which is what the ``--share`` tunnel is: so public users are told apart by their real address, and a
header sent from anywhere else is ignored. Behind a tunnel that sends no X-Forwarded-For, every public
user shares 127.0.0.1; the per-user limit still applies.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from settings import parse_rate_limit as parse_limit  # the one parser; settings validate with it

SCOPES = ("chat", "feedback")
_WHAT = {"chat": "messages", "feedback": "feedback events"}


def describe(item: RateLimitItem, what: str = "") -> str:
    """ "20 per minute", or with ``what``: "20 messages per minute"."""
    unit = item.GRANULARITY.name
    per = f"per {unit}" if item.multiples == 1 else f"per {item.multiples} {unit}s"
    return " ".join(x for x in (str(item.amount), what, per) if x)


@dataclass(frozen=True)
class Limited:
    """A refused request: which limit, and when to try again."""

    scope: str
    who: str  # "user" | "address"
    limit: str  # e.g. "20 messages per minute"
    retry_after_s: int

    def message(self) -> str:
        whose = "for each user" if self.who == "user" else "for each network address"
        return (
            f"Slow down: you reached the limit of {self.limit} {whose}. "
            f"Try again in {self.retry_after_s} s. Nothing was sent or saved."
        )


class RateLimiter:
    """``check(scope, user, address)`` counts one request and returns None, or a ``Limited``."""

    def __init__(self, limits: dict[str, tuple[str | None, str | None]]):
        self.limits: dict[str, tuple[RateLimitItem | None, RateLimitItem | None]] = {
            scope: (parse_limit(per_user), parse_limit(per_address))
            for scope, (per_user, per_address) in limits.items()
        }
        self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)

    @property
    def active(self) -> bool:
        return any(u is not None or a is not None for u, a in self.limits.values())

    def check(self, scope: str, user: str, address: str | None) -> Limited | None:
        per_user, per_address = self.limits.get(scope, (None, None))
        keys = [(per_user, "user", user)]
        if address:
            keys.append((per_address, "address", address))
        keys = [(item, who, key) for item, who, key in keys if item is not None]
        # Test every key first, so a request refused by one limit does not count against the other.
        for item, who, key in keys:
            if not self._limiter.test(item, scope, who, key):
                reset = self._limiter.get_window_stats(item, scope, who, key).reset_time
                return Limited(
                    scope,
                    who,
                    describe(item, _WHAT.get(scope, "requests")),
                    max(1, math.ceil(reset - time.time())),
                )
        for item, who, key in keys:
            if not self._limiter.hit(item, scope, who, key):  # lost a race with a concurrent request
                return Limited(scope, who, describe(item, _WHAT.get(scope, "requests")), 1)
        return None

    def blocked(self, scope: str, user: str) -> bool:
        """Whether ``user`` is over the per-user limit of ``scope`` right now (counts nothing)."""
        per_user, _ = self.limits.get(scope, (None, None))
        return per_user is not None and not self._limiter.test(per_user, scope, "user", user)

    def reset(self) -> None:
        self._storage.reset()
