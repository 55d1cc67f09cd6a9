"""The one read API trainers use: stored feedback turned into training examples.

- ``preference_pairs``: chosen/rejected pairs from A/B votes, expanded rankings (tied replies give no
  pair; each of a ranking's P pairs weighs 1/P, which is InstructGPT's 1/C(K,2) without ties), one
  user's different 1-7 scores on replies to the same prompt (source "score", weighted the same way),
  better answers (the user's text over the model's) and imported datasets. Ties and "both bad" votes
  carry no preference and are left out (the Dashboard's ratings count ties as half wins). Pairs that
  share a ``group`` (one ranking, one user's scores on one prompt) are one labelling act: trainers
  count it once (``trainers.data``).
- ``unpaired_feedback``: (prompt, completion, label) for KTO from thumbs, 1-7 scores and InstructGPT
  flags, mapped by ``feedback_store.labels`` (score >= 5 desirable, <= 3 undesirable, 4 neutral; a flag
  makes a reply undesirable; a thumbs and a score that disagree give no example).
- ``demonstrations``: (prompt, completion) from better answers, for SFT, with the note the same user
  wrote on the same reply; a reply flagged as harmful (``labels.HARMFUL_FLAGS``) is in no example.
- ``prompts``: the user prompts in context, for online RL (RLOO / GRPO) and best-of-n.

Every example carries its prompt in conversational form: the system prompt of the conversation, then
every message from the root of the conversation tree down to the user message answered (branches from
retries and edits are followed through ``parent_id``, so siblings never leak in). ``to_trl()`` gives
TRL's conversational dataset formats; the exports in ``feedback_store.exports`` are thin writers over
these functions. Filters: ``since`` (ISO-8601, compared with the row's last update), ``user_id``, and
``version_id`` (the model version that wrote the reply; for a pair, either reply).

One snapshot: each reader runs its queries in one read transaction (``store.read()``), so a conversation
deleted while a cycle reads is in its datasets entirely or not at all (``feedback_store.conversations``
deletes for real: there is no tombstone to filter).

Training hygiene: with ``exclude_flagged=True`` (the default) an example is left out when any text in
it was flagged by moderation or reported as "should have been blocked" (and not re-admitted by an
admin): a message of its prompt context, a reply, or a better answer (see
``feedback_store.hygiene.training_excluded_message_ids``; users to leave out altogether come from
``hygiene.excluded_users``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from feedback_store.labels import (
    HARMFUL_FLAGS,
    LABEL_POLICY,
    LabelPolicy,
    group_weight,
    kto_label,
    score_pairs,
)
from feedback_store.stats import tied_ranking_pairs
from feedback_store.store import FeedbackStore, StoreError

R = TypeVar("R")
PAIR_SOURCES = ("comparison", "ranking", "better_answer", "import", "score", "ai")
AI_MODE = "ai"
"""``comparisons.mode`` of a pair labelled by a model, not a person (RLAIF: ``trainers.ai_labels``); its
``user_id`` names the labeller ("ai:reward-model") and ``differed`` holds the scores."""
PROMPT_SOURCES = ("ui", "compare", "rank", "import")
Message = dict[str, str]


def normalize_since(since: str | datetime | None) -> str | None:
    """An ISO-8601 time (naive means UTC) in the stored timestamp format, so text comparison works."""
    if since is None or since == "":
        return None
    if isinstance(since, str):
        try:
            since = datetime.fromisoformat(since.strip())
        except ValueError as exc:
            raise StoreError(
                f"since must be an ISO-8601 time like 2026-11-05 or 2026-11-05T14:00, got {since!r}"
            ) from exc
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return since.astimezone(UTC).isoformat(timespec="milliseconds")


def _assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


@dataclass(frozen=True)
class PreferencePair:
    prompt: list[Message]  # conversational context, system prompt first, ending with the user message
    chosen: str
    rejected: str
    source: str = ""  # comparison | ranking | better_answer | import | score | ai (labelled by a model)
    user_id: str = ""
    created_at: str = ""
    updated_at: str = ""
    weight: float = 1.0  # 1/P for each of the P pairs of a ranking or of one prompt's scores, else 1
    chosen_message_id: int | None = None  # None: the user's own answer
    rejected_message_id: int | None = None
    chosen_version_id: int | None = None  # None: written by a person or imported
    rejected_version_id: int | None = None
    chosen_preset_id: str | None = None
    rejected_preset_id: str | None = None
    comparison_id: int | None = None
    ranking_id: int | None = None
    demonstration_id: int | None = None
    prompt_message_id: int | None = None  # the user message answered (None: imported without one)

    @property
    def group(self) -> tuple[Any, ...] | None:
        """The labelling act this pair is one of several pairs of (a ranking; one user's scores on the
        replies to one prompt), or None for a pair that is a vote of its own. The pairs of a group
        share one vote's weight; trainers that cannot weight pairs sample one per group instead."""
        if self.ranking_id is not None:
            return ("ranking", self.ranking_id)
        if self.source == "score":
            return ("score", self.user_id, self.prompt_message_id)
        return None

    def to_trl(self) -> dict[str, Any]:
        """TRL's conversational preference format (explicit prompt)."""
        return {
            "prompt": self.prompt,
            "chosen": _assistant(self.chosen),
            "rejected": _assistant(self.rejected),
        }


@dataclass(frozen=True)
class UnpairedExample:
    prompt: list[Message]
    completion: str
    label: bool  # desirable (feedback_store.labels.kto_label)
    message_id: int | None = None
    user_id: str = ""
    version_id: int | None = None
    preset_id: str | None = None
    reasons: tuple[str, ...] = ()
    score: int | None = None
    flags: tuple[str, ...] = ()
    created_at: str = ""
    updated_at: str = ""
    label_source: str = ""  # what decided the label: flags | thumbs | score
    thumbs: int | None = None
    note: str | None = None

    def to_trl(self) -> dict[str, Any]:
        """TRL's conversational unpaired preference format (KTO)."""
        return {"prompt": self.prompt, "completion": _assistant(self.completion), "label": self.label}


@dataclass(frozen=True)
class Demonstration:
    prompt: list[Message]
    completion: str  # the user's answer
    improves_message_id: int | None = None
    replaced: str = ""  # the model's reply it improves on
    user_id: str = ""
    version_id: int | None = None  # the version that wrote the replaced reply
    demonstration_id: int | None = None
    created_at: str = ""
    updated_at: str = ""
    note: str | None = None  # the note the same user wrote when rating the reply it replaces

    def to_trl(self) -> dict[str, Any]:
        """TRL's conversational prompt-completion format (SFT trains on the completion only)."""
        return {"prompt": self.prompt, "completion": _assistant(self.completion)}


@dataclass(frozen=True)
class PromptRecord:
    prompt: list[Message]
    message_id: int | None = None
    conversation_id: str = ""
    source: str = ""  # the conversation's source: ui | compare | rank | import | ...
    user_id: str = ""
    created_at: str = ""

    def to_trl(self) -> dict[str, Any]:
        return {"prompt": self.prompt}


class _Contexts:
    """Conversation contexts by the id of the message they end with, cached for one read."""

    def __init__(self, db, flagged: frozenset[int] = frozenset()):
        self.db = db
        self.flagged_ids = flagged
        self._cache: dict[int, list[Message]] = {}
        self._flagged: dict[int, bool] = {}

    def flagged(self, message_id: int | None) -> bool:
        """Whether a flagged message is in the context ending with ``message_id``."""
        if message_id is None or not self.flagged_ids:
            return False
        self.ending_with(message_id)
        return self._flagged[message_id]

    def ending_with(self, message_id: int) -> list[Message]:
        if message_id not in self._cache:
            rows = list(
                self.db.query(
                    "WITH RECURSIVE chain(id, parent_id, role, content, conversation_id, depth) AS ("
                    " SELECT id, parent_id, role, content, conversation_id, 0 FROM messages WHERE id = ?"
                    " UNION ALL SELECT m.id, m.parent_id, m.role, m.content, m.conversation_id, chain.depth + 1"
                    " FROM messages m JOIN chain ON m.id = chain.parent_id)"
                    " SELECT id, role, content, conversation_id FROM chain ORDER BY depth DESC",
                    [message_id],
                )
            )
            messages: list[Message] = []
            if rows:
                conv = next(
                    self.db.query(
                        "SELECT system_prompt FROM conversations WHERE id = ?", [rows[0]["conversation_id"]]
                    ),
                    None,
                )
                if conv and conv["system_prompt"]:
                    messages.append({"role": "system", "content": conv["system_prompt"]})
            messages.extend({"role": r["role"], "content": r["content"]} for r in rows)
            self._cache[message_id] = messages
            self._flagged[message_id] = any(r["id"] in self.flagged_ids for r in rows)
        return [dict(m) for m in self._cache[message_id]]


def _one_snapshot(reader: Callable[..., R]) -> Callable[..., R]:
    """Run ``reader(store, ...)`` inside one read transaction (nested readers share it)."""

    @functools.wraps(reader)
    def wrapper(store: FeedbackStore, *args: Any, **kwargs: Any) -> R:
        with store.read():
            return reader(store, *args, **kwargs)

    return wrapper


def _where(since: str | None, user_id: str | None, table: str) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if since is not None:
        clauses.append(f"{table}.updated_at >= ?")
        args.append(since)
    if user_id is not None:
        clauses.append(f"{table}.user_id = ?")
        args.append(user_id)
    return (" AND " + " AND ".join(clauses)) if clauses else "", args


def _reply_where(
    since: str | datetime | None, user_id: str | None, version_id: int | None, table: str
) -> tuple[str, list[Any]]:
    """``_where`` for rows of ``table`` joined to the reply they are about (``m``), which
    ``version_id`` (when given) must have written."""
    where, args = _where(normalize_since(since), user_id, table)
    if version_id is not None:
        where += " AND m.model_version_id = ?"
        args.append(version_id)
    return where, args


def _check_sources(sources: Sequence[str], known: Sequence[str]) -> set[str]:
    if isinstance(sources, str):
        sources = [sources]
    unknown = set(sources) - set(known)
    if unknown:
        raise StoreError(f"unknown sources {sorted(unknown)}; choose from {list(known)}")
    return set(sources)


@_one_snapshot
def preference_pairs(
    store: FeedbackStore,
    *,
    since: str | datetime | None = None,
    version_id: int | None = None,
    user_id: str | None = None,
    sources: Sequence[str] = PAIR_SOURCES,
    exclude_flagged: bool = True,
) -> list[PreferencePair]:
    """Every stored preference as a (prompt, chosen, rejected) pair, oldest update first.

    Pairs whose chosen text is empty or equal to the rejected text are skipped (nothing to learn).
    """
    wanted = _check_sources(sources, PAIR_SOURCES)
    since = normalize_since(since)
    db = store.db
    flagged = store.hygiene.training_excluded_message_ids() if exclude_flagged else frozenset()
    ctx = _Contexts(db, flagged)
    pairs: list[PreferencePair] = []
    msg_cols = "{p}.content AS {p}_content, {p}.model_version_id AS {p}_version, {p}.preset_id AS {p}_preset, {p}.parent_id AS {p}_parent"

    if wanted & {"comparison", "import"}:
        where, args = _where(since, user_id, "c")
        query = (
            f"SELECT c.*, {msg_cols.format(p='ma')}, {msg_cols.format(p='mb')} FROM comparisons c "  # noqa: S608 (our own WHERE fragments; values are bound)
            "JOIN messages ma ON ma.id = c.message_a JOIN messages mb ON mb.id = c.message_b "
            f"WHERE c.vote IN ('a', 'b'){where} ORDER BY c.updated_at, c.id"
        )
        for r in db.query(query, args):
            source = {"import": "import", AI_MODE: "ai"}.get(r["mode"], "comparison")
            if source not in wanted:
                continue
            if {r["message_a"], r["message_b"]} & flagged or ctx.flagged(r["ma_parent"]):
                continue
            win, lose = ("ma", "mb") if r["vote"] == "a" else ("mb", "ma")
            pairs.append(
                PreferencePair(
                    prompt=ctx.ending_with(r["ma_parent"]) if r["ma_parent"] else [],
                    chosen=r[f"{win}_content"],
                    rejected=r[f"{lose}_content"],
                    source=source,
                    user_id=r["user_id"],
                    created_at=r["created_at"],
                    updated_at=r["updated_at"],
                    chosen_message_id=r["message_a" if win == "ma" else "message_b"],
                    rejected_message_id=r["message_b" if win == "ma" else "message_a"],
                    chosen_version_id=r[f"{win}_version"],
                    rejected_version_id=r[f"{lose}_version"],
                    chosen_preset_id=r[f"{win}_preset"],
                    rejected_preset_id=r[f"{lose}_preset"],
                    comparison_id=r["id"],
                    prompt_message_id=r["ma_parent"],
                )
            )

    if "ranking" in wanted:
        where, args = _where(since, user_id, "r")
        items: dict[int, list[dict[str, Any]]] = {}
        rankings: dict[int, dict[str, Any]] = {}
        query = (
            "SELECT r.id AS ranking_id, r.user_id, r.created_at, r.updated_at, r.prompt_message_id, r.k, "  # noqa: S608 (our own WHERE fragments; values are bound)
            "i.position, COALESCE(i.rank, i.position) AS rank, m.id AS message_id, m.content, "
            "m.model_version_id, m.preset_id "
            "FROM rankings r JOIN ranking_items i ON i.ranking_id = r.id JOIN messages m ON m.id = i.message_id "
            f"WHERE 1 = 1{where} ORDER BY r.updated_at, r.id, i.position"
        )
        for r in db.query(query, args):
            rankings.setdefault(r["ranking_id"], r)
            items.setdefault(r["ranking_id"], []).append(r)
        for rid, head in rankings.items():
            ordered = items[rid]
            if any(i["message_id"] in flagged for i in ordered) or ctx.flagged(head["prompt_message_id"]):
                continue
            strict = [
                (i, j)
                for i, j, tied in tied_ranking_pairs(range(len(ordered)), [x["rank"] for x in ordered])
                if not tied
            ]
            if not strict:
                continue
            weight = group_weight(len(strict))
            prompt = ctx.ending_with(head["prompt_message_id"]) if head["prompt_message_id"] else []
            for i, j in strict:
                pairs.append(
                    _reply_pair(
                        prompt,
                        ordered[i],
                        ordered[j],
                        source="ranking",
                        user_id=head["user_id"],
                        created_at=head["created_at"],
                        updated_at=head["updated_at"],
                        weight=weight,
                        ranking_id=rid,
                        prompt_message_id=head["prompt_message_id"],
                    )
                )

    if "score" in wanted:
        pairs.extend(_score_pairs(store, ctx, flagged, since, user_id))

    if "better_answer" in wanted:
        for d in demonstrations(
            store, since=since, user_id=user_id, exclude_flagged=exclude_flagged, exclude_harmful=False
        ):
            if d.improves_message_id in flagged:
                continue
            reply = store.get_message(d.improves_message_id)
            pairs.append(
                PreferencePair(
                    prompt=d.prompt,
                    chosen=d.completion,
                    rejected=d.replaced,
                    source="better_answer",
                    user_id=d.user_id,
                    created_at=d.created_at,
                    updated_at=d.updated_at,
                    rejected_message_id=d.improves_message_id,
                    rejected_version_id=d.version_id,
                    rejected_preset_id=reply.preset_id,
                    demonstration_id=d.demonstration_id,
                    prompt_message_id=reply.parent_id,
                )
            )

    if version_id is not None:
        pairs = [p for p in pairs if version_id in (p.chosen_version_id, p.rejected_version_id)]
    pairs = [p for p in pairs if p.chosen.strip() and p.chosen != p.rejected]
    return sorted(pairs, key=lambda p: (p.updated_at, PAIR_SOURCES.index(p.source)))


def _reply_pair(
    prompt: list[Message], better: dict[str, Any], worse: dict[str, Any], **fields: Any
) -> PreferencePair:
    """A pair of two stored replies (rows with ``content``, ``message_id``, ``model_version_id`` and
    ``preset_id``), the better one chosen; ``fields`` fill in the rest of the pair."""
    return PreferencePair(
        prompt=[dict(m) for m in prompt],
        chosen=better["content"],
        rejected=worse["content"],
        chosen_message_id=better["message_id"],
        rejected_message_id=worse["message_id"],
        chosen_version_id=better["model_version_id"],
        rejected_version_id=worse["model_version_id"],
        chosen_preset_id=better["preset_id"],
        rejected_preset_id=worse["preset_id"],
        **fields,
    )


def _score_pairs(
    store: FeedbackStore, ctx: _Contexts, excluded: frozenset[int], since: str | None, user_id: str | None
) -> list[PreferencePair]:
    """Pairs from one user's different scores on replies to the same prompt (see ``labels``)."""
    where, args = _where(None, user_id, "f")
    query = (
        "SELECT f.user_id, f.score, f.created_at, f.updated_at, m.id AS message_id, m.content, "  # noqa: S608 (our own WHERE fragments; values are bound)
        "m.parent_id, m.model_version_id, m.preset_id FROM feedback f JOIN messages m ON m.id = f.message_id "
        f"WHERE f.score IS NOT NULL AND m.parent_id IS NOT NULL{where} ORDER BY f.user_id, m.parent_id, m.id"
    )
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in store.db.query(query, args):
        if r["message_id"] not in excluded:
            groups.setdefault((r["user_id"], r["parent_id"]), []).append(r)
    out: list[PreferencePair] = []
    for (user, parent), rows in groups.items():
        found = score_pairs([(i, row["score"]) for i, row in enumerate(rows)])
        if not found or ctx.flagged(parent):
            continue
        weight = group_weight(len(found))
        prompt = ctx.ending_with(parent)
        for i, j in found:
            better, worse = rows[i], rows[j]
            updated = max(better["updated_at"], worse["updated_at"])
            if since is not None and updated < since:
                continue
            out.append(
                _reply_pair(
                    prompt,
                    better,
                    worse,
                    source="score",
                    user_id=user,
                    created_at=max(better["created_at"], worse["created_at"]),
                    updated_at=updated,
                    weight=weight,
                    prompt_message_id=parent,
                )
            )
    return out


@_one_snapshot
def unpaired_feedback(
    store: FeedbackStore,
    *,
    since: str | datetime | None = None,
    version_id: int | None = None,
    user_id: str | None = None,
    exclude_flagged: bool = True,
    policy: LabelPolicy = LABEL_POLICY,
) -> list[UnpairedExample]:
    """Every reply a user labelled desirable or undesirable, one example per (reply, user): from the
    InstructGPT flags, the thumbs and the 1-7 score as ``feedback_store.labels.kto_label`` maps them
    (thresholds in ``policy``). Neutral scores and contradictory thumbs/score pairs give no example."""
    where, args = _reply_where(since, user_id, version_id, "f")
    flagged = store.hygiene.training_excluded_message_ids() if exclude_flagged else frozenset()
    ctx = _Contexts(store.db, flagged)
    out = []
    query = (
        "SELECT f.*, m.content, m.parent_id, m.model_version_id, m.preset_id FROM feedback f "  # noqa: S608 (our own WHERE fragments; values are bound)
        "JOIN messages m ON m.id = f.message_id "
        "WHERE (f.thumbs IS NOT NULL OR f.score IS NOT NULL OR f.flags <> '[]')"
        f"{where} ORDER BY f.updated_at, f.id"
    )
    for r in store.db.query(query, args):
        if r["message_id"] in flagged or ctx.flagged(r["parent_id"]):
            continue
        flags = tuple(json.loads(r["flags"]))
        label, why = kto_label(r["thumbs"], r["score"], flags, policy)
        if label is None:
            continue
        out.append(
            UnpairedExample(
                prompt=ctx.ending_with(r["parent_id"]) if r["parent_id"] else [],
                completion=r["content"],
                label=label,
                message_id=r["message_id"],
                user_id=r["user_id"],
                version_id=r["model_version_id"],
                preset_id=r["preset_id"],
                reasons=tuple(json.loads(r["reasons"])),
                score=r["score"],
                flags=flags,
                created_at=r["created_at"],
                updated_at=r["updated_at"],
                label_source=why,
                thumbs=r["thumbs"],
                note=r["note"],
            )
        )
    return out


def harmful_reply_ids(store: FeedbackStore) -> frozenset[int]:
    """Replies some user flagged with a harmful InstructGPT flag (``labels.HARMFUL_FLAGS``)."""
    marks = ", ".join("?" for _ in HARMFUL_FLAGS)
    return frozenset(
        r[0]
        for r in store.db.execute(
            "SELECT DISTINCT f.message_id FROM feedback f, json_each(f.flags) j "  # noqa: S608 (placeholders only)
            f"WHERE j.value IN ({marks})",
            sorted(HARMFUL_FLAGS),
        )
    )


@_one_snapshot
def demonstrations(
    store: FeedbackStore,
    *,
    since: str | datetime | None = None,
    version_id: int | None = None,
    user_id: str | None = None,
    exclude_flagged: bool = True,
    exclude_harmful: bool = True,
) -> list[Demonstration]:
    """Every better answer a user wrote, with the prompt it answers, the reply it replaces and the note
    the same user wrote on that reply. ``exclude_harmful``: leave out demonstrations whose prompt
    context holds a reply a user flagged as harmful, so such a reply is in no SFT example."""
    where, args = _reply_where(since, user_id, version_id, "d")
    left_out = store.hygiene.training_excluded_message_ids() if exclude_flagged else frozenset()
    if exclude_harmful:
        left_out |= harmful_reply_ids(store)
    ctx = _Contexts(store.db, left_out)
    flagged_demos = store.hygiene.flagged_demonstration_ids() if exclude_flagged else frozenset()
    query = (
        "SELECT d.*, m.content AS replaced, m.parent_id, m.model_version_id, f.note FROM demonstrations d "  # noqa: S608 (our own WHERE fragments; values are bound)
        "JOIN messages m ON m.id = d.message_id "
        "LEFT JOIN feedback f ON f.message_id = d.message_id AND f.user_id = d.user_id "
        f"WHERE 1 = 1{where} ORDER BY d.updated_at, d.id"
    )
    return [
        Demonstration(
            prompt=ctx.ending_with(r["parent_id"]) if r["parent_id"] else [],
            completion=r["content"],
            improves_message_id=r["message_id"],
            replaced=r["replaced"],
            user_id=r["user_id"],
            version_id=r["model_version_id"],
            demonstration_id=r["id"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            note=r["note"],
        )
        for r in store.db.query(query, args)
        if r["id"] not in flagged_demos and not ctx.flagged(r["parent_id"])
    ]


@_one_snapshot
def prompts(
    store: FeedbackStore,
    *,
    since: str | datetime | None = None,
    user_id: str | None = None,
    sources: Sequence[str] = PROMPT_SOURCES,
    unique: bool = True,
    exclude_flagged: bool = True,
) -> list[PromptRecord]:
    """User messages in their conversational context (oldest first); ``unique`` keeps the first of
    identical contexts (the same question asked in many conversations is one prompt)."""
    wanted = sorted(_check_sources(sources, PROMPT_SOURCES))
    since = normalize_since(since)
    clauses, args = [f"c.source IN ({', '.join('?' for _ in wanted)})"], list(wanted)
    if since is not None:
        clauses.append("m.created_at >= ?")
        args.append(since)
    if user_id is not None:
        clauses.append("c.user_id = ?")
        args.append(user_id)
    ctx = _Contexts(
        store.db, store.hygiene.training_excluded_message_ids() if exclude_flagged else frozenset()
    )
    seen: set[str] = set()
    out = []
    query = (
        "SELECT m.id, m.conversation_id, m.created_at, c.source, c.user_id FROM messages m "  # noqa: S608 (our own WHERE fragments; values are bound)
        f"JOIN conversations c ON c.id = m.conversation_id WHERE m.role = 'user' AND {' AND '.join(clauses)} "
        "ORDER BY m.created_at, m.id"
    )
    for r in store.db.query(query, args):
        prompt = ctx.ending_with(r["id"])
        if ctx.flagged(r["id"]):
            continue
        key = json.dumps(prompt, sort_keys=True)
        if unique and key in seen:
            continue
        seen.add(key)
        out.append(
            PromptRecord(prompt, r["id"], r["conversation_id"], r["source"], r["user_id"], r["created_at"])
        )
    return out


@_one_snapshot
def unrated_prompts(
    store: FeedbackStore, *, limit: int, excluded_users: frozenset[str] = frozenset()
) -> list[PromptRecord]:
    """Chat-tab questions that got replies but no feedback of any kind (no rating, vote, ranking or
    better answer on any of their replies) and no AI-labelled pair yet, newest first: what an AI
    labeller may label. First questions of a conversation only (their context is the system prompt)."""
    flagged = store.hygiene.training_excluded_message_ids()
    rows = store.db.query(
        "SELECT m.id, m.content, m.conversation_id, m.created_at, c.user_id, c.system_prompt "
        "FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE m.role = 'user' AND m.parent_id IS NULL AND c.source = 'ui' "
        "AND EXISTS (SELECT 1 FROM messages r WHERE r.parent_id = m.id AND r.role = 'assistant') "
        "AND NOT EXISTS (SELECT 1 FROM messages r WHERE r.parent_id = m.id AND ("
        "  EXISTS (SELECT 1 FROM feedback f WHERE f.message_id = r.id) "
        "  OR EXISTS (SELECT 1 FROM demonstrations d WHERE d.message_id = r.id) "
        "  OR EXISTS (SELECT 1 FROM ranking_items i WHERE i.message_id = r.id) "
        "  OR EXISTS (SELECT 1 FROM comparisons x WHERE r.id IN (x.message_a, x.message_b)))) "
        "AND NOT EXISTS (SELECT 1 FROM comparisons x WHERE x.mode = ? "
        "  AND json_extract(x.differed, '$.prompt_message_id') = m.id) "
        "ORDER BY m.created_at DESC, m.id DESC",
        [AI_MODE],
    )
    out: list[PromptRecord] = []
    seen: set[str] = set()
    for r in rows:
        if r["user_id"] in excluded_users or r["id"] in flagged:
            continue
        prompt = [{"role": "system", "content": r["system_prompt"]}] if r["system_prompt"] else []
        prompt.append({"role": "user", "content": r["content"]})
        key = json.dumps(prompt, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        out.append(PromptRecord(prompt, r["id"], r["conversation_id"], "ui", r["user_id"], r["created_at"]))
        if len(out) >= limit:
            break
    return out
