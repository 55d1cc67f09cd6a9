"""Canary battles: the users decide whether a candidate replaces the deployed version.

A candidate that the offline gate did not reject (it passed, or it needs more evidence) can be put on
canary: while it is live, a share of the Compare tab's anonymous battles pit it against the deployed
version on the user's own prompt (same seed, shuffled sides, the names shown after the vote, as in any
battle). The votes of those battles (``comparisons.mode = 'canary'``) are the evidence:

- Each decisive vote (A or B better) is a Bernoulli trial "the candidate's reply won"; ties and "both
  bad" are counted and shown but carry no direction. With two players a Bradley-Terry model is exactly
  this win probability p (its strength gap is log(p / (1 - p))).
- The interval is an *anytime-valid* 95% confidence sequence (Robbins' beta-binomial mixture: the set
  of p whose mixture likelihood ratio stays below 1 / alpha, valid by Ville's inequality). The tally is
  looked at after every vote, and an ordinary interval looked at that often would cross 0.5 by chance
  far more than 5% of the time; this one keeps the error rate of the whole sequence of looks at or below
  alpha (tests/feedback_store/test_canary.py measures it by simulation).
- The rule: deploy when the interval's lower bound is above 0.5 (the users prefer the candidate with
  confidence), reject when its upper bound is below 0.5, otherwise keep collecting. When the vote budget
  or the time budget is spent first, the offline gate's decision stands (deploy for a candidate that
  passed it, undecided for one that needed more evidence).
- A user counts for at most ``per_user`` votes (their first), so one eager voter cannot decide. The
  tally is recomputed from the comparisons each time, so deleted data stops counting at once.

This module only reads and writes the store; who calls :meth:`CanaryRepository.settle` (the Compare tab
after each canary vote, the scheduler every minute) decides when.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from feedback_store.db import Repository, utc_now
from feedback_store.records import FromRow, StoreError, dumps, loads
from feedback_store.runs import TrainingRuns
from feedback_store.versions import VersionRegistry

log = logging.getLogger(__name__)

FALLBACKS = ("deploy", "undecided")
"""What the offline gate said of a candidate put on canary: what stands when the budget runs out."""
OUTCOMES = ("deployed", "rejected", "undecided", "awaiting_approval", "cancelled")


def anytime_interval(wins: int, losses: int, alpha: float = 0.05) -> tuple[float, float]:
    """The anytime-valid (1 - alpha) confidence sequence for a win probability after ``wins`` and
    ``losses``: every p whose Beta(1, 1)-mixture likelihood ratio B(w+1, l+1) / (p^w (1-p)^l) is below
    1 / alpha. With no votes it is (0, 1); it shrinks like sqrt(log n / n)."""
    if wins < 0 or losses < 0:
        raise ValueError("wins and losses count votes: they cannot be negative")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    # imported here, not at the top: every process that opens the store (the server, each training
    # cycle) imports this module, and importing scipy's optimize and special added 0.7 s to it
    from scipy.optimize import brentq
    from scipy.special import betaln

    threshold = math.log(1 / alpha)
    log_mix = float(betaln(wins + 1, losses + 1))

    def excess(p: float) -> float:  # > 0 outside the interval
        return log_mix - wins * math.log(p) - losses * math.log1p(-p) - threshold

    n = wins + losses
    centre = min(max(wins / n if n else 0.5, 1e-12), 1 - 1e-12)
    if excess(centre) >= 0:  # cannot happen for alpha < 1 (the mixture is at most 1 at the MLE)
        return centre, centre
    eps = 1e-12
    low = 0.0 if wins == 0 or excess(eps) < 0 else brentq(excess, eps, centre)
    high = 1.0 if losses == 0 or excess(1 - eps) < 0 else brentq(excess, centre, 1 - eps)
    return float(low), float(high)


@dataclass(frozen=True)
class Tally:
    """The canary's votes as they stand: the candidate's wins and losses, ties, and the interval."""

    wins: int
    losses: int
    ties: int
    both_bad: int
    voters: int
    capped: int
    """Votes left out because their user had already given ``per_user``."""
    low: float
    high: float

    @property
    def decisive(self) -> int:
        return self.wins + self.losses

    @property
    def rate(self) -> float | None:
        return self.wins / self.decisive if self.decisive else None

    def verdict(self) -> str:
        """ "better" / "worse" with confidence, else "unclear"."""
        if self.low > 0.5:
            return "better"
        if self.high < 0.5:
            return "worse"
        return "unclear"

    def describe(self) -> str:
        rate = "-" if self.rate is None else f"{self.rate:.0%}"
        return (
            f"{self.wins} wins, {self.losses} losses ({rate} won; anytime 95% interval "
            f"{self.low:.2f}-{self.high:.2f}), {self.ties} ties, {self.both_bad} both bad, "
            f"{self.voters} voters"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "both_bad": self.both_bad,
            "voters": self.voters,
            "capped": self.capped,
            "low": round(self.low, 4),
            "high": round(self.high, 4),
        }


def tally_votes(votes: list[tuple[str, str]], *, per_user: int, alpha: float) -> Tally:
    """``votes``: (user, outcome) in the order they were cast, outcome one of "win", "loss", "tie",
    "both_bad" from the candidate's side. Each user's first ``per_user`` votes count."""
    counted: dict[str, int] = {}
    n = {"win": 0, "loss": 0, "tie": 0, "both_bad": 0}
    capped = 0
    for user, outcome in votes:
        if counted.get(user, 0) >= per_user:
            capped += 1
            continue
        counted[user] = counted.get(user, 0) + 1
        n[outcome] += 1
    low, high = anytime_interval(n["win"], n["loss"], alpha)
    return Tally(n["win"], n["loss"], n["tie"], n["both_bad"], len(counted), capped, low, high)


@dataclass(frozen=True)
class Canary(FromRow):
    id: int
    candidate_id: int
    deployed_id: int
    share: float
    max_votes: int
    per_user: int
    alpha: float
    fallback: str
    auto_deploy: bool
    status: str
    started_at: str
    ends_at: str
    training_run_id: int | None = None
    after_comparison: int = 0
    decision: str | None = None
    reasons: list[str] = field(default_factory=list)
    tally: dict[str, Any] = field(default_factory=dict)
    ended_at: str | None = None

    decoders = {
        "auto_deploy": bool,
        "reasons": lambda value: loads(value) or [],
        "tally": lambda value: loads(value) or {},
    }

    @property
    def live(self) -> bool:
        return self.status == "live"

    def rule(self) -> str:
        """The decision rule in words, as the Training tab shows it."""
        gate = "deploy" if self.fallback == "deploy" else "undecided (needs more evidence)"
        return (
            f"deploy when the candidate wins with confidence (anytime {1 - self.alpha:.0%} interval of its "
            f"win rate above 0.5), reject when it loses with confidence (below 0.5); after "
            f"{self.max_votes} decisive votes or at {self.ends_at[:16].replace('T', ' ')} UTC the offline "
            f"gate's decision stands: {gate}. At most {self.per_user} votes per user count; "
            f"{self.share:.0%} of anonymous battles are canary battles."
        )


class CanaryRepository(Repository):
    """The ``canaries`` rows (at most one live, enforced by a unique index) and their tallies."""

    def start(
        self,
        candidate_id: int,
        deployed_id: int,
        *,
        share: float,
        max_votes: int,
        hours: float,
        per_user: int,
        alpha: float,
        fallback: str,
        auto_deploy: bool,
        training_run_id: int | None = None,
    ) -> Canary:
        if fallback not in FALLBACKS:
            raise StoreError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        if not 0 < share <= 1:
            raise StoreError(f"the canary share of battles must be in (0, 1], got {share}")
        if max_votes < 1 or per_user < 1 or hours <= 0:
            raise StoreError("a canary needs a vote budget, a per-user cap and a time budget above 0")
        if candidate_id == deployed_id:
            raise StoreError("a canary pits a candidate against another, deployed version")
        now = datetime.now(UTC)
        with self.write() as db:
            if next(db.query("SELECT id FROM canaries WHERE status = 'live'"), None) is not None:
                raise StoreError("another canary is live: end it first")
            newest = db.execute("SELECT COALESCE(MAX(id), 0) FROM comparisons").fetchone()[0]
            cursor = db.execute(
                "INSERT INTO canaries (candidate_id, deployed_id, training_run_id, after_comparison, share, "
                "max_votes, per_user, alpha, fallback, auto_deploy, status, started_at, ends_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'live', ?, ?)",
                [
                    candidate_id,
                    deployed_id,
                    training_run_id,
                    newest,
                    share,
                    max_votes,
                    per_user,
                    alpha,
                    fallback,
                    int(auto_deploy),
                    now.isoformat(timespec="milliseconds"),
                    (now + timedelta(hours=hours)).isoformat(timespec="milliseconds"),
                ],
            )
            canary_id = cursor.lastrowid
        return self.get(canary_id)

    def get(self, canary_id: int) -> Canary:
        row = next(self.rows("canaries", id=canary_id), None)
        if row is None:
            raise StoreError(f"No canary {canary_id}.")
        return Canary.from_row(row)

    def live(self) -> Canary | None:
        row = next(self.rows("canaries", status="live"), None)
        return None if row is None else Canary.from_row(row)

    def recent(self, limit: int = 10) -> list[Canary]:
        rows = self.db.query("SELECT * FROM canaries ORDER BY id DESC LIMIT ?", [limit])
        return [Canary.from_row(r) for r in rows]

    def votes(self, canary: Canary) -> list[tuple[str, str]]:
        """(user, outcome for the candidate) of the canary's battles, oldest first: comparisons in
        mode 'canary' made since it started whose two replies come from its candidate and deployed
        version."""
        rows = self.db.execute(
            "SELECT c.user_id, c.vote, ma.model_version_id, mb.model_version_id FROM comparisons c "
            "JOIN messages ma ON ma.id = c.message_a JOIN messages mb ON mb.id = c.message_b "
            "WHERE c.mode = 'canary' AND c.id > ? ORDER BY c.id",
            [canary.after_comparison],
        ).fetchall()
        pair = {canary.candidate_id, canary.deployed_id}
        out = []
        for user, vote, version_a, version_b in rows:
            if {version_a, version_b} != pair:
                continue
            if vote in ("tie", "both_bad"):
                out.append((user, vote))
            else:
                candidate_side = "a" if version_a == canary.candidate_id else "b"
                out.append((user, "win" if vote == candidate_side else "loss"))
        return out

    def user_votes(self, canary: Canary, user_id: str) -> int:
        """How many canary votes ``user_id`` has given (the Compare tab stops offering canary battles
        to a user whose votes no longer count)."""
        return sum(1 for user, _ in self.votes(canary) if user == user_id)

    def tally(self, canary: Canary) -> Tally:
        return tally_votes(self.votes(canary), per_user=canary.per_user, alpha=canary.alpha)

    def decide(self, canary: Canary, now: datetime | None = None) -> tuple[str | None, Tally, list[str]]:
        """What the canary's evidence says now: ("deploy" | "reject" | "fallback", tally, reasons), or
        (None, tally, []) while it keeps collecting."""
        tally = self.tally(canary)
        now = now or datetime.now(UTC)
        verdict = tally.verdict()
        if verdict == "better":
            return "deploy", tally, [f"users prefer the candidate: {tally.describe()}"]
        if verdict == "worse":
            return "reject", tally, [f"users prefer the deployed version: {tally.describe()}"]
        if tally.decisive >= canary.max_votes:
            why = f"vote budget of {canary.max_votes} spent without a clear winner"
        elif now >= datetime.fromisoformat(canary.ends_at):
            why = "time budget spent without a clear winner"
        else:
            return None, tally, []
        return "fallback", tally, [f"{why} ({tally.describe()}); the offline gate's decision stands"]

    def settle(self, now: datetime | None = None) -> Canary | None:
        """Decide the live canary if its evidence or budget allows, and apply the decision (deploy,
        reject, or leave the candidate undecided / awaiting approval). Returns the ended canary, or None
        when nothing was decided. Safe to call from several threads or processes at once: the canary is
        claimed (live -> ended) in one transaction before anything changes what is served. A canary
        whose deployed version is no longer deployed (someone deployed or rolled back by hand), or
        whose candidate is no longer a candidate, is cancelled."""
        canary = self.live()
        if canary is None:
            return None
        if canary.training_run_id is not None:
            run = self.db.execute(
                "SELECT status FROM training_runs WHERE id = ?", [canary.training_run_id]
            ).fetchone()
            if run is not None and run[0] == "running":
                return None  # its cycle has not recorded its own decision yet: settle after it
        versions = VersionRegistry(self._pool)
        candidate = versions.get(canary.candidate_id)
        deployed = versions.deployed(candidate.base_model)
        if deployed is None or deployed.id != canary.deployed_id:
            return self.end(canary, "cancelled", ["the deployed version changed while the canary ran"])
        if candidate.status != "candidate":
            return self.end(canary, "cancelled", [f"the candidate is {candidate.status} now"])
        action, tally, reasons = self.decide(canary, now)
        if action is None:
            return None
        if action == "fallback":
            action = canary.fallback
        if action == "reject":
            decision = "rejected"
        elif action == "undecided":
            decision = "undecided"
        else:
            decision = "deployed" if canary.auto_deploy else "awaiting_approval"
        ended = self.end(canary, decision, reasons, tally)
        if ended is None:
            return None  # another caller settled it first
        runs = TrainingRuns(self._pool)
        if decision == "rejected":
            versions.set_status(candidate.id, "rejected", notes="; ".join(reasons))
            runs.record_event(candidate.id, "reject", "canary", reasons, canary.training_run_id)
        elif decision == "deployed":
            try:
                versions.deploy(candidate.id)
            except StoreError as exc:  # e.g. its adapter file went missing: it stays a candidate
                return self._amend(ended, "undecided", f"deploying it failed: {exc}")
            runs.record_event(candidate.id, "deploy", "canary", reasons, canary.training_run_id)
        return ended

    def _amend(self, canary: Canary, decision: str, reason: str) -> Canary:
        """Correct an ended canary's decision (and its run's) when applying it failed."""
        with self.write() as db:
            db.execute(
                "UPDATE canaries SET decision = ?, reasons = ? WHERE id = ?",
                [decision, dumps([*canary.reasons, reason]), canary.id],
            )
            _run_takes(db, canary.training_run_id, decision, [reason])
        return self.get(canary.id)

    def try_settle(self, now: datetime | None = None) -> Canary | None:
        """``settle`` for callers that must not fail (a vote handler, the scheduler's minute job): an
        error is logged and the next call tries again; an ended canary is logged with its decision."""
        try:
            ended = self.settle(now)
        except Exception:  # a locked database or a failed registry write; the votes stay stored
            log.exception("settling the canary failed; the next vote or the scheduler's check retries")
            return None
        if ended is not None:
            log.info("canary %d ended: %s (%s)", ended.id, ended.decision, "; ".join(ended.reasons))
        return ended

    def end(
        self, canary: Canary, decision: str, reasons: list[str], tally: Tally | None = None
    ) -> Canary | None:
        """Close the live canary with ``decision`` (None if it had ended already); its training run
        takes the decision too (a cancelled canary leaves its run undecided)."""
        if decision not in OUTCOMES:
            raise StoreError(f"a canary ends as one of {OUTCOMES}, not {decision!r}")
        tally = tally or self.tally(canary)
        with self.write() as db:
            claimed = db.execute(
                "UPDATE canaries SET status = 'ended', decision = ?, reasons = ?, tally = ?, ended_at = ? "
                "WHERE id = ? AND status = 'live'",
                [decision, dumps(reasons), dumps(tally.to_dict()), utc_now(), canary.id],
            ).rowcount
            if not claimed:
                return None
            _run_takes(
                db, canary.training_run_id, "undecided" if decision == "cancelled" else decision, reasons
            )
        return self.get(canary.id)


def _run_takes(db, run_id: int | None, decision: str, reasons: list[str]) -> None:
    """The canary's training run takes its decision, the canary's reasons added to the gate's."""
    if run_id is None:
        return
    run = next(db.query("SELECT reasons FROM training_runs WHERE id = ?", [run_id]), None)
    if run is not None:
        db.execute(
            "UPDATE training_runs SET decision = ?, reasons = ? WHERE id = ?",
            [decision, dumps([*(loads(run["reasons"]) or []), *(f"canary: {r}" for r in reasons)]), run_id],
        )
