"""One round of the simulated loop on the real embedded model: simulated users write feedback through
the tabs' store calls, the scheduler runs a real (tiny) cycle in a child process, the gate passes the
candidate, it goes on canary and the users vote in canary battles until the vote budget is spent, the
service swaps, and the round is measured and published where the Dashboard finds it."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.loop import build_config, parse_args, publish
from feedback_store.store import FeedbackStore
from simulation.cli import flag_overrides
from simulation.rounds import LoopConfig, method_label, run_loop
from simulation.users import EventMix
from trainers.gate import GateConfig

# min_examples 8: the trainers' minimum is on the training split, after the held-out prompts are set aside
TINY = {
    "max_steps": 2,
    "max_length": 64,
    "lora_targets": ("q_proj", "v_proj"),
    "batch_size": 4,
    "min_examples": 8,
}


def test_cli_defaults_and_overrides(tmp_path):
    config = build_config(
        parse_args(["--data-dir", str(tmp_path), "--oracle", "concise", "--max-steps", "7"])
    )
    assert config.oracle == "concise" and config.method == "dpo" and config.rounds == 3
    assert config.feedback_per_round == 200 and config.policy_overrides["max_steps"] == 7
    assert config.work_dir.parent == tmp_path / "loop" / "runs" and config.hf_cache == tmp_path / "hf-base"
    assert config.mix.counts(200) == {"thumbs": 80, "votes": 100, "rankings": 20}
    kto = build_config(parse_args(["--data-dir", str(tmp_path), "--method", "kto"]))
    assert kto.mix.thumbs > kto.mix.votes and kto.mix.rankings == 0
    # the product's default gate unless a flag changes it, and then the change is recorded
    assert config.gate == GateConfig() and config.gate_overrides == {}
    loose = build_config(parse_args(["--data-dir", str(tmp_path), "--gate-min-win-rate", "0.4"]))
    assert loose.gate.min_win_rate == 0.4 and loose.gate_overrides == {"min_win_rate": 0.4}
    assert loose.gate.kl_budget == GateConfig().kl_budget
    assert config.cycle_overrides == {}
    levers = build_config(parse_args(["--data-dir", str(tmp_path), "--ptx-coef", "0", "--lora-layers", "1"]))
    assert levers.cycle_overrides == {"ptx_coef": 0.0, "lora_layers": 1.0}
    robust = build_config(
        parse_args(["--data-dir", str(tmp_path), "--dpo-loss", "robust", "--label-smoothing", "0.1"])
    )
    assert robust.cycle_overrides == {"dpo_loss": "robust", "label_smoothing": 0.1}
    assert method_label(robust.method, robust.cycle_overrides) == "dpo-robust"  # its own results file
    assert method_label("dpo", {"dpo_loss": "sigmoid"}) == method_label("dpo", {}) == "dpo"
    # Every training variant is filed under its own name, beside the method's own result.
    assert method_label(levers.method, levers.cycle_overrides, levers.policy_overrides) == "dpo-layers1-ptx0"
    sweep = build_config(parse_args(["--data-dir", str(tmp_path), "--beta", "0.05"]))
    assert method_label(sweep.method, sweep.cycle_overrides, sweep.policy_overrides) == "dpo-beta0.05"
    assert flag_overrides(parse_args(["--beta", "0.05", "--max-steps", "3"])) == {
        "beta": 0.05,
        "max_steps": 3,
    }
    assert flag_overrides(parse_args([])) == {}  # the header's "training:" line then says nothing
    assert flag_overrides(parse_args(["--quick"]))["batch_size"] == 4  # --quick's sizes are printed too
    assert method_label(config.method, config.cycle_overrides, config.policy_overrides) == "dpo"
    with pytest.raises(ValueError, match="with --method dpo"):
        build_config(parse_args(["--data-dir", str(tmp_path), "--method", "kto", "--dpo-loss", "ipo"]))
    with pytest.raises(ValueError, match="--label-smoothing 0.5: Input should be less than 0.5"):
        build_config(parse_args(["--data-dir", str(tmp_path), "--label-smoothing", "0.5"]))
    with pytest.raises(ValueError, match="greater than or equal to 0"):  # the settings' bounds, both ends
        build_config(parse_args(["--data-dir", str(tmp_path), "--label-smoothing", "-0.1"]))


@pytest.mark.slow
def test_one_round_through_the_product(tmp_path, hf_base_dir):
    config = LoopConfig(
        work_dir=tmp_path / "loop" / "runs" / "vader-dpo-test",
        hf_cache=hf_base_dir.parent,
        rounds=1,
        feedback_per_round=20,
        mix=EventMix(thumbs=0.2, votes=0.7, rankings=0.1, k=4),  # 16 votes: DPO's minimum
        max_new_tokens=16,
        samples_per_prompt=1,
        heldout_limit=3,
        capability_limit=3,
        reward_overrides=dict(TINY),
        policy_overrides=dict(TINY),
        gate=GateConfig(
            min_win_rate=0.0,
            kl_budget=1000,
            max_regressions=99,
            eval_prompts=2,
            facts=2,
            refusals=1,
            max_new_tokens=16,
        ),
        canary_overrides={"share": 1.0, "votes": 4},  # 4 decisive votes cannot decide: the gate's stands
    )
    lines: list[str] = []
    result = run_loop(config, log=lines.append)

    (record,) = result["rounds"]
    assert record["status"] == "succeeded", record
    assert record["decision"] == "deployed", record[
        "reasons"
    ]  # the lenient gate passes it, and the service swapped
    assert record["deployed_version_id"] == record["candidate_version_id"] != result["base"]["version_id"]
    canary = record["canary"]
    # A 2-step adapter often says what the base says: the users vote "tie" on the same text, and ties
    # do not spend the vote budget, so the canary ends on the vote budget (4 decisive votes) or, when
    # ties kept it short of that, on the time budget; either way the offline gate's decision stands.
    decisive = canary["battles"] - canary["ties"]
    assert canary["decision"] == "deployed" and 0 <= canary["ties"] <= canary["battles"]
    if canary["by"] == "vote budget":
        assert decisive == 4 and "vote budget of 4 spent" in canary["reasons"][0]
    else:
        assert canary["by"] == "time budget" and decisive < 4, canary
        assert "time budget spent" in canary["reasons"][0]
    assert canary["gold_rate"] is None or 0 <= canary["gold_rate"] <= 1
    assert result["canary"]["votes"] == [canary["battles"]] and result["canary"]["decided_by_votes"] == 0
    assert record["feedback"]["events"] == {"thumbs": 4, "votes": 14, "rankings": 2}
    assert record["feedback"]["replies"] == 4 + 28 + 8
    cand = record["candidate"]
    assert all(math.isfinite(cand[k]) for k in ("gold", "win_rate", "kl", "capability", "proxy"))
    # Measured, not defaulted: a Monte-Carlo estimate on a few samples of a 2-step adapter is near 0 and
    # may come out slightly negative.
    assert cand["kl"] != 0.0 and abs(cand["kl"]) < 5 and 0 <= cand["win_rate"] <= 1
    assert set(result["summary"]) == {
        "gold_base",
        "gold_final",
        "win_rate_final",
        "kl_final",
        "capability_base",
        "capability_final",
        "minutes",
        "loop_minutes",
    }
    assert any(line.lstrip().startswith("1 ") for line in lines)  # the round's table row

    # The feedback is in the product's tables, as the tabs write it.
    store = FeedbackStore(config.work_dir / "playground.db")
    try:
        db = store.db
        assert db["feedback"].count == 4 and db["rankings"].count == 2
        modes = {
            r["mode"]: r["n"] for r in db.query("SELECT mode, COUNT(*) AS n FROM comparisons GROUP BY mode")
        }
        assert modes == {"samples": 14, "canary": canary["battles"]}
        sources = {
            r["source"]: r["n"]
            for r in db.query("SELECT source, COUNT(*) AS n FROM conversations GROUP BY source")
        }
        assert sources == {"ui": 4, "compare": 14 + canary["battles"], "rank": 2}
        ties = db.execute(
            "SELECT COUNT(*) FROM comparisons WHERE mode = 'canary' AND vote = 'tie'"
        ).fetchone()
        assert ties[0] == canary["ties"]

        def versions(mode: str) -> set[int]:
            return {
                r["v"]
                for r in db.query(
                    "SELECT m.model_version_id AS v FROM comparisons c JOIN messages m "
                    "ON m.id IN (c.message_a, c.message_b) WHERE c.mode = ?",
                    [mode],
                )
            }

        base_id = result["base"]["version_id"]
        assert versions("samples") == {base_id}  # round 1's feedback came from the base (on-policy)
        assert versions("canary") == {base_id, record["candidate_version_id"]}
    finally:
        store.close()

    png = publish(result, tmp_path / "loop")
    assert png.stat().st_size > 10_000
    assert json.loads((tmp_path / "loop" / "latest.json").read_text())["summary"] == result["summary"]
    assert (tmp_path / "loop" / "results" / "vader-dpo.json").exists()
