import pytest

from launch import parse_settings
from settings import Settings, short_flags


def test_defaults_serve_the_embedded_model_locally(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("PLAYGROUND_"):
            monkeypatch.delenv(key)
    s = parse_settings([])
    assert s.model is None and s.server.host == "127.0.0.1" and not s.server.share
    assert s.db_path.name == "playground.db"
    assert s.inference.threads_per_instance >= 1


def test_flags_override_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PLAYGROUND_SERVER_PORT", "9000")
    monkeypatch.setenv("PLAYGROUND_INFERENCE_CONCURRENCY", "3")
    s = parse_settings(["--port", "9001", "--auth", "a:b", "--auth", "c:d:e", "--db", str(tmp_path / "x.db")])
    assert s.server.port == 9001 and s.inference.concurrency == 3
    assert s.safety.auth_pairs() == [("a", "b"), ("c", "d:e")]
    assert s.db_path == tmp_path / "x.db"


def test_auth_file(tmp_path):
    f = tmp_path / "users.txt"
    f.write_text("# comment\nalice:wonderland\n\nbob:builder\n")
    assert Settings(auth_file=f).safety.auth_pairs() == [("alice", "wonderland"), ("bob", "builder")]
    f.write_text("nocolon\n")
    with pytest.raises(ValueError, match="users.txt:1"):
        Settings(auth_file=f).safety.auth_pairs()


@pytest.mark.parametrize("argv", [["--auth", "nopassword"], ["--port", "99999"], ["--concurrency", "0"]])
def test_bad_flags_exit_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse_settings(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and argv[0] in err  # the message names the flag the user typed


def test_every_section_field_has_a_flag_an_env_variable_and_help(monkeypatch, capsys):
    """Flags, help and environment variables are generated from the fields: each field is reachable
    by its short flag and its PLAYGROUND_<SECTION>_<FIELD> variable, and documented in --help."""
    flags = short_flags()
    assert flags["server.port"] == "port" and flags["training.every"] == "train-every"
    assert (
        flags["gate.min-win-rate"] == "gate-min-win-rate" and flags["training.auto-deploy"] == "auto-deploy"
    )
    monkeypatch.setenv("PLAYGROUND_TRAINING_EVERY", "7")
    monkeypatch.setenv("PLAYGROUND_GATE_KL_BUDGET", "3.5")
    s = parse_settings(["--train-min-feedback", "9", "--gate.min-win-rate", "0.6", "--no-scheduler"])
    assert (s.training.every, s.training.min_feedback) == (7, 9)
    assert (s.gate.kl_budget, s.gate.min_win_rate, s.server.scheduler) == (3.5, 0.6, False)
    with pytest.raises(SystemExit) as info:
        parse_settings(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in flags.values():
        assert f"--{flag}" in text, flag
    assert "PLAYGROUND_GATE_MIN_WIN_RATE" in text and "(default: 0.5)" in text


def test_python_callers_may_use_the_short_names():
    s = Settings(port=0, train_every=0, gate_min_win_rate=0.7, auto_deploy=False, server={"host": "0.0.0.0"})
    assert (s.server.port, s.server.host, s.training.every) == (0, "0.0.0.0", 0)
    assert s.gate.min_win_rate == 0.7 and s.training.auto_deploy is False


def test_the_flag_reference_page_is_current():
    """docs/flags.md is generated from the fields; regenerate it with `python -m settings > docs/flags.md`."""
    from settings.reference import flags_markdown
    from tests.conftest import ROOT

    assert (ROOT / "docs" / "flags.md").read_text(encoding="utf-8") == flags_markdown()
