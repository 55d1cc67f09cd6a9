"""Every command the README and the pages under docs/ show is run, so that a command is covered the day
it is documented and a documented command that fails, fails CI.

A command is a line of a fenced code block that starts with ``python launch.py`` or
``python -m benchmarks.``. Each runs as a user would, in documentation order, in one sandbox: a working
directory holding the files the docs name (``hh.jsonl``, ``users.txt``, ``my_preset.toml``) and a data
directory (``PLAYGROUND_DATA_DIR``) with feedback to train on and a candidate version to deploy. Long
commands run in a quick mode, said beside each: benchmarks get ``--quick``; training commands get
one optimiser step and a small gate; a server command is started, must report that it is ready, and
is stopped. ``./run`` and ``./test`` are covered by the start-up check and by CI itself.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import GPTQ_CALIBRATION, ROOT

pytestmark = pytest.mark.slow

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PREFIXES = ("python launch.py", "python -m benchmarks.")
TRAIN_QUICK = [
    "--max-steps", "1", "--train-max-steps", "1", "--eval-prompts", "2", "--gate-eval-prompts", "2",
    "--gate-facts", "2", "--gate-refusals", "1", "--gate-max-new-tokens", "16",
]  # fmt: skip
# a cycle takes only the settings' own flags, so its stored configuration is the scheduler's for them
CYCLE_QUICK = [
    "--train-max-steps", "1", "--gate-eval-prompts", "2",
    "--gate-facts", "2", "--gate-refusals", "1", "--gate-max-new-tokens", "16",
]  # fmt: skip
# the session's GPTQ copy (tests/conftest.py: gptq_base_dir, the same ensure_gptq_base with these texts)
# is linked as the sandbox's DATA_DIR/gptq, so the command finds it made, as a second run does
QUANTIZE_QUICK = ["--calibration", str(GPTQ_CALIBRATION)]
SERVER_QUICK = ["--port", "0", "--no-open-browser", "--no-scheduler"]
TIMEOUT_S = 420


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every runnable line of a fenced block, in documentation order."""
    found: list[tuple[str, str]] = []
    seen: list[list[str]] = []
    for path in DOCS:
        fenced = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            command = line.strip()
            key = command.split("#")[0].split()
            if fenced and command.startswith(PREFIXES) and key not in seen:  # the same command once
                seen.append(key)
                found.append((f"{path.relative_to(ROOT)}:{number}", command))
    return found


COMMANDS = documented_commands()


def test_the_docs_document_commands():
    assert len(COMMANDS) >= 10, COMMANDS  # the extraction itself works
    assert any("benchmarks." in c for _, c in COMMANDS) and any("train" in c for _, c in COMMANDS)


def quick_args(words: list[str]) -> tuple[list[str], str]:
    """The arguments that make a documented command quick, and what kind of command it is."""
    if words[1] == "-m":
        return ["--quick"], "benchmark"
    sub = words[2] if len(words) > 2 and not words[2].startswith("-") else "serve"
    if sub == "train":
        return (CYCLE_QUICK if "--cycle" in words else TRAIN_QUICK), "train"
    if sub == "quantize":
        return QUANTIZE_QUICK, sub
    if sub == "serve":
        return SERVER_QUICK, "server"
    return [], sub


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, hf_base_dir):
    """The working directory and data directory the documented commands run in."""
    from feedback_store.store import FeedbackStore
    from tests.trainers.conftest import seed_feedback

    work = tmp_path_factory.mktemp("docs")
    data = work / "data"
    data.mkdir()
    (data / "hf-base").symlink_to(hf_base_dir.parent, target_is_directory=True)
    store = FeedbackStore(data / "playground.db")
    base = store.versions.get(seed_feedback(store))
    adapter = work / "candidate.gguf"
    adapter.write_bytes(b"GGUF")  # deploy/rollback change the registry only; no server loads it here
    store.versions.register_candidate(base.base_model, gguf_adapter_path=adapter, method="dpo")
    store.close()
    hh = [
        {"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.", "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5."},
        {"chosen": "\n\nHuman: Name a colour.\n\nAssistant: Blue.", "rejected": "\n\nHuman: Name a colour.\n\nAssistant: No."},
    ]  # fmt: skip
    (work / "hh.jsonl").write_text("".join(json.dumps(row) + "\n" for row in hh), encoding="utf-8")
    (work / "examples").symlink_to(ROOT / "examples", target_is_directory=True)  # a clone has them
    (work / "users.txt").write_text("alice:wonderland-42\nbob:builder-42\n", encoding="utf-8")
    (work / "my_preset.toml").write_text(
        'id = "mine"\nname = "Mine"\ntechnique = "zero_shot"\n', encoding="utf-8"
    )
    env = {
        **os.environ,
        "PLAYGROUND_DATA_DIR": str(data),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "KEY": "documented-api-key-123",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    return work, env


def run_server(argv: list[str], work: Path, env: dict[str, str]) -> tuple[bool, str]:
    """Start a documented server command; True once it says it is ready (then it is stopped)."""
    log_path = work / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and proc.poll() is None:
                if "Playground ready" in log_path.read_text(errors="replace"):
                    return True, log_path.read_text(errors="replace")
                time.sleep(0.5)
            return False, log_path.read_text(errors="replace")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.parametrize("where,command", COMMANDS, ids=[c.split("#")[0].strip() for _, c in COMMANDS])
def test_documented_command_works(where, command, sandbox, request):
    work, env = sandbox
    words = shlex.split(os.path.expandvars(command.replace("$KEY", env["KEY"])), comments=True)
    extra, kind = quick_args(words)
    if kind == "quantize":
        gptq = request.getfixturevalue("gptq_base_dir")  # quantizing itself is proved there (a minute)
        cache = Path(env["PLAYGROUND_DATA_DIR"]) / "gptq"
        if not cache.exists():
            cache.symlink_to(gptq.parent, target_is_directory=True)
    argv = [sys.executable, *words[1:]]
    if argv[1] == "launch.py":
        argv[1] = str(ROOT / "launch.py")
    argv += extra
    shown = f"{where}: {command}" + (f"   [quick mode: {' '.join(extra)}]" if extra else "")
    if kind == "server":
        ready, log = run_server(argv, work, env)
        assert ready, f"{shown}\n{log[-3000:]}"
        return
    before = set((ROOT / "data").iterdir()) if (ROOT / "data").is_dir() else set()
    r = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    output = r.stdout + r.stderr
    assert r.returncode == 0, f"{shown}\nexit {r.returncode}\n{output[-3000:]}"
    assert "Traceback" not in output, f"{shown}\n{output[-3000:]}"
    if kind == "quantize":
        assert gptq.name in output, f"{shown}: the cached GPTQ copy is not named\n{output[-3000:]}"
    if kind == "train":
        check_training_stored(words[2:] + extra, r, Path(env["PLAYGROUND_DATA_DIR"]), shown)
    if kind == "benchmark":  # the JSON last line, with the same keys as a full run, the banner beside it
        lines = r.stdout.strip().splitlines()
        assert isinstance(json.loads(lines[-1]), dict), f"{shown}\nlast line: {lines[-1]}"
        assert "QUICK RUN" in lines[-2], f"{shown}: a quick figure must say it is one, beside the figures"
        after = set((ROOT / "data").iterdir()) if (ROOT / "data").is_dir() else set()
        assert after == before, f"{shown}: a quick run wrote into ./data: {sorted(map(str, after - before))}"


def last_json(stdout: str) -> dict:
    """A command's JSON summary: the last object printed (training libraries print their own logs)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def check_training_stored(args: list[str], r: subprocess.CompletedProcess, data: Path, shown: str) -> None:
    """What a training command must have stored, beyond exiting 0: ``train --cycle`` the scheduler's run
    row (its configuration, decision and reasons, every stage timed, progress to the end); ``train
    --method`` a policy method's registered candidate (or a reward model's metrics). ``r`` is the run
    of ``launch.py train ARGS`` on the sandbox's store ``data``."""
    from feedback_store.store import FeedbackStore
    from settings import Settings
    from trainers.cycle import CycleConfig

    summary = last_json(r.stdout)
    assert "100%" in r.stderr, f"{shown}: no progress bar"
    store = FeedbackStore(data / "playground.db")
    try:
        if "--cycle" in args:
            run = store.runs.recent()[0]
            assert run.trigger == "cli" and run.status == "succeeded", (shown, run)
            assert run.decision == summary["decision"] and run.reasons == summary["reasons"] and run.reasons
            assert set(run.stage_seconds) >= {"export", "reward", "policy", "evaluate"}, run.stage_seconds
            assert run.progress == pytest.approx(1.0) and "evaluate" in r.stderr
            # exactly the scheduler's configuration: what the server builds from the same flags
            flags = [a for a in args if a not in ("train", "--cycle")]
            expected = CycleConfig.from_settings(Settings(_cli_parse_args=["--data-dir", str(data), *flags]))
            assert run.config == json.loads(json.dumps(expected.to_dict())), shown
        elif summary.get("version_id") is not None:  # a policy method: one candidate, and no cycle of its own
            version = store.versions.get(summary["version_id"])
            assert version.status == "candidate" and version.method == args[args.index("--method") + 1]
            assert version.adapter_path == summary["adapter"] and summary["gguf_adapter"].endswith(".gguf")
        else:  # the reward model: its held-out accuracy
            assert "accuracy" in json.dumps(summary), (shown, summary)
    finally:
        store.close()
