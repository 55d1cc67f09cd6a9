"""DPO, KTO, SFT, RL (RLOO) and best-of-n on the embedded model with small synthetic data.

The DPO, KTO, ORPO and SimPO checks measure the log-probability margin chosen - rejected by reloading
the saved adapters in a fresh process (``python -m trainers.evaluate margins``), as a user of an adapter
would.
"""

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.trainers.conftest import synthetic_pairs, synthetic_prompts, synthetic_unpaired
from trainers.best_of_n import BestOfNConfig, train_best_of_n
from trainers.common import TrainingDataError
from trainers.data import Demonstration
from trainers.dpo import DPOTrainConfig, train_dpo
from trainers.evaluate import write_pairs_jsonl
from trainers.kto import KTOTrainConfig, train_kto
from trainers.progress import training_progress
from trainers.reference_free import ORPOTrainConfig, SimPOTrainConfig, train_orpo, train_simpo
from trainers.rl import RLTrainConfig, train_rl
from trainers.sft import SFTTrainConfig, train_sft

pytestmark = pytest.mark.slow

SMALL = dict(max_length=96, threads=2, lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"))


# the preference methods, each trained 8 steps on the synthetic preference: (train, config, data)
PREFERENCE_METHODS = {
    "dpo": (train_dpo, DPOTrainConfig, lambda: synthetic_pairs(16)),
    "kto": (train_kto, KTOTrainConfig, lambda: synthetic_unpaired(32)),
    "orpo": (train_orpo, ORPOTrainConfig, lambda: synthetic_pairs(16)),
    "simpo": (train_simpo, SimPOTrainConfig, lambda: synthetic_pairs(16)),
}


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "train.jsonl"
    write_pairs_jsonl(synthetic_pairs(16), path)
    return path


@pytest.fixture(scope="module")
def trained(hf_base, tmp_path_factory):
    """Every preference method's result (trained once for the module, so that one fresh process can
    measure all the saved adapters on one load of the base)."""
    out = tmp_path_factory.mktemp("methods")
    results = {}
    for name, (train, config_class, data) in PREFERENCE_METHODS.items():
        config = config_class(
            output_dir=str(out / name),
            base_model_dir=str(hf_base),
            learning_rate=2e-4,
            max_steps=8,
            batch_size=2,  # 16 examples in 8 steps (KTO: half its 32); 4 a step cost 2.6x the time in fp32
            **SMALL,
        )
        results[name] = train(config, data())
    return results


@pytest.fixture(scope="module")
def fresh_margins(hf_base, pairs_file, trained) -> dict[str, float]:
    """The mean margin of the base and of each saved adapter, measured in a fresh process."""
    cmd = [
        sys.executable,
        "-m",
        "trainers.evaluate",
        "margins",
        "--base",
        str(hf_base),
        "--pairs",
        str(pairs_file),
    ]
    for result in trained.values():
        cmd += ["--adapter", str(result.adapter_dir)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    by_adapter = {line["adapter"]: line["mean_margin"] for line in lines}
    assert len(lines) == len(trained) + 1, out
    return {"base": by_adapter[None]} | {name: by_adapter[str(r.adapter_dir)] for name, r in trained.items()}


def test_dpo_raises_the_margin_in_a_fresh_process(trained, fresh_margins):
    result = trained["dpo"]
    assert result.metrics["reward_margin_last"] > 0
    assert len(result.metrics["loss_curve"]) == 8
    assert fresh_margins["dpo"] > fresh_margins["base"] + 1.0, fresh_margins


def test_kto_raises_the_margin_in_a_fresh_process(trained, fresh_margins):
    assert trained["kto"].metrics["desirable"] == trained["kto"].metrics["undesirable"] == 16
    assert fresh_margins["kto"] > fresh_margins["base"] + 1.0, fresh_margins


@pytest.mark.parametrize("method", ["orpo", "simpo"])
def test_reference_free_methods_raise_the_margin_in_a_fresh_process(trained, fresh_margins, method):
    result = trained[method]
    assert len(result.metrics["loss_curve"]) == 8 and result.metrics["reward_margin_last"] is not None
    assert fresh_margins[method] > fresh_margins["base"] + 1.0, fresh_margins


def test_kto_refuses_one_sided_labels(hf_base, tmp_path):
    only_good = [e for e in synthetic_unpaired(64) if e.label]
    with pytest.raises(TrainingDataError, match="32 thumbs up, 0 thumbs down"):
        train_kto(KTOTrainConfig(output_dir=str(tmp_path / "k"), base_model_dir=str(hf_base)), only_good)


def test_sft_step_on_demonstrations(hf_base, tmp_path):
    demos = [Demonstration(prompt=p.prompt, completion=p.chosen) for p in synthetic_pairs(8)]
    result = train_sft(
        SFTTrainConfig(output_dir=str(tmp_path / "sft"), base_model_dir=str(hf_base), max_steps=2, **SMALL),
        demos,
    )
    assert (result.adapter_dir / "adapter_model.safetensors").exists()
    losses = [p["loss"] for p in result.metrics["loss_curve"]]
    assert len(losses) == 2 and all(v > 0 for v in losses)


def test_rl_step_logs_reward_and_kl(hf_base, tmp_path, trained_reward_model):
    config = RLTrainConfig(
        output_dir=str(tmp_path / "rl"),
        base_model_dir=str(hf_base),
        reward_adapter=str(trained_reward_model.adapter_dir),
        max_steps=2,
        num_generations=4,
        batch_size=4,
        max_completion_length=24,
        **SMALL,
    )
    result = train_rl(config, synthetic_prompts(8))
    assert len(result.metrics["reward_curve"]) == 2
    kl = [p["kl"] for p in result.metrics["kl_curve"]]
    # RLOO logs the sampled (k1) estimate log pi - log pi_ref over the batch's completions: zero at the
    # first step (the fresh LoRA adapter leaves the policy equal to the reference) and small after two
    # steps, but of either sign, since the estimate comes from a handful of samples.
    assert len(kl) == 2 and abs(kl[0]) < 1e-6 and all(math.isfinite(v) and abs(v) < 1.0 for v in kl)
    assert (result.adapter_dir / "adapter_model.safetensors").exists()


def test_rl_without_a_reward_model_is_a_clear_error(hf_base, tmp_path):
    with pytest.raises(TrainingDataError, match="needs a trained reward model"):
        train_rl(
            RLTrainConfig(output_dir=str(tmp_path / "rl"), base_model_dir=str(hf_base)), synthetic_prompts(8)
        )


def test_best_of_n_selects_by_reward_and_fine_tunes(hf_base, tmp_path, trained_reward_model):
    config = BestOfNConfig(
        output_dir=str(tmp_path / "bon"),
        base_model_dir=str(hf_base),
        reward_adapter=str(trained_reward_model.adapter_dir),
        n=3,
        max_new_tokens=16,
        max_steps=1,
        **SMALL,
    )
    said: list[tuple[str, float]] = []
    progress = training_progress(
        lambda message, f: said.append((message, f)), "training best_of_n", 0.1, 0.85
    )
    result = train_best_of_n(config, synthetic_prompts(4), callbacks=[progress])
    assert result.metrics["method"] == "best_of_n"
    assert result.metrics["mean_reward_selected"] >= result.metrics["mean_reward_samples"]
    # the bar moves through the sampling (12 replies in batches of 8) and then the optimiser step
    assert [m for m, _ in said] == [
        "training best_of_n: sampled 8 of 12 replies (3 per prompt)",
        "training best_of_n: sampled 12 of 12 replies (3 per prompt)",
        "training best_of_n: step 1 of 1",
    ]
    assert [f for _, f in said] == pytest.approx([0.1 + 0.75 * 8 / 24, 0.1 + 0.75 / 2, 0.85])


def test_a_fresh_policy_lora_starts_from_the_same_weights_for_the_same_seed(hf_base, tmp_path):
    """``load_policy`` seeds before the LoRA is made (TRL makes it before the Trainer seeds): the same
    seed gives the same initial adapter, another seed another one."""
    from peft import get_peft_model

    from trainers.common import load_policy

    def initial_lora(seed: int):
        config = DPOTrainConfig(
            output_dir=str(tmp_path / "unused"), base_model_dir=str(hf_base), seed=seed, **SMALL
        )
        model, _, peft_config = load_policy(config)
        return {
            k: v.clone() for k, v in get_peft_model(model, peft_config).state_dict().items() if "lora_A" in k
        }

    first, again, other = initial_lora(0), initial_lora(0), initial_lora(1)
    assert first and first.keys() == again.keys()
    assert all((first[k] == again[k]).all() for k in first)
    assert any(not (first[k] == other[k]).all() for k in first)
