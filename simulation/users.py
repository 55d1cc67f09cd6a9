"""Simulated users inside the product: the calls the Chat, Compare and Rank tabs make, with a labeler
in place of the person clicking.

- Chat tab: a conversation (source ``ui``), the user message, a reply from the served version
  (``ModelService.stream``, what the plain preset does), stored with ``turn_record``, then a thumbs up
  or down through ``feedback.record_feedback``.
- Compare tab, "two samples" mode: two replies with seeds s and s+1, shown in random order (anonymous),
  both stored, then an A/B vote through ``feedback.record_comparison``.
- Rank tab: K replies with seeds s .. s+K-1, stored, then ``feedback.record_ranking`` (best first).
- Canary battles: the Compare tab's pair for a live canary (``playground.compare.canary_pair``: the
  candidate against the deployed version, same seed, shuffled), an A/B vote in mode "canary", then
  ``canaries.settle`` as the tab does after each canary vote.

Why these Python calls rather than the server's HTTP API: they are exactly what the tab handlers call
(the handlers add only widgets around them), the benchmark then needs no server process competing for
the two cores, and replies still come from the served artifact (llama.cpp + the deployed GGUF adapter)
with every turn stored as a UI turn would be.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from feedback_store.store import FeedbackStore
from models.base import GenerationResult, SamplingParams
from models.service import ModelService
from simulation.labelers import BradleyTerryLabeler
from simulation.tasks import Task

EVENT_KINDS = ("thumbs", "votes", "rankings")


@dataclass(frozen=True)
class EventMix:
    """Shares of the feedback events of each kind (a ranking of K counts as one event)."""

    thumbs: float = 0.4
    votes: float = 0.5
    rankings: float = 0.1
    k: int = 4

    def __post_init__(self) -> None:
        shares = [self.thumbs, self.votes, self.rankings]
        if any(s < 0 for s in shares) or sum(shares) <= 0:
            raise ValueError("event shares must be >= 0 and not all 0")
        if not 2 <= self.k <= 9:
            raise ValueError(f"a ranking orders 2 to 9 replies, got k={self.k}")

    @classmethod
    def parse(cls, text: str, k: int = 4) -> EventMix:
        """``"thumbs=0.4,votes=0.5,rankings=0.1"`` (missing kinds count 0)."""
        values = dict.fromkeys(EVENT_KINDS, 0.0)
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name.strip() not in values:
                raise ValueError(f"unknown event kind {name!r} in {text!r}; use {', '.join(EVENT_KINDS)}")
            values[name.strip()] = float(value)
        return cls(**values, k=k)

    def counts(self, n: int) -> dict[str, int]:
        """Exactly ``n`` events split by the shares (largest remainder)."""
        shares = {"thumbs": self.thumbs, "votes": self.votes, "rankings": self.rankings}
        total = sum(shares.values())
        exact = {k: n * v / total for k, v in shares.items()}
        out = {k: int(v) for k, v in exact.items()}
        for k in sorted(exact, key=lambda k: exact[k] - out[k], reverse=True)[: n - sum(out.values())]:
            out[k] += 1
        return out

    def replies_needed(self, n: int) -> int:
        c = self.counts(n)
        return c["thumbs"] + 2 * c["votes"] + self.k * c["rankings"]


@dataclass
class CanaryPhase:
    """What the simulated users' canary battles gave: votes until the canary ended."""

    canary_id: int
    battles: int = 0
    ties: int = 0
    """Battles with the same text on both sides, voted "tie" as a person would."""
    gold_prefers_candidate: int = 0
    """Battles in which the candidate's reply had the higher gold score (ties in gold left out)."""
    gold_decisive: int = 0
    decision: str | None = None
    by: str = ""
    """"votes" when the tally decided; "vote budget" or "time budget" when that ran out first and the
    offline gate's decision stood (the time budget is simulated as spent once every user's votes stop
    counting)."""
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def gold_rate(self) -> float | None:
        """The gold preference's verdict on the same battles: the share the candidate won."""
        return self.gold_prefers_candidate / self.gold_decisive if self.gold_decisive else None

    def to_dict(self) -> dict:
        return {
            "canary_id": self.canary_id,
            "battles": self.battles,
            "ties": self.ties,
            "decision": self.decision,
            "by": self.by,
            "gold_rate": None if self.gold_rate is None else round(self.gold_rate, 4),
            "reasons": self.reasons,
            "seconds": round(self.seconds, 1),
        }


@dataclass
class RoundFeedback:
    """What the simulated users did in one round."""

    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_KINDS, 0))
    replies: int = 0
    tokens: int = 0
    gold: list[float] = field(default_factory=list)
    """Gold reward of every reply the users saw (on-policy: written by the deployed version)."""
    unrated: int = 0
    """Chats that got no feedback (most chats do not): what an AI labeller (``--ai-pairs``) labels."""
    seconds: float = 0.0

    @property
    def gold_mean(self) -> float | None:
        return sum(self.gold) / len(self.gold) if self.gold else None


class SimulatedUsers:
    def __init__(
        self,
        store: FeedbackStore,
        service: ModelService,
        labeler: BradleyTerryLabeler,
        params: SamplingParams,
        *,
        system_prompt: str | None = None,
        n_users: int = 8,
        seed: int = 0,
    ):
        from playground.replies import turn_record  # the tabs' own record of a generated reply

        self._turn_record = turn_record
        self.store = store
        self.service = service
        self.labeler = labeler
        self.params = params
        self.system_prompt = system_prompt
        self.users = [f"sim-user-{i + 1}" for i in range(n_users)]
        self.rng = random.Random(seed)

    # -- one interaction per tab -------------------------------------------------------------------
    def _start(self, task: Task, user: str, source: str) -> tuple[str, int]:
        conv = self.store.create_conversation(user, source=source, system_prompt=self.system_prompt)
        return conv, self.store.add_message(conv, "user", task.prompt)

    def _seeded(self) -> SamplingParams:
        return replace(self.params, seed=self.rng.randrange(2**31))

    def _generate(self, task: Task, seeds: Sequence[int]) -> list[GenerationResult]:
        generations = [
            self.service.stream(task.messages(self.system_prompt), replace(self.params, seed=s))
            for s in seeds
        ]
        return [g.wait() for g in generations]

    def _store(
        self, conv: str, parent: int, results: Sequence[GenerationResult], preset: str | None
    ) -> list[int]:
        return [
            self.store.add_assistant_message(conv, parent, self._turn_record(r, preset_id=preset))
            for r in results
        ]

    def _saw(self, record: RoundFeedback, task: Task, results: Sequence[GenerationResult]) -> None:
        record.replies += len(results)
        record.tokens += sum(r.completion_tokens for r in results)
        record.gold.extend(self.labeler.gold(task, r.text) for r in results)

    def chat_and_rate(self, task: Task, user: str, record: RoundFeedback) -> None:
        conv, question = self._start(task, user, "ui")
        (result,) = self._generate(task, [self._seeded().seed])
        (reply,) = self._store(conv, question, [result], "plain")
        self.store.feedback.record_feedback(reply, user, thumbs=self.labeler.thumbs(task, result.text))
        self._saw(record, task, [result])
        record.events["thumbs"] += 1

    def chat_only(self, task: Task, user: str, record: RoundFeedback) -> None:
        """A Chat-tab turn that the user does not rate."""
        conv, question = self._start(task, user, "ui")
        (result,) = self._generate(task, [self._seeded().seed])
        self._store(conv, question, [result], "plain")
        self._saw(record, task, [result])
        record.unrated += 1

    def compare_and_vote(self, task: Task, user: str, record: RoundFeedback) -> None:
        conv, question = self._start(task, user, "compare")
        seed = self._seeded().seed
        results = self._generate(task, [seed, seed + 1])
        if self.rng.random() < 0.5:  # anonymous: the tab shuffles which sample is shown as A
            results.reverse()
        a, b = self._store(conv, question, results, None)
        vote = self.labeler.vote(task, results[0].text, results[1].text)
        self.store.feedback.record_comparison(
            a, b, user, vote, mode="samples", label_a="Model A", label_b="Model B", anonymous=True
        )
        self._saw(record, task, results)
        record.events["votes"] += 1

    def rank(self, task: Task, user: str, k: int, record: RoundFeedback) -> None:
        conv, question = self._start(task, user, "rank")
        seed = self._seeded().seed
        results = self._generate(task, [seed + i for i in range(k)])
        ids = self._store(conv, question, results, None)
        order = self.labeler.rank(task, [r.text for r in results])
        self.store.feedback.record_ranking([ids[i] for i in order], user)
        self._saw(record, task, results)
        record.events["rankings"] += 1

    def canary_battle(self, task: Task, user: str, canary, phase: CanaryPhase) -> None:
        from playground.compare import canary_pair  # the Compare tab's own pair for a canary battle

        conv, question = self._start(task, user, "compare")
        sides = list(canary_pair(self.service, self.store, canary, self._seeded()))
        if self.rng.random() < 0.5:  # anonymous: the tab shuffles the sides
            sides.reverse()
        messages = task.messages(self.system_prompt)
        results = [side.start(messages).wait() for side in sides]
        a, b = self._store(conv, question, results, None)
        # The same text on both sides: a person clicks "tie" (which the canary's tally does not count).
        same = results[0].text.strip() == results[1].text.strip()
        vote = "tie" if same else self.labeler.vote(task, results[0].text, results[1].text)
        phase.ties += same
        self.store.feedback.record_comparison(
            a, b, user, vote, mode="canary", label_a="Model A", label_b="Model B", anonymous=True
        )
        gold = [self.labeler.gold(task, r.text) for r in results]
        candidate_first = results[0].version_id == canary.candidate_id
        if gold[0] != gold[1]:
            phase.gold_decisive += 1
            phase.gold_prefers_candidate += (gold[0] > gold[1]) == candidate_first
        phase.battles += 1

    def canary_battles(self, tasks: Sequence[Task], canary) -> CanaryPhase:
        """Canary battles on training prompts until the canary ends: every user battles until their
        votes stop counting (the per-user cap, as the Compare tab does); if the votes have not decided
        by then, the time budget is taken as spent, so the offline gate's decision stands."""
        from datetime import datetime

        t0 = time.perf_counter()
        phase = CanaryPhase(canary.id)
        order = list(tasks)
        self.rng.shuffle(order)
        repo = self.store.canaries
        ended = None
        for i in range(canary.per_user * len(self.users)):
            user = self.users[i % len(self.users)]
            if repo.user_votes(canary, user) >= canary.per_user:
                continue
            self.canary_battle(order[i % len(order)], user, canary, phase)
            ended = repo.settle()
            if ended is not None:
                break
        if ended is None:
            ended = repo.settle(now=datetime.fromisoformat(canary.ends_at))
        if ended is not None:
            phase.decision, phase.reasons = ended.decision, list(ended.reasons)
            why = ended.reasons[0] if ended.reasons else ""
            phase.by = (
                "votes"
                if why.startswith("users prefer")
                else "vote budget"
                if "vote budget" in why
                else "time budget"
            )
        phase.seconds = time.perf_counter() - t0
        return phase

    # -- a round -----------------------------------------------------------------------------------
    def give_feedback(
        self, tasks: Sequence[Task], n_events: int, mix: EventMix, unrated: int = 0
    ) -> RoundFeedback:
        """``n_events`` interactions on training prompts (each prompt about equally often), shuffled,
        then ``unrated`` chats on the next prompts that get no feedback."""
        if not tasks:
            raise ValueError("no prompts to chat on")
        t0 = time.perf_counter()
        counts = mix.counts(n_events)
        kinds = [k for k in EVENT_KINDS for _ in range(counts[k])]
        self.rng.shuffle(kinds)
        order = list(tasks)
        self.rng.shuffle(order)
        record = RoundFeedback()
        for i, kind in enumerate(kinds):
            task = order[i % len(order)]
            user = self.users[i % len(self.users)]
            if kind == "thumbs":
                self.chat_and_rate(task, user, record)
            elif kind == "votes":
                self.compare_and_vote(task, user, record)
            else:
                self.rank(task, user, mix.k, record)
        for j in range(unrated):
            i = len(kinds) + j
            self.chat_only(order[i % len(order)], self.users[i % len(self.users)], record)
        record.seconds = time.perf_counter() - t0
        return record
