"""Canary battles in the Compare tab, on the real embedded model with a real LoRA candidate: an anonymous
battle becomes candidate-against-deployed while a canary is live, the vote is stored in mode "canary"
and settles the canary; the Training tab shows the tally and the rule."""

from __future__ import annotations

import random

import pytest

from models.llamacpp import LlamaCppChatModel
from models.service import ModelService
from models.versions import VersionLoader
from playground.compare import CompareTab
from playground.safety import Safety
from playground.training import canary_markdown
from settings import Settings

SAMPLING = (0.7, 0.95, 40, 12, 1.1, 7, "")  # temperature, top-p, top-k, max tokens, repetition, seed, stop


@pytest.fixture
def canary_setup(store, random_lora):
    from models.embedded import embedded_model_path

    root = LlamaCppChatModel(embedded_model_path(), pool_size=1, n_threads=1)
    base = store.versions.ensure_base(root.model_id, name="base")
    candidate = store.versions.register_candidate(
        root.model_id, gguf_adapter_path=random_lora[1], parent_id=base.id, method="dpo"
    )
    service = ModelService.from_registry(VersionLoader(root), store.versions, base_version_id=base.id)
    settings = Settings()
    tab = CompareTab(settings, store, service, safety=Safety.from_settings(settings, store, service))
    yield tab, base, candidate
    service.close()


def battle(tab: CompareTab, anonymous: bool = True, user_key: str | None = None):
    steps = list(tab.run(None, "Say hello.", "samples", None, None, anonymous, "", user_key, *SAMPLING))
    return steps[-1][2]  # the round's state


def test_a_live_canary_turns_anonymous_battles_into_candidate_against_deployed(canary_setup):
    tab, base, candidate = canary_setup
    store = tab.store
    canary = store.canaries.start(
        candidate.id, base.id, share=1.0, max_votes=1, hours=1, per_user=1, alpha=0.05,
        fallback="undecided", auto_deploy=True,
    )  # fmt: skip
    assert battle(tab, anonymous=False).mode == "samples"  # names shown: not a canary battle

    state = battle(tab)
    assert state.mode == "canary"
    assert {state.label_a.split(" (")[-1], state.label_b.split(" (")[-1]} == {"candidate)", "deployed)"}
    versions = {store.get_message(m).model_version_id for m in (state.message_a, state.message_b)}
    assert versions == {candidate.id, base.id}
    assert "Canary 1 live" in canary_markdown(store.canaries) and "| 0 | 0 |" in canary_markdown(
        store.canaries
    )

    tab.vote_a(state, None)
    # one decisive vote spends this canary's budget: the offline gate's "undecided" stands
    assert store.canaries.live() is None
    ended = store.canaries.get(canary.id)
    assert ended.decision == "undecided" and ended.tally["wins"] + ended.tally["losses"] == 1
    assert "Canary 1 ended: undecided" in canary_markdown(store.canaries)
    assert store.versions.deployed(base.base_model).id == base.id


def test_a_user_whose_votes_no_longer_count_gets_ordinary_battles(canary_setup):
    tab, base, candidate = canary_setup
    tab.rng = random.Random(0)
    tab.store.canaries.start(
        candidate.id, base.id, share=1.0, max_votes=50, hours=1, per_user=1, alpha=0.05,
        fallback="deploy", auto_deploy=True,
    )  # fmt: skip
    first = battle(tab)
    tab.vote_b(first, None)
    assert first.mode == "canary" and battle(tab).mode == "samples"
    assert "votes left" in canary_markdown(tab.store.canaries)
