"""benchmarks.reward_gold refuses what it cannot read with an error that says what to do (its quick run
is the documented-commands test's)."""

from __future__ import annotations

import json

import pytest

from benchmarks import reward_gold


def test_without_a_loop_run_it_says_to_run_the_loop_first(tmp_path, capsys):
    with pytest.raises(SystemExit, match="run `python -m benchmarks.loop` first"):
        reward_gold.main(["--data-dir", str(tmp_path)])


def test_a_folder_that_is_not_a_loop_run_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="is not a loop run"):
        reward_gold.main([str(tmp_path)])


@pytest.mark.parametrize("text", ["0.3", "abc:30", "0:30", "1.5:30", "0.3:0", "products"])
def test_a_variant_that_is_not_layers_steps_is_refused(tmp_path, text):
    (tmp_path / "loop_config.json").write_text(json.dumps({"oracle": "concise"}))
    with pytest.raises(SystemExit, match="--variants"):
        reward_gold.main([str(tmp_path), "--variants", text])


def test_the_newest_run_is_read_by_default(tmp_path):
    import os
    import time

    runs = tmp_path / "loop" / "runs"
    for i, name in enumerate(("older", "newer")):
        (runs / name).mkdir(parents=True)
        (runs / name / "loop_config.json").write_text("{}")
        stamp = time.time() - 100 + i
        os.utime(runs / name / "loop_config.json", (stamp, stamp))
    assert reward_gold.newest_run(tmp_path).name == "newer"
