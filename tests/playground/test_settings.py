import pytest

from launch import parse_settings
from playground.settings import Settings


def test_defaults_serve_the_embedded_model_locally(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("PLAYGROUND_"):
            monkeypatch.delenv(key)
    s = parse_settings([])
    assert s.model is None and s.host == "127.0.0.1" and not s.share
    assert s.db_path.name == "playground.db"
    assert s.threads_per_instance >= 1


def test_flags_override_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PLAYGROUND_PORT", "9000")
    monkeypatch.setenv("PLAYGROUND_CONCURRENCY", "3")
    s = parse_settings(["--port", "9001", "--auth", "a:b", "--auth", "c:d:e", "--db", str(tmp_path / "x.db")])
    assert s.port == 9001 and s.concurrency == 3
    assert s.auth_pairs() == [("a", "b"), ("c", "d:e")]
    assert s.db_path == tmp_path / "x.db"


def test_auth_file(tmp_path):
    f = tmp_path / "users.txt"
    f.write_text("# comment\nalice:wonderland\n\nbob:builder\n")
    assert Settings(auth_file=f).auth_pairs() == [("alice", "wonderland"), ("bob", "builder")]
    f.write_text("nocolon\n")
    with pytest.raises(ValueError, match="users.txt:1"):
        Settings(auth_file=f).auth_pairs()


@pytest.mark.parametrize("argv", [["--auth", "nopassword"], ["--port", "99999"], ["--concurrency", "0"]])
def test_bad_flags_exit_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse_settings(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
