"""The Dashboard's review queue (admins only): the messages users reported as "the filter was wrong"
or "this should have been blocked", oldest first, each with what the filter decided (the category and
the rule that fired, or nothing) and a proposed change to the operator's rules file as a unified diff
(``playground.moderation.review``). The admin decides:

- **Accept**: the report is right and the change is written (atomically) to DATA_DIR/moderation.toml
  or ``--moderation-file``; the running filter reloads it at once, no restart.
- **Confirm only**: the report is right, the rules stay as they are.
- **Reject**: the report is wrong.

What a decision does to training (``feedback_store.hygiene.training_excluded_message_ids``): a reported
miss is out of every dataset from the moment it is reported and comes back only when rejected; a
wrongly flagged text comes back once the report is confirmed or accepted. Decisions are stored, so a
decided message never shows again. Every handler checks the admin (fail closed); user text is shown
in text boxes, never rendered as Markdown or HTML.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from feedback_store.hygiene import REPORT_TEXT, ReviewItem
from feedback_store.store import FeedbackStore, StoreError
from playground.access import user_id_for
from playground.moderation.base import category_label
from playground.moderation.review import ModerationConfigError, Proposal, propose, write_rules_file
from playground.safety import Safety

log = logging.getLogger(__name__)

ADMINS_ONLY = "_The review queue is for admins._"
EMPTY = "_No reports wait for a decision._"
NO_RULES = "The rule-based filter is off (--no-moderation): a change cannot be proposed."


@dataclass(frozen=True)
class Shown:
    """What the admin saw: the decision applies to this message and exactly this diff."""

    message_id: int
    diff: str


def fired_text(item: ReviewItem) -> str:
    """What the filter decided about the reported text, in plain words (shown in a text box)."""
    decision = item.moderation or {}
    lines = []
    if decision.get("flagged"):
        labels = ", ".join(category_label(c) for c in decision.get("categories") or []) or "flagged"
        lines.append(f"Flagged as {labels} ({decision.get('action') or 'flagged'}).")
        for m in decision.get("matches") or []:
            rule = f"{m.get('category', '?')}: {m.get('rule', '?')}"
            lines.append(f"- {rule}, matched “{m.get('text', '')}”")
            if m.get("pattern"):
                lines.append(f"  rule: {m['pattern']}")
        if not decision.get("matches"):
            lines.append("- (no rule recorded)")
    elif decision:
        lines.append("No rule fired: the filter let it through.")
    else:
        lines.append("The filter was off when this was written.")
    if item.categories and item.kind == "false_negative":
        lines.append("Reporters named: " + ", ".join(item.categories))
    lines.extend(f"Reporter's note: {n}" for n in item.notes)
    return "\n".join(lines)


class ReviewQueue:
    def __init__(self, store: FeedbackStore, safety: Safety):
        self.store = store
        self.safety = safety  # required: the queue shows every user's reported text to admins only

    # -- the logic (also used by tests without a browser) --------------------------------------------
    def pending(self) -> list[ReviewItem]:
        return self.store.hygiene.review_queue()

    def proposal_for(self, item: ReviewItem) -> tuple[Proposal | None, str]:
        if self.safety.rules is None or self.safety.rules.path is None:
            return None, NO_RULES
        return propose(
            item.content,
            item.moderation_kind,  # type: ignore[arg-type]
            item.kind,
            self.safety.rules.path,
            categories=item.categories,
        )

    def decide(self, message_id: int, decision: str, shown_diff: str, admin: str) -> str:
        """Apply an admin's decision; returns what happened (raises StoreError for an item that is
        not pending, ValueError for a stale proposal)."""
        item = next((i for i in self.pending() if i.message_id == message_id), None)
        if item is None:
            raise StoreError("this report was already decided")
        if decision != "accepted":
            self.store.hygiene.record_review(message_id, decision, admin)
            return self._effect(item, decision)
        proposal, why = self.proposal_for(item)
        if proposal is None:
            raise ValueError(f"{why} Use “Confirm only” or “Reject”.")
        if proposal.diff != shown_diff:  # the file or the rules changed since the admin looked
            raise ValueError("The rules file changed since this proposal was shown: review the new diff.")
        write_rules_file(proposal.path, proposal.new_text)
        rules = self.safety.rules
        if rules is not None:
            rules.reload()
        self.store.hygiene.record_review(
            message_id, "accepted", admin, change=proposal.to_dict(), diff=proposal.diff
        )
        log.info("review: %s accepted a rules change for message %s (%s)", admin, message_id, proposal.path)
        return f"Written to {proposal.path}; the filter uses it now. " + self._effect(item, "accepted")

    @staticmethod
    def _effect(item: ReviewItem, decision: str) -> str:
        confirmed = decision in ("accepted", "confirmed")
        if item.kind == "false_positive":
            return "The text is training data again." if confirmed else "The text stays out of training."
        return "The text stays out of training." if confirmed else "The text is training data again."

    # -- the view -------------------------------------------------------------------------------------
    def _view(self, request: Any, status: str = "") -> tuple:
        """(summary, text, fired, diff label+value, state, accept, confirm, reject, status)."""
        buttons_off = (gr.update(interactive=False),) * 3
        if not self.safety.is_admin(request):
            return (ADMINS_ONLY, "", "", gr.update(value="", label="Proposed change"), None, *buttons_off, "")
        pending = self.pending()
        if not pending:
            return (EMPTY, "", "", gr.update(value="", label="Proposed change"), None, *buttons_off, status)
        item = pending[0]
        proposal, why = self.proposal_for(item)
        who = "a user message" if item.role == "user" else "a reply"
        summary = (
            f"**{len(pending)}** reported message{'s' if len(pending) != 1 else ''} wait for a decision "
            f"(oldest first). This one, {who}: “{REPORT_TEXT[item.kind]}” "
            f"({item.reports} report{'s' if item.reports != 1 else ''}, first {item.first_reported_at[:16]} UTC). "
            + why
        )
        diff = proposal.diff if proposal else ""
        label = f"Proposed change to {proposal.path}" if proposal else "Proposed change: none"
        return (
            summary,
            item.content,
            fired_text(item),
            gr.update(value=diff, label=label),
            Shown(item.message_id, diff),
            gr.update(interactive=proposal is not None),
            gr.update(interactive=True),
            gr.update(interactive=True),
            status,
        )

    def refresh(self, request: gr.Request):
        return self._view(request)

    def _decider(self, decision: str):
        def handler(shown: Shown | None, request: gr.Request):
            if why := self.safety.access.admin_refusal(request, "Deciding on reports"):
                raise gr.Error(why)
            if shown is None:
                return self._view(request, "Nothing to decide.")
            try:
                done = self.decide(shown.message_id, decision, shown.diff, user_id_for(request))
            except (StoreError, ValueError, ModerationConfigError) as exc:
                gr.Warning(str(exc))
                return self._view(request, f"Not done: {exc}")
            return self._view(request, f"{decision.capitalize()}: {done}")

        return handler

    def render(self, refreshers: list) -> None:
        """Inside the Dashboard; ``refreshers`` are the events (tab select, Refresh) that reload it."""
        with gr.Accordion(
            "Review queue: reports on the content filter (admins)", open=False, elem_id="review-queue"
        ):
            summary = gr.Markdown(ADMINS_ONLY, elem_id="review-summary")
            text = gr.Textbox(
                label="Reported text", lines=3, max_lines=12, interactive=False, elem_id="review-text"
            )
            fired = gr.Textbox(
                label="What the filter decided",
                lines=2,
                max_lines=10,
                interactive=False,
                elem_id="review-rule",
            )
            diff = gr.Code(
                label="Proposed change", language=None, interactive=False, lines=6, elem_id="review-diff"
            )
            with gr.Row():
                accept = gr.Button(
                    "Accept the change", variant="primary", interactive=False, elem_id="review-accept"
                )
                confirm = gr.Button("Confirm only", interactive=False, elem_id="review-confirm")
                reject = gr.Button(
                    "Reject the report", variant="stop", interactive=False, elem_id="review-reject"
                )
            status = gr.Markdown("", elem_id="review-status")
            state = gr.State(None)
        outputs = [summary, text, fired, diff, state, accept, confirm, reject, status]
        for event in refreshers:
            event(self.refresh, None, outputs)
        for button, decision in ((accept, "accepted"), (confirm, "confirmed"), (reject, "rejected")):
            button.click(self._decider(decision), [state], outputs)
