"""What the store keeps about the safety of a shared playground, and the training-data hygiene built on
it: moderation decisions (in ``messages.moderation`` and ``demonstration_moderation``), users' reports
that the filter was wrong, safety events (rate limits hit), operators' decisions about users, and the
filter's precision and recall as users see them.

Training hygiene (read by the training cycle):

- ``store.hygiene.excluded_users()``: users whose feedback is left out of training, so that one abusive user
  cannot steer the loop: anyone who hit a rate limit, wrote several flagged messages (deleted ones
  included: a deletion keeps their count), or was excluded by an operator (``set_user_flag``); an
  operator can also trust a user despite the rules.
- flagged text: ``feedback_store.datasets`` readers drop examples that contain a message of
  ``store.hygiene.training_excluded_message_ids()`` or a flagged better answer (``exclude_flagged=True``,
  their default).

Reports act (``training_excluded_message_ids``): a message reported as "this should have been blocked"
leaves every training dataset as soon as it is reported, and comes back only if an admin rejects the
report; a message the filter flagged and a user reported as "the filter was wrong" stays out until an
admin confirms the report, then it is training data again. The admin decides in the Dashboard's
review queue (``review_queue``, ``record_review``): accepted (the report is right and the proposed
rules-file change was written), confirmed (right, rules unchanged) or rejected (the report is wrong).

A moderation decision is a JSON object written by the playground; the store reads only ``flagged``
(bool), ``categories`` (list of names) and ``action`` ("refused", "withheld", "marked", "allowed", or
"refusal" for the stored refusal text that answered a refused message).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from feedback_store.db import Repository, utc_now
from feedback_store.feedback import _check_user, _one
from feedback_store.records import FromRow, StoreError, loads_tuple
from feedback_store.stats import wilson_interval
from feedback_store.text import storable

REPORT_KINDS = ("false_positive", "false_negative")
REPORT_TEXT = {
    "false_positive": "the filter was wrong",
    "false_negative": "this should have been blocked",
}
MAX_NOTE_CHARS = 2_000
MAX_CATEGORIES = 16
# The SQL test for a flagged message; the same expression as the partial index of m_safety_001.
FLAGGED_SQL = "json_extract({t}.moderation, '$.flagged') = 1"


def is_flagged(moderation: dict[str, Any] | None) -> bool:
    return bool(moderation and moderation.get("flagged"))


# -- reports -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Report(FromRow):
    id: int
    message_id: int
    user_id: str
    kind: str  # false_positive | false_negative
    categories: tuple[str, ...]
    note: str | None
    created_at: str
    updated_at: str

    decoders = {"categories": loads_tuple}


REVIEW_DECISIONS = ("accepted", "confirmed", "rejected")
# The admin agreed with the report: "accepted" also wrote the proposed change to the rules file.
CONFIRMING = ("accepted", "confirmed")


@dataclass(frozen=True)
class ReviewItem:
    """One reported message waiting for an admin: every report on it, and what the filter decided."""

    message_id: int
    kind: str  # false_positive | false_negative
    role: str  # user (an input) | assistant (a reply)
    content: str
    moderation: dict[str, Any] | None  # the stored decision (categories, matches with the rule)
    reports: int
    users: tuple[str, ...]
    notes: tuple[str, ...]
    categories: tuple[str, ...]  # named by the reporters (false negatives) or the filter's
    first_reported_at: str

    @property
    def moderation_kind(self) -> str:
        return "output" if self.role == "assistant" else "input"


@dataclass(frozen=True)
class Review(FromRow):
    message_id: int
    kind: str
    decision: str  # accepted | confirmed | rejected
    change: dict[str, Any]  # the rules-file change written ("accepted"), else {}
    diff: str | None
    decided_by: str
    decided_at: str

    decoders = {"change": json.loads}


# -- better answers ------------------------------------------------------------------------------------


# -- events and operator decisions ---------------------------------------------------------------------


# -- training hygiene ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HygienePolicy:
    """When a user's feedback is left out of training (0 turns a rule off)."""

    min_rate_limited: int = 1  # rate-limit events
    min_flagged: int = 3  # the user's own flagged messages and better answers


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    rate_limited: int = 0
    flagged: int = 0
    operator: bool | None = None  # True excluded, False trusted, None no decision
    reason: str | None = None

    def excluded(self, policy: HygienePolicy) -> bool:
        if self.operator is not None:
            return self.operator
        return (policy.min_rate_limited > 0 and self.rate_limited >= policy.min_rate_limited) or (
            policy.min_flagged > 0 and self.flagged >= policy.min_flagged
        )


# -- the filter as users see it ------------------------------------------------------------------------
@dataclass(frozen=True)
class CategoryStats:
    category: str
    flagged: int  # moderation decisions that flagged this category
    reported_wrong: int  # of those, reported as false positives by at least one user

    @property
    def precision(self) -> float | None:
        return None if not self.flagged else 1 - self.reported_wrong / self.flagged

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.flagged - self.reported_wrong, self.flagged)


@dataclass(frozen=True)
class ModerationStats:
    """Precision: the share of flagged messages nobody reported as wrongly flagged (an upper bound:
    not every mistake is reported). Recall: flagged / (flagged + messages reported as should-have-been-
    blocked), also an upper bound."""

    flagged: int
    flagged_inputs: int
    flagged_outputs: int
    false_positive_reports: int
    false_negative_reports: int
    reported_wrong: int  # flagged messages with at least one false-positive report
    reported_missed: int  # unflagged messages with at least one false-negative report
    by_category: list[CategoryStats] = field(default_factory=list)
    rate_limited: int = 0
    excluded_users: int = 0

    @property
    def precision(self) -> float | None:
        return None if not self.flagged else 1 - self.reported_wrong / self.flagged

    @property
    def recall(self) -> float | None:
        seen = self.flagged + self.reported_missed
        return None if not seen else self.flagged / seen

    @property
    def empty(self) -> bool:
        return not (self.flagged or self.false_negative_reports or self.rate_limited)


class HygieneRepository(Repository):
    """The safety records of a shared playground and the training-data hygiene built on them: users' reports on the filter, moderation of better answers, safety events, operators' decisions about users, who and what training leaves out, and the filter's precision and recall."""

    def record_report(
        self,
        message_id: int,
        user_id: str,
        kind: str,
        *,
        categories: list[str] | tuple[str, ...] = (),
        note: str | None = None,
    ) -> Report:
        """Store ``user_id``'s report that the filter was wrong about message ``message_id``: a flagged
        message that was fine (``false_positive``) or an unflagged one that should have been blocked
        (``false_negative``). One report per (message, user): reporting again updates it.

        A false positive keeps the categories the filter gave; a false negative may name categories.
        """
        _check_user(user_id)
        if kind not in REPORT_KINDS:
            raise StoreError(f"kind must be one of {REPORT_KINDS}, got {kind!r}")
        if (
            isinstance(message_id, bool)
            or not isinstance(message_id, int)
            or not -(2**63) <= message_id < 2**63
        ):
            raise StoreError(f"message ids are integers, got {message_id!r}")
        if isinstance(categories, str):
            categories = [categories]
        if len(categories) > MAX_CATEGORIES or not all(
            isinstance(c, str) and 0 < len(c) <= 40 for c in categories
        ):
            raise StoreError(f"categories must be at most {MAX_CATEGORIES} short names")
        if note is not None:
            note = storable(str(note)).strip() or None
            if note is not None and len(note) > MAX_NOTE_CHARS:
                raise StoreError(f"the note has {len(note):,} characters; at most {MAX_NOTE_CHARS:,}")
        with self.write() as db:
            row = _one(db, "SELECT id, role, moderation FROM messages WHERE id = ?", [message_id])
            if row is None:
                raise StoreError(f"No message {message_id}.")
            moderation = json.loads(row["moderation"]) if row["moderation"] else None
            flagged = is_flagged(moderation)
            if kind == "false_positive" and not flagged:
                raise StoreError(
                    "this message was not blocked or flagged: report it as 'should have been blocked'"
                )
            if kind == "false_negative" and flagged:
                raise StoreError("this message was already blocked or flagged by the filter")
            if kind == "false_positive":
                categories = list((moderation or {}).get("categories") or [])
            now = utc_now()
            stored = _one(
                db,
                "INSERT INTO moderation_reports (message_id, user_id, kind, categories, note, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(message_id, user_id) DO UPDATE SET "
                "kind = excluded.kind, categories = excluded.categories, note = excluded.note, "
                "updated_at = excluded.updated_at RETURNING *",
                [message_id, user_id, kind, json.dumps(sorted(set(categories))), note, now, now],
            )
        return Report.from_row(stored)

    def list_reports(self, *, kind: str | None = None) -> list[Report]:
        return [Report.from_row(r) for r in self.rows("moderation_reports", kind=kind)]

    def set_demonstration_moderation(self, demonstration_id: int, moderation: dict) -> None:
        """Store the moderation decision on a better answer (replacing the one on its previous text)."""
        with self.write() as db:
            if _one(db, "SELECT id FROM demonstrations WHERE id = ?", [demonstration_id]) is None:
                raise StoreError(f"No better answer {demonstration_id}.")
            db.execute(
                "INSERT INTO demonstration_moderation (demonstration_id, flagged, moderation, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(demonstration_id) DO UPDATE SET flagged = excluded.flagged, "
                "moderation = excluded.moderation, updated_at = excluded.updated_at",
                [demonstration_id, int(is_flagged(moderation)), storable(json.dumps(moderation)), utc_now()],
            )

    def record_event(
        self,
        kind: str,
        user_id: str,
        *,
        client_ip: str | None = None,
        scope: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Log a safety event (e.g. kind "rate_limited", scope "chat") for ``user_id``."""
        _check_user(user_id)
        if not isinstance(kind, str) or not kind.strip():
            raise StoreError("an event needs a kind")
        with self.write() as db:
            cursor = db.execute(
                "INSERT INTO safety_events (kind, user_id, client_ip, scope, detail, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [kind, user_id, client_ip, scope, storable(json.dumps(detail or {})), utc_now()],
            )
            return int(cursor.lastrowid)

    def set_user_flag(
        self,
        user_id: str,
        *,
        excluded: bool,
        reason: str | None = None,
        set_by: str | None = None,
    ) -> None:
        """An operator's decision: ``excluded=True`` leaves the user's feedback out of training whatever
        the rules say; ``excluded=False`` trusts the user whatever the rules say."""
        _check_user(user_id)
        with self.write() as db:
            db.execute(
                "INSERT INTO user_flags (user_id, excluded, reason, set_by, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET excluded = excluded.excluded, reason = excluded.reason, "
                "set_by = excluded.set_by, updated_at = excluded.updated_at",
                [user_id, int(bool(excluded)), reason, set_by, utc_now()],
            )

    def clear_user_flag(self, user_id: str) -> bool:
        """Back to the automatic rules for ``user_id``; False if there was no decision."""
        with self.write() as db:
            return db.execute("DELETE FROM user_flags WHERE user_id = ?", [user_id]).rowcount > 0

    def user_records(self) -> dict[str, UserRecord]:
        """Every user with a safety event, a flagged input or an operator decision."""
        db = self.db
        rate_limited = Counter(
            {
                r[0]: r[1]
                for r in db.execute(
                    "SELECT user_id, COUNT(*) FROM safety_events WHERE kind = 'rate_limited' GROUP BY user_id"
                )
            }
        )
        flagged: Counter = Counter()
        for user, n in db.execute(
            "SELECT c.user_id, COUNT(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id "  # noqa: S608 (a constant)
            f"WHERE m.role = 'user' AND {FLAGGED_SQL.format(t='m')} GROUP BY c.user_id"
        ):
            flagged[user] += n
        for user, n in db.execute(
            "SELECT d.user_id, COUNT(*) FROM demonstrations d JOIN demonstration_moderation dm "
            "ON dm.demonstration_id = d.id WHERE dm.flagged = 1 GROUP BY d.user_id"
        ):
            flagged[user] += n
        # Deleted conversations keep their owner's count of flagged messages (no text): deleting abuse
        # must not lift an exclusion.
        for user, n in db.execute(
            "SELECT user_id, SUM(json_extract(counts, '$.flagged')) FROM deletion_events "
            "WHERE user_id IS NOT NULL GROUP BY user_id"
        ):
            flagged[user] += int(n or 0)
        operator = {
            r[0]: (bool(r[1]), r[2]) for r in db.execute("SELECT user_id, excluded, reason FROM user_flags")
        }
        users = set(rate_limited) | set(flagged) | set(operator)
        return {
            u: UserRecord(
                u,
                rate_limited[u],
                flagged[u],
                operator.get(u, (None, None))[0],
                operator.get(u, (None, None))[1],
            )
            for u in sorted(users)
        }

    def excluded_users(self, policy: HygienePolicy | None = None) -> frozenset[str]:
        """Users whose feedback training leaves out (see the module docstring and ``HygienePolicy``)."""
        policy = policy or HygienePolicy()
        return frozenset(u for u, rec in self.user_records().items() if rec.excluded(policy))

    def flagged_message_ids(self) -> frozenset[int]:
        return frozenset(
            r[0]
            for r in self.db.execute(f"SELECT id FROM messages m WHERE {FLAGGED_SQL.format(t='m')}")  # noqa: S608 (a constant)
        )

    def training_excluded_message_ids(self) -> frozenset[int]:
        """The messages no training example may contain: flagged by the filter (unless an admin
        confirmed a "the filter was wrong" report on it), or reported as "should have been blocked"
        (unless an admin rejected the report). See the module docstring."""
        db = self.db
        readmitted = {
            r[0]
            for r in db.execute(
                "SELECT message_id FROM moderation_reviews WHERE kind = 'false_positive' "
                "AND decision IN ('accepted', 'confirmed')"
            )
        }
        reported = {
            r[0]
            for r in db.execute(
                "SELECT DISTINCT r.message_id FROM moderation_reports r LEFT JOIN moderation_reviews v "
                "ON v.message_id = r.message_id WHERE r.kind = 'false_negative' "
                "AND (v.decision IS NULL OR v.decision <> 'rejected')"
            )
        }
        return frozenset((self.flagged_message_ids() - readmitted) | reported)

    # -- the review queue ------------------------------------------------------------------------------
    def review_queue(self, limit: int = 100) -> list[ReviewItem]:
        """Reported messages no admin has decided on, the longest waiting first."""
        rows = self.db.execute(
            "SELECT r.message_id, MIN(r.kind), m.role, m.content, m.moderation, COUNT(*), "
            "json_group_array(r.user_id), json_group_array(r.note), json_group_array(r.categories), "
            "MIN(r.created_at) AS first FROM moderation_reports r JOIN messages m ON m.id = r.message_id "
            "WHERE r.message_id NOT IN (SELECT message_id FROM moderation_reviews) "
            "GROUP BY r.message_id ORDER BY first, r.message_id LIMIT ?",
            [int(limit)],
        ).fetchall()
        items = []
        for mid, kind, role, content, moderation, n, users, notes, categories, first in rows:
            named = [c for cats in json.loads(categories) for c in json.loads(cats)]
            items.append(
                ReviewItem(
                    message_id=mid,
                    kind=kind,
                    role=role,
                    content=content,
                    moderation=json.loads(moderation) if moderation else None,
                    reports=n,
                    users=tuple(sorted(set(json.loads(users)))),
                    notes=tuple(x for x in json.loads(notes) if x),
                    categories=tuple(dict.fromkeys(named)),
                    first_reported_at=first,
                )
            )
        return items

    def pending_reviews(self) -> int:
        return self.db.execute(
            "SELECT COUNT(DISTINCT message_id) FROM moderation_reports "
            "WHERE message_id NOT IN (SELECT message_id FROM moderation_reviews)"
        ).fetchone()[0]

    def record_review(
        self,
        message_id: int,
        decision: str,
        decided_by: str,
        *,
        change: dict[str, Any] | None = None,
        diff: str | None = None,
    ) -> Review:
        """Store an admin's decision on the reports about ``message_id`` (once: a second decision, e.g.
        by another admin at the same time, is refused, so a rules-file change is never applied twice)."""
        _check_user(decided_by)
        if decision not in REVIEW_DECISIONS:
            raise StoreError(f"decision must be one of {REVIEW_DECISIONS}, got {decision!r}")
        if decision != "accepted" and change:
            raise StoreError("only an accepted review writes a rules-file change")
        with self.write() as db:
            kinds = [
                r[0]
                for r in db.execute(
                    "SELECT DISTINCT kind FROM moderation_reports WHERE message_id = ?", [message_id]
                )
            ]
            if not kinds:
                raise StoreError(f"message {message_id} has no reports to review")
            stored = _one(
                db,
                "INSERT INTO moderation_reviews (message_id, kind, decision, change, diff, decided_by, "
                "decided_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(message_id) DO NOTHING RETURNING *",
                [
                    message_id,
                    min(kinds),
                    decision,
                    storable(json.dumps(change or {}, sort_keys=True)),
                    None if diff is None else storable(diff),
                    decided_by,
                    utc_now(),
                ],
            )
            if stored is None:
                raise StoreError(f"the reports on message {message_id} were already decided")
        return Review.from_row(stored)

    def get_review(self, message_id: int) -> Review | None:
        row = _one(self.db, "SELECT * FROM moderation_reviews WHERE message_id = ?", [message_id])
        return None if row is None else Review.from_row(row)

    def list_reviews(self) -> list[Review]:
        return [Review.from_row(r) for r in self.rows("moderation_reviews", order_by="decided_at")]

    def flagged_demonstration_ids(self) -> frozenset[int]:
        return frozenset(
            r[0]
            for r in self.db.execute(
                "SELECT demonstration_id FROM demonstration_moderation WHERE flagged = 1"
            )
        )

    def moderation_stats(self, policy: HygienePolicy | None = None) -> ModerationStats:
        db = self.db
        reported = {
            r[0]
            for r in db.execute(
                "SELECT DISTINCT message_id FROM moderation_reports WHERE kind = 'false_positive'"
            )
        }
        per_category: Counter = Counter()
        wrong_per_category: Counter = Counter()
        inputs = outputs = wrong = 0
        for mid, role, moderation in db.execute(
            f"SELECT id, role, moderation FROM messages m WHERE {FLAGGED_SQL.format(t='m')}"  # noqa: S608 (a constant)
        ):
            decision = json.loads(moderation)
            if decision.get("action") == "refusal":  # the refusal text, not a decision
                continue
            inputs += role == "user"
            outputs += role == "assistant"
            wrong += mid in reported
            for category in decision.get("categories") or ["(none)"]:
                per_category[category] += 1
                wrong_per_category[category] += mid in reported
        counts = dict(db.execute("SELECT kind, COUNT(*) FROM moderation_reports GROUP BY kind").fetchall())
        missed = db.execute(
            "SELECT COUNT(DISTINCT message_id) FROM moderation_reports WHERE kind = 'false_negative'"
        ).fetchone()[0]
        rate_limited = db.execute(
            "SELECT COUNT(*) FROM safety_events WHERE kind = 'rate_limited'"
        ).fetchone()[0]
        return ModerationStats(
            flagged=inputs + outputs,
            flagged_inputs=inputs,
            flagged_outputs=outputs,
            false_positive_reports=counts.get("false_positive", 0),
            false_negative_reports=counts.get("false_negative", 0),
            reported_wrong=wrong,
            reported_missed=missed,
            by_category=[
                CategoryStats(c, per_category[c], wrong_per_category[c]) for c in sorted(per_category)
            ],
            rate_limited=rate_limited,
            excluded_users=len(self.excluded_users(policy)),
        )
