"""DPO, KTO, SFT, RL (RLOO) and best-of-n on the embedded model with small synthetic data.

The DPO/KTO checks measure the log-probability margin chosen - rejected by reloading the saved adapter
in a fresh process (``python -m trainers.evaluate margins``), as a user of the adapter would.
"""

import json
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
from trainers.reference_free import ORPOTrainConfig, SimPOTrainConfig, train_orpo, train_simpo
from trainers.rl import RLTrainConfig, train_rl
from trainers.sft import SFTTrainConfig, train_sft

pytestmark = pytest.mark.slow

SMALL = dict(max_length=96, threads=2, lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"))


def fresh_process_margin(base, pairs_file, adapter=None) -> float:
    cmd = [
        sys.executable,
        "-m",
        "trainers.evaluate",
        "margins",
        "--base",
        str(base),
        "--pairs",
        str(pairs_file),
    ]
    if adapter is not None:
        cmd += ["--adapter", str(adapter)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["mean_margin"]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "train.jsonl"
    write_pairs_jsonl(synthetic_pairs(16), path)
    return path


@pytest.fixture(scope="module")
def base_margin(hf_base, pairs_file):
    return fresh_process_margin(hf_base, pairs_file)


def test_dpo_raises_the_margin_in_a_fresh_process(hf_base, tmp_path, pairs_file, base_margin):
    config = DPOTrainConfig(
        output_dir=str(tmp_path / "dpo"),
        base_model_dir=str(hf_base),
        learning_rate=2e-4,
        max_steps=8,
        **SMALL,
    )
    result = train_dpo(config, synthetic_pairs(16))
    assert result.metrics["reward_margin_last"] > 0
    assert len(result.metrics["loss_curve"]) == 8
    after = fresh_process_margin(hf_base, pairs_file, result.adapter_dir)
    assert after > base_margin + 1.0, (base_margin, after)


def test_kto_raises_the_margin_in_a_fresh_process(hf_base, tmp_path, pairs_file, base_margin):
    config = KTOTrainConfig(
        output_dir=str(tmp_path / "kto"),
        base_model_dir=str(hf_base),
        learning_rate=2e-4,
        max_steps=8,
        **SMALL,
    )
    result = train_kto(config, synthetic_unpaired(32))
    assert result.metrics["desirable"] == result.metrics["undesirable"] == 16
    after = fresh_process_margin(hf_base, pairs_file, result.adapter_dir)
    assert after > base_margin + 1.0, (base_margin, after)


@pytest.mark.parametrize(
    ("train", "config_class"),
    [(train_orpo, ORPOTrainConfig), (train_simpo, SimPOTrainConfig)],
    ids=["orpo", "simpo"],
)
def test_reference_free_methods_raise_the_margin_in_a_fresh_process(
    hf_base, tmp_path, pairs_file, base_margin, train, config_class
):
    config = config_class(
        output_dir=str(tmp_path / "adapter"),
        base_model_dir=str(hf_base),
        learning_rate=2e-4,
        max_steps=8,
        **SMALL,
    )
    result = train(config, synthetic_pairs(16))
    assert len(result.metrics["loss_curve"]) == 8 and result.metrics["reward_margin_last"] is not None
    after = fresh_process_margin(hf_base, pairs_file, result.adapter_dir)
    assert after > base_margin + 1.0, (base_margin, after)


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
    assert len(result.metrics["kl_curve"]) == 2 and all(p["kl"] >= -1e-3 for p in result.metrics["kl_curve"])
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
    result = train_best_of_n(config, synthetic_prompts(4))
    assert result.metrics["method"] == "best_of_n"
    assert result.metrics["mean_reward_selected"] >= result.metrics["mean_reward_samples"]
