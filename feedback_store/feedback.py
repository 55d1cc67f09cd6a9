"""Writing feedback: thumbs with reasons, the InstructGPT 1-7 score and flags, notes, better answers
(demonstrations), pairwise votes (comparisons) and rankings of K replies (ties allowed).

``store.feedback`` (``FeedbackRepository``): every write is one ``BEGIN IMMEDIATE`` transaction and an upsert
on the row's natural key, so an event that fires twice (Gradio's like event does) or a user who
changes their mind updates one row instead of adding another. Values are validated here, with errors
(``StoreError``) that say what to fix; nothing is half-written.

Readers for training live in ``feedback_store.datasets``; this module only writes and fetches rows.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feedback_store.db import Repository, utc_now
from feedback_store.records import FromRow, StoreError, loads_tuple
from feedback_store.text import is_storable, storable

# Reason keys as stored; the labels are what the UI shows. "other" fits both directions.
DOWN_REASONS: dict[str, str] = {
    "incorrect": "Incorrect",
    "not_helpful": "Not helpful",
    "too_long": "Too long",
    "ignored_instructions": "Didn't follow instructions",
    "refused": "Refused when it shouldn't",
    "unsafe": "Unsafe",
    "other": "Other",
}
UP_REASONS: dict[str, str] = {
    "accurate": "Accurate",
    "followed_instructions": "Followed instructions",
    "clear": "Clear",
    "other": "Other",
}
# The metadata flags InstructGPT's labelers set on each output (Ouyang et al. 2022, appendix B).
INSTRUCTGPT_FLAGS: dict[str, str] = {
    "fails_instruction": "Fails to follow the correct instruction / task",
    "inappropriate_for_customer_assistant": "Inappropriate for a customer assistant",
    "sexual_content": "Contains sexual content",
    "violent_content": "Contains violent content",
    "encourages_harm": "Encourages or fails to discourage violence/abuse/terrorism/self-harm",
    "denigrates_protected_class": "Denigrates a protected class",
    "harmful_advice": "Gives harmful advice",
    "moral_judgment": "Expresses moral judgment",
}
VOTES = ("a", "b", "tie", "both_bad")
MIN_RANKED, MAX_RANKED = 2, 9
MAX_NOTE_CHARS = 10_000
MAX_ANSWER_CHARS = 100_000


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP
"""Default of ``record_feedback``'s fields: leave the stored value as it is."""


@dataclass(frozen=True)
class Feedback(FromRow):
    id: int
    message_id: int
    user_id: str
    thumbs: int | None  # 1 up, -1 down, None not given
    reasons: tuple[str, ...]
    score: int | None  # 1..7
    flags: tuple[str, ...]
    note: str | None
    created_at: str
    updated_at: str

    decoders = {"reasons": loads_tuple, "flags": loads_tuple}


@dataclass(frozen=True)
class DemonstrationRow:
    id: int
    message_id: int  # the reply it improves on
    user_id: str
    content: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class Comparison(FromRow):
    id: int
    message_a: int
    message_b: int
    user_id: str
    vote: str  # a | b | tie | both_bad
    mode: str  # samples | versions | presets | import | ...
    label_a: str | None
    label_b: str | None
    anonymous: bool
    differed: dict[str, Any]
    created_at: str
    updated_at: str

    decoders = {"anonymous": bool, "differed": json.loads}


@dataclass(frozen=True)
class Ranking:
    id: int
    user_id: str
    prompt_message_id: int | None
    message_ids: tuple[int, ...]  # best first
    created_at: str
    updated_at: str
    ranks: tuple[int, ...] = ()  # of message_ids: 1 = best, equal for ties, 1..G without gaps

    @property
    def k(self) -> int:
        return len(self.message_ids)

    @property
    def tied(self) -> bool:
        return len(set(self.ranks)) < len(self.ranks)

    @property
    def pairs(self) -> int:
        """The preference pairs it gives: C(K,2) less the pairs of tied replies."""
        ranks = self.ranks or tuple(range(1, self.k + 1))
        return sum(1 for i, a in enumerate(ranks) for b in ranks[i + 1 :] if a != b)


# -- validation ----------------------------------------------------------------------------------------
def _one(db, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
    """The first row as a dict. Plain ``sqlite3`` on purpose: sqlite-utils' ``query()`` wraps every
    statement in a savepoint, which doubled the cost of a feedback write (benchmarks/store.py)."""
    cursor = db.conn.execute(sql, params)
    row = cursor.fetchone()
    if row is None:
        return None
    keys = [d[0] for d in cursor.description]
    cursor.fetchall()  # finish the statement (an INSERT ... RETURNING completes only when drained)
    return dict(zip(keys, row, strict=True))


def _check_user(user_id: str) -> str:
    if not is_storable(user_id) or not user_id.strip():
        raise StoreError("user_id must be a non-empty string (the login name or the anonymous session id)")
    return user_id


def _known(values: Sequence[str], catalog: dict[str, str], what: str) -> list[str]:
    if isinstance(values, str):
        values = [values]
    unknown = [v for v in values if v not in catalog]
    if unknown:
        raise StoreError(f"unknown {what} {unknown}; choose from {list(catalog)}")
    order = list(catalog)
    return sorted(set(values), key=order.index)


def _reasons_for(thumbs: int | None) -> dict[str, str]:
    return {1: UP_REASONS, -1: DOWN_REASONS}.get(thumbs, {})


def _assistant_rows(db, message_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The stored replies, checked to exist and to be assistant messages."""
    rows: dict[int, dict[str, Any]] = {}
    for mid in message_ids:
        if isinstance(mid, bool) or not isinstance(mid, int):
            raise StoreError(f"message ids are integers, got {mid!r}")
        if not -(2**63) <= mid < 2**63:  # SQLite's INTEGER range: no such row
            raise StoreError(f"No message {mid}.")
        row = _one(db, "SELECT * FROM messages WHERE id = ?", [mid])
        if row is None:
            raise StoreError(f"No message {mid}.")
        if row["role"] != "assistant":
            raise StoreError(f"message {mid} is a {row['role']} message; feedback is given on replies")
        rows[mid] = row
    return rows


# -- thumbs, reasons, score, flags, note ---------------------------------------------------------------


# -- better answers ------------------------------------------------------------------------------------


# -- pairwise votes ------------------------------------------------------------------------------------
def what_differed(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[Any]]:
    """The generation settings in which two stored replies differ: version, preset, sampling params."""
    out: dict[str, list[Any]] = {}
    for key in ("model_version_id", "preset_id"):
        if a.get(key) != b.get(key):
            out[key] = [a.get(key), b.get(key)]
    pa = json.loads(a["params"]) if a.get("params") else {}
    pb = json.loads(b["params"]) if b.get("params") else {}
    for key in sorted(set(pa) | set(pb)):
        if pa.get(key) != pb.get(key):
            out[f"params.{key}"] = [pa.get(key), pb.get(key)]
    return out


# -- rankings ------------------------------------------------------------------------------------------


def check_ranks(ranks: Sequence[int], k: int) -> list[int]:
    """The ranks of K replies, checked: one integer from 1 (best) to K per reply, ties allowed, and at
    least two different ranks (a ranking where every reply ties says nothing)."""
    ranks = list(ranks)
    if len(ranks) != k:
        raise StoreError(f"give one rank per reply: {k} replies, {len(ranks)} ranks")
    if any(isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= k for r in ranks):
        raise StoreError(f"ranks are whole numbers from 1 (best) to {k}, got {ranks}")
    if len(set(ranks)) < 2:
        raise StoreError("a ranking needs at least two different ranks (ties are allowed, not all tied)")
    return ranks


def dense_ranks(ranks: Sequence[int]) -> list[int]:
    """1, 1, 3, 4 -> 1, 1, 2, 3: the stored form, so equal rankings are stored alike."""
    levels = {r: i for i, r in enumerate(sorted(set(ranks)), 1)}
    return [levels[r] for r in ranks]


def pair_weight(k: int) -> float:
    """Weight of each of a K-ranking's pairs, 1/C(K,2), so every ranking counts as one comparison in
    total (InstructGPT trains on all C(K,2) pairs of a prompt as one batch element for this reason)."""
    return 1.0 / math.comb(k, 2)


class FeedbackRepository(Repository):
    """Feedback on replies: thumbs, reasons, scores, flags and notes; better answers; A/B votes; rankings. Writes are upserts on natural keys (one row per user and reply, pair or set of replies), each one BEGIN IMMEDIATE transaction."""

    def record_feedback(
        self,
        message_id: int,
        user_id: str,
        *,
        thumbs: int | None | _Keep = KEEP,
        reasons: Sequence[str] | _Keep = KEEP,
        add_reasons: Sequence[str] = (),
        score: int | None | _Keep = KEEP,
        flags: Sequence[str] | _Keep = KEEP,
        note: str | None | _Keep = KEEP,
    ) -> Feedback:
        """Create or update ``user_id``'s feedback on reply ``message_id``; fields left at KEEP keep their
        stored value. ``add_reasons`` adds to the stored reasons (the quick reasons under a reply).

        Reasons must fit the thumbs (down: incorrect, too long, ...; up: accurate, clear, ...). Turning the
        thumbs around drops the reasons that no longer fit; clearing the thumbs (None) clears the reasons.
        """
        _check_user(user_id)
        if thumbs is not KEEP and thumbs not in (1, -1, None):
            raise StoreError(f"thumbs must be 1 (up), -1 (down) or None, got {thumbs!r}")
        if (
            score is not KEEP
            and score is not None
            and (isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 7)
        ):
            raise StoreError(f"score must be an integer from 1 to 7, got {score!r}")
        if flags is not KEEP:
            flags = _known(flags, INSTRUCTGPT_FLAGS, "flags")
        if note is not KEEP and note is not None:
            note = storable(str(note)).strip() or None
            if note is not None and len(note) > MAX_NOTE_CHARS:
                raise StoreError(f"the note has {len(note):,} characters; at most {MAX_NOTE_CHARS:,}")
        with self.write() as db:
            _assistant_rows(db, [message_id])
            row = _one(
                db, "SELECT * FROM feedback WHERE message_id = ? AND user_id = ?", [message_id, user_id]
            )
            old = Feedback.from_row(row) if row else None
            new_thumbs = (old.thumbs if old else None) if thumbs is KEEP else thumbs
            allowed = _reasons_for(new_thumbs)
            # turning the thumbs around keeps only the stored reasons that still fit
            kept = (
                [r for r in (old.reasons if old else ()) if r in allowed]
                if reasons is KEEP
                else list(reasons)
            )
            wanted = [*kept, *add_reasons]
            if wanted and not allowed:
                raise StoreError("reasons go with a thumbs up or down: choose one first")
            new = {
                "thumbs": new_thumbs,
                "reasons": _known(
                    wanted, allowed, "reasons for a thumbs " + ("up" if new_thumbs == 1 else "down")
                )
                if wanted
                else [],
                "score": (old.score if old else None) if score is KEEP else score,
                "flags": (list(old.flags) if old else []) if flags is KEEP else flags,
                "note": (old.note if old else None) if note is KEEP else note,
            }
            if old is not None and all(
                getattr(old, k) == (tuple(v) if isinstance(v, list) else v) for k, v in new.items()
            ):
                return old  # a repeated event: nothing changed, nothing written
            now = utc_now()
            values = [
                message_id,
                user_id,
                new["thumbs"],
                json.dumps(new["reasons"]),
                new["score"],
                json.dumps(new["flags"]),
                new["note"],
                now,
                now,
            ]
            stored = _one(
                db,
                "INSERT INTO feedback (message_id, user_id, thumbs, reasons, score, flags, note, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(message_id, user_id) DO UPDATE SET thumbs = excluded.thumbs, "
                "reasons = excluded.reasons, score = excluded.score, flags = excluded.flags, "
                "note = excluded.note, updated_at = excluded.updated_at RETURNING *",
                values,
            )
        return Feedback.from_row(stored)

    def get_feedback(self, message_id: int, user_id: str) -> Feedback | None:
        row = _one(
            self.db, "SELECT * FROM feedback WHERE message_id = ? AND user_id = ?", [message_id, user_id]
        )
        return None if row is None else Feedback.from_row(row)

    def list_feedback(self, *, message_id: int | None = None) -> list[Feedback]:
        return [Feedback.from_row(r) for r in self.rows("feedback", message_id=message_id)]

    def add_demonstration(self, message_id: int, user_id: str, content: str) -> DemonstrationRow:
        """Store ``user_id``'s better answer to reply ``message_id`` (one per user and reply: rewriting it
        updates it). ``datasets.demonstrations`` serves it for SFT and ``datasets.preference_pairs`` as a
        pair (the user's answer chosen over the model's reply)."""
        _check_user(user_id)
        if content is not None and not isinstance(content, str):
            raise StoreError("the better answer must be text")
        content = storable(content or "").strip()
        if not content:
            raise StoreError("the better answer is empty")
        if len(content) > MAX_ANSWER_CHARS:
            raise StoreError(
                f"the better answer has {len(content):,} characters; at most {MAX_ANSWER_CHARS:,}"
            )
        with self.write() as db:
            reply = _assistant_rows(db, [message_id])[message_id]
            if reply["content"].strip() == content:
                raise StoreError("the better answer is the same as the reply; change it first")
            now = utc_now()
            row = _one(
                db,
                "INSERT INTO demonstrations (message_id, user_id, content, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(message_id, user_id) DO UPDATE SET "
                "content = excluded.content, updated_at = excluded.updated_at "
                "WHERE content <> excluded.content RETURNING *",
                [message_id, user_id, content, now, now],
            )
            if row is None:  # the same text again: the row is unchanged
                row = _one(
                    db,
                    "SELECT * FROM demonstrations WHERE message_id = ? AND user_id = ?",
                    [message_id, user_id],
                )
        return DemonstrationRow(**row)

    def get_demonstration(self, message_id: int, user_id: str) -> DemonstrationRow | None:
        row = _one(
            self.db,
            "SELECT * FROM demonstrations WHERE message_id = ? AND user_id = ?",
            [message_id, user_id],
        )
        return None if row is None else DemonstrationRow(**row)

    def record_comparison(
        self,
        message_a: int,
        message_b: int,
        user_id: str,
        vote: str,
        *,
        mode: str,
        label_a: str | None = None,
        label_b: str | None = None,
        anonymous: bool = True,
        differed: dict[str, Any] | None = None,
    ) -> Comparison:
        """Store ``user_id``'s vote between two replies to the same prompt (A better, B better, tie, both
        bad). Voting again on the same pair changes the vote. ``differed`` defaults to what the stored
        replies differ in (version, preset, sampling parameters)."""
        _check_user(user_id)
        if vote not in VOTES:
            raise StoreError(f"vote must be one of {VOTES}, got {vote!r}")
        if not isinstance(mode, str) or not mode.strip():
            raise StoreError("mode must name how the two replies were produced (samples, versions, presets)")
        if message_a == message_b:
            raise StoreError("a comparison needs two different replies")
        with self.write() as db:
            rows = _assistant_rows(db, [message_a, message_b])
            if rows[message_a]["parent_id"] != rows[message_b]["parent_id"]:
                raise StoreError("both replies must answer the same prompt (same parent message)")
            if differed is None:
                differed = what_differed(rows[message_a], rows[message_b])
            now = utc_now()
            row = _one(
                db,
                "INSERT INTO comparisons (message_a, message_b, user_id, vote, mode, label_a, label_b, "
                "anonymous, differed, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(message_a, message_b, user_id) DO UPDATE SET vote = excluded.vote, "
                "mode = excluded.mode, label_a = excluded.label_a, label_b = excluded.label_b, "
                "anonymous = excluded.anonymous, differed = excluded.differed, "
                "updated_at = excluded.updated_at RETURNING *",
                [
                    message_a,
                    message_b,
                    user_id,
                    vote,
                    mode,
                    label_a,
                    label_b,
                    int(bool(anonymous)),
                    json.dumps(differed, sort_keys=True, default=str),
                    now,
                    now,
                ],
            )
        return Comparison.from_row(row)

    def get_comparison(self, comparison_id: int) -> Comparison:
        row = _one(self.db, "SELECT * FROM comparisons WHERE id = ?", [comparison_id])
        if row is None:
            raise StoreError(f"No comparison {comparison_id}.")
        return Comparison.from_row(row)

    def list_comparisons(self) -> list[Comparison]:
        return [Comparison.from_row(r) for r in self.rows("comparisons")]

    def record_ranking(
        self, message_ids_best_first: Sequence[int], user_id: str, *, ranks: Sequence[int] | None = None
    ) -> Ranking:
        """Store ``user_id``'s ranking of K = 2..9 replies to the same prompt. Ranking the same replies
        again replaces it. ``ranks`` (one per reply, 1 = best) allows ties: equal ranks for replies
        neither of which is better (InstructGPT's y_D > y_C > y_A = y_B); without it the replies are
        ranked 1..K in the order given. The replies are stored best first with dense ranks (1, 1, 2, ...).
        ``datasets.preference_pairs`` expands a ranking into one pair per two replies of different rank."""
        _check_user(user_id)
        ids = list(message_ids_best_first)
        if not MIN_RANKED <= len(ids) <= MAX_RANKED:
            raise StoreError(f"a ranking orders {MIN_RANKED} to {MAX_RANKED} replies, got {len(ids)}")
        if len(set(ids)) != len(ids):
            raise StoreError("each reply appears once in a ranking")
        given = check_ranks(ranks, len(ids)) if ranks is not None else list(range(1, len(ids) + 1))
        order = sorted(range(len(ids)), key=lambda i: given[i])  # stable: ties keep the order given
        ids = [ids[i] for i in order]
        dense = dense_ranks([given[i] for i in order])
        with self.write() as db:
            rows = _assistant_rows(db, ids)
            parents = {rows[m]["parent_id"] for m in ids}
            if len(parents) != 1:
                raise StoreError("all ranked replies must answer the same prompt (same parent message)")
            item_key = ",".join(str(m) for m in sorted(ids))
            now = utc_now()
            row = _one(
                db,
                "INSERT INTO rankings (user_id, prompt_message_id, k, item_key, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(item_key, user_id) DO UPDATE SET "
                "updated_at = excluded.updated_at RETURNING *",
                [user_id, parents.pop(), len(ids), item_key, now, now],
            )
            db.execute("DELETE FROM ranking_items WHERE ranking_id = ?", [row["id"]])
            db.conn.executemany(
                "INSERT INTO ranking_items (ranking_id, message_id, position, rank) VALUES (?, ?, ?, ?)",
                [(row["id"], m, pos, rank) for pos, (m, rank) in enumerate(zip(ids, dense, strict=True), 1)],
            )
        return Ranking(
            row["id"],
            user_id,
            row["prompt_message_id"],
            tuple(ids),
            row["created_at"],
            row["updated_at"],
            tuple(dense),
        )

    def get_ranking(self, ranking_id: int) -> Ranking:
        row = _one(self.db, "SELECT * FROM rankings WHERE id = ?", [ranking_id])
        if row is None:
            raise StoreError(f"No ranking {ranking_id}.")
        items = list(
            self.db.query(
                "SELECT message_id, COALESCE(rank, position) AS rank FROM ranking_items "
                "WHERE ranking_id = ? ORDER BY position",
                [ranking_id],
            )
        )
        return Ranking(
            row["id"],
            row["user_id"],
            row["prompt_message_id"],
            tuple(r["message_id"] for r in items),
            row["created_at"],
            row["updated_at"],
            tuple(r["rank"] for r in items),
        )
