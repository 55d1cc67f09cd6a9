"""The safety layer every tab and the API go through: rate limits, moderation of inputs and outputs,
the messages users see about them, and the records kept for the Dashboard and for training hygiene.

- ``limit(scope, request)``: one chat turn ("chat") or feedback event ("feedback"); returns the message
  to show when a per-user or per-address limit is hit (the hit is logged once a minute per user and
  scope as a safety event: such users' feedback is kept out of training by default).
- ``check_input(text)``: an ``InputCheck``: the decision to store with the message, and either a refusal
  (a blocking category: the text never reaches the model) or a notice (a marking category, e.g. a
  prompt-injection attempt: answered, but flagged and so kept out of training).
- ``check_output(text)``: the decision for a reply, and what to show instead (withheld) or above it
  (marked), per ``--moderation-output``. ``check_stream(text)`` is the cheap check (rules only) run
  on every streamed update, so a flagged reply is stopped before its text reaches the screen.

Nothing here touches Gradio components: the tabs call it and show what it returns.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from feedback_store.store import FeedbackStore, StoreError
from playground.access import AccessPolicy, client_address, user_id_for
from playground.moderation.base import Combined, ModerationResult, Moderator, category_label
from playground.moderation.rules import ReloadingRules
from playground.ratelimit import Limited, RateLimiter
from playground.ratelimit import describe as describe_limit
from settings import Settings

log = logging.getLogger(__name__)

EVENT_EVERY_S = 60.0  # at most one stored rate-limit event per (user, scope) per minute
SELF_HARM_HELP = (
    " If you are going through something hard, please talk to someone you trust or a local crisis line "
    "(for example 988 in the US, 116 123 in the UK and Ireland)."
)
REPORT_HINT = "If the filter was wrong, choose “The filter was wrong” in this message's flag menu."
WITHHELD_WHILE_STREAMING = "⚠️ *The content filter stopped this reply.*"


def _quote(text: str) -> str:
    """A matched snippet, shown inert: no backticks, no newlines, short."""
    text = " ".join(text.replace("`", "'").split())
    return text if len(text) <= 60 else text[:59] + "…"


@dataclass(frozen=True)
class InputCheck:
    moderation: dict[str, Any] | None  # stored with the message (None: moderation is off)
    refusal: str | None = None  # the text that answers a blocked message
    notice: str | None = None  # shown to the user when the message is flagged but answered

    @property
    def refused(self) -> bool:
        return self.refusal is not None


@dataclass(frozen=True)
class OutputCheck:
    moderation: dict[str, Any] | None
    shown: str  # what the user sees: the reply, a withheld notice, or the reply marked

    @property
    def flagged(self) -> bool:
        return bool(self.moderation and self.moderation.get("flagged"))


@dataclass
class Safety:
    store: FeedbackStore
    access: AccessPolicy = field(default_factory=AccessPolicy)
    limiter: RateLimiter | None = None
    moderator: Moderator | None = None  # everything, the judge included (inputs, final outputs)
    stream_moderator: Moderator | None = None  # the cheap part, for streamed updates
    output_action: str = "withhold"
    rules: ReloadingRules | None = None  # the rule-based part, reloadable (the review queue writes it)

    def __post_init__(self) -> None:
        self._events_lock = threading.Lock()
        self._last_event: dict[tuple[str, str], float] = {}

    @classmethod
    def from_settings(cls, settings: Settings, store: FeedbackStore, service: Any = None) -> Safety:
        """Raises ValueError (unreadable auth/admins file) or ModerationConfigError (a bad rules file)."""
        rules = ReloadingRules(settings.moderation_target) if settings.safety.moderation else None
        moderator: Moderator | None = rules
        if rules is not None and settings.safety.moderation_judge and service is not None:
            from playground.moderation.judge import ModelJudge

            moderator = Combined([rules, ModelJudge(service)])
        limiter = RateLimiter(
            {
                "chat": (settings.safety.rate_limit_chat, settings.safety.rate_limit_chat_ip),
                "feedback": (settings.safety.rate_limit_feedback, settings.safety.rate_limit_feedback_ip),
            }
        )
        return cls(
            store,
            AccessPolicy.from_settings(settings),
            limiter if limiter.active else None,
            moderator,
            rules,
            settings.safety.moderation_output,
            rules,
        )

    def describe(self) -> str:
        """One startup line saying what protects this server (never a password)."""
        a = self.access
        parts = [
            f"login required ({len(a.logins)} users)" if a.auth else "no login",
            f"admins: {', '.join(sorted(a.admins))}"
            if a.auth and a.admins
            else (
                "admins: none"
                if a.auth
                else "admin: this machine's browser" + (" (none: shared)" if a.share else "")
            ),
        ]
        if self.limiter is None:
            parts.append("no rate limits")
        else:
            limits = []
            for scope, (per_user, per_address) in self.limiter.limits.items():
                each = [
                    f"{describe_limit(i)} per {who}"
                    for i, who in ((per_user, "user"), (per_address, "address"))
                    if i
                ]
                if each:
                    limits.append(f"{scope} " + ", ".join(each))
            parts.append(
                "rate limits: "
                + "; ".join(limits)
                + ("" if a.share or a.limit_local else " (not for 127.0.0.1)")
            )
        if self.moderator is None:
            parts.append("content filter off")
        else:
            parts.append(
                f"content filter: {self.moderator.name}, flagged replies {'withheld' if self.output_action == 'withhold' else 'marked'}"
            )
        notes = "".join(f"\n  note: {n}" for n in a.notes)
        return "Safety: " + " · ".join(parts) + notes

    # -- who -----------------------------------------------------------------------------------------
    @staticmethod
    def user_id(request: Any) -> str:
        return user_id_for(request)

    def is_admin(self, request: Any) -> bool:
        """For admin-only actions (exports of everybody's data, the Training tab's buttons)."""
        return self.access.is_admin(request)

    # -- rate limits ---------------------------------------------------------------------------------
    def limit(self, scope: str, request: Any, *, user: str | None = None) -> str | None:
        """Count one ``scope`` event for the request's user and address; the message if over a limit."""
        limited = self.limited(scope, request, user=user)
        return None if limited is None else limited.message()

    def limited(self, scope: str, request: Any, *, user: str | None = None) -> Limited | None:
        """As ``limit``, returning the ``Limited`` record (for Retry-After)."""
        if self.limiter is None or not self.access.rate_limited(request):
            return None
        user = user or user_id_for(request)
        address = client_address(request)
        limited = self.limiter.check(scope, user, address)
        if limited is not None:
            self._log_event(user, address, scope, {"limit": limited.limit, "who": limited.who})
        return limited

    def _log_event(self, user: str, address: str | None, scope: str, detail: dict) -> None:
        now = time.monotonic()
        with self._events_lock:
            last = self._last_event.get((user, scope))
            if last is not None and now - last < EVENT_EVERY_S:
                return
            self._last_event[(user, scope)] = now
        log.info("rate limit hit: user %s, scope %s, %s", user, scope, detail["limit"])
        try:
            self.store.hygiene.record_event(
                "rate_limited", user, client_ip=address, scope=scope, detail=detail
            )
        except StoreError as exc:  # a refused request must not fail because its log row failed
            log.warning("could not log a rate-limit event: %s", exc)

    # -- moderation ----------------------------------------------------------------------------------
    def moderate(self, text: str, kind: str = "input") -> ModerationResult | None:
        if self.moderator is None:
            return None
        return self.moderator.moderate(text, kind=kind)  # type: ignore[arg-type]

    def check_input(self, text: str, *, report_hint: bool = True) -> InputCheck:
        result = self.moderate(text, "input")
        if result is None:
            return InputCheck(None)
        if not result.flagged:
            return InputCheck({**result.to_dict(), "action": "allowed"})
        what = result.describe()
        matched = f" (it matched “{_quote(result.matches[0].text)}”)" if result.matches else ""
        if result.block:
            refusal = (
                f"⚠️ **Your message was not sent to the model.** The content filter flagged it as "
                f"*{what}*{matched}. It is kept, but not used for training."
            )
            if report_hint:
                refusal += f" {REPORT_HINT}"
            if "self_harm" in result.categories:
                refusal += SELF_HARM_HELP
            return InputCheck({**result.to_dict(), "action": "refused"}, refusal=refusal)
        notice = (
            f"Your message looks like {what}{matched}. It is answered, but marked and kept out of training."
        )
        return InputCheck({**result.to_dict(), "action": "marked"}, notice=notice)

    @staticmethod
    def refusal_record(check: InputCheck, message_id: int) -> dict[str, Any]:
        """The decision stored with the refusal text itself (flagged: never training data)."""
        return {
            "flagged": True,
            "categories": (check.moderation or {}).get("categories", []),
            "action": "refusal",
            "refused_message_id": message_id,
        }

    def check_stream(self, text: str) -> bool:
        """True when a reply being streamed must stop (a blocking category, rules only)."""
        if self.stream_moderator is None:
            return False
        result = self.stream_moderator.moderate(text, kind="output")
        return result.flagged and result.block and self.output_action == "withhold"

    def check_output(self, text: str, *, report_hint: bool = True) -> OutputCheck:
        result = self.moderate(text, "output")
        if result is None:
            return OutputCheck(None, text)
        if not result.flagged:
            return OutputCheck({**result.to_dict(), "action": "allowed"}, text)
        if result.block and self.output_action == "withhold":
            shown = withheld_text(result.describe(), report_hint=report_hint)
            return OutputCheck({**result.to_dict(), "action": "withheld"}, shown)
        return OutputCheck({**result.to_dict(), "action": "marked"}, marked_text(result.describe(), text))

    def check_demonstration(self, text: str) -> dict[str, Any] | None:
        """The decision on a better answer (stored beside it; flagged answers are not trained on)."""
        result = self.moderate(text, "output")
        return (
            None
            if result is None
            else {**result.to_dict(), "action": "marked" if result.flagged else "allowed"}
        )


def categories_text(categories: list[str]) -> str:
    return ", ".join(category_label(c) for c in categories)


def withheld_text(what: str, *, report_hint: bool = True) -> str:
    """What the user sees instead of a reply the filter withheld (``what``: its categories in words)."""
    return (
        f"⚠️ **Reply withheld.** The content filter flagged the model's reply as *{what}*. "
        "It is kept for review, not shown, and not used for training."
        + (f" {REPORT_HINT}" if report_hint else "")
    )


def marked_text(what: str, text: str) -> str:
    """A flagged reply shown with the filter's mark above it."""
    return f"> ⚠️ The content filter flagged this reply as *{what}*; it is not used for training.\n\n{text}"


def stored_display(content: str, moderation: dict[str, Any] | None) -> str:
    """What ``check_output`` showed for a stored reply, rebuilt from its stored decision (restoring
    a conversation must not reveal a reply the filter withheld)."""
    decision = moderation or {}
    what = ModerationResult(True, tuple(decision.get("categories") or ())).describe() or "flagged"
    if decision.get("action") == "withheld":
        return withheld_text(what, report_hint=False)
    if decision.get("action") == "marked" and decision.get("flagged"):
        return marked_text(what, content)
    return content
