"""A locked-down server as users and attackers meet it (real ``launch.py`` process): --share refuses to
start without a login unless --public, 401 without credentials, admin-only actions refused to normal
users, login attempts limited, and no password in the logs even at DEBUG level."""

import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT, ServerProcess

ALICE_PW = "alice-Pa55-7f3k9q"  # distinctive strings, so a leak into the log cannot hide
BOB_PW = "bob-Pa55-2m8x4w"
WRONG_PW = "wrong-Pa55-0z0z0z"
API_KEY = "api-key-5e6r7t8y9u"


def test_share_without_auth_refuses_to_start_and_says_why(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "--share",
            "--no-open-browser",
            "--data-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "public internet" in r.stderr and "--auth" in r.stderr and "--public" in r.stderr


def test_a_malformed_auth_value_is_refused_without_echoing_it(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--auth", "justapassword99", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "USER:PASS" in r.stderr and "justapassword99" not in r.stderr + r.stdout


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    data = tmp_path_factory.mktemp("locked")
    (data / "users.txt").write_text(f"# one USER:PASS per line\nbob:{BOB_PW}\n")
    server = ServerProcess(
        data,
        "--auth",
        f"alice:{ALICE_PW}",
        "--auth-file",
        str(data / "users.txt"),
        "--admin",
        "alice",
        "--api-key",
        API_KEY,
        env={"PLAYGROUND_LOG_LEVEL": "DEBUG"},
    )
    yield server.wait_ready()
    server.stop()


def test_without_credentials_everything_answers_401(locked):
    for path in ("gradio_api/login_check", "config", "gradio_api/info", "v1/models"):
        assert httpx.get(locked.url + path).status_code == 401, path
    for path in (
        "gradio_api/call/export_raw",
        "gradio_api/queue/join",
        "gradio_api/upload",
        "v1/chat/completions",
    ):
        assert httpx.post(locked.url + path, json={"data": []}).status_code == 401, path
    assert httpx.post(locked.url + "login", data={"username": "bob", "password": WRONG_PW}).status_code == 400
    r = httpx.post(locked.url + "login", data={"username": "bob", "password": BOB_PW})
    assert r.status_code == 200 and r.json() == {"success": True}


def test_admin_only_actions_are_refused_to_normal_users(locked):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    bob = Client(locked.url, auth=("bob", BOB_PW), verbose=False)
    with pytest.raises(AppError, match="needs an admin login"):
        bob.predict(api_name="/export_raw")
    with pytest.raises(AppError, match="No message 999"):  # a normal user's report, refused clearly
        bob.predict(999, "false_positive", api_name="/report_moderation")
    alice = Client(locked.url, auth=("alice", ALICE_PW), verbose=False)
    path = alice.predict(api_name="/export_raw")
    assert str(path).endswith("raw_tables.jsonl")


def test_history_endpoints_answer_forged_ids_as_unknown_ones(locked):
    """Through gradio_client, with two logins: bob lists, opens, renames and deletes nothing of alice's,
    whatever id or browser key he sends; alice's own calls work. (Before the login lock-out test below,
    which locks alice's name for a minute.)"""
    import uuid

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from feedback_store.store import AssistantTurn, FeedbackStore

    store = FeedbackStore(locked.data_dir / "playground.db")  # the server's database (WAL: shared)
    try:
        conv = store.create_conversation("alice")
        question = store.add_message(conv, "user", "alice's private question")
        store.add_assistant_message(
            conv, question, AssistantTurn(content="alice's answer", model_version_id=None)
        )
    finally:
        store.close()
    bob = Client(locked.url, auth=("bob", BOB_PW), verbose=False)
    alice = Client(locked.url, auth=("alice", ALICE_PW), verbose=False)
    assert bob.predict("", None, api_name="/history_list") == []
    assert bob.predict("private", "0" * 32, api_name="/history_list") == []  # a browser key changes nothing
    answers = set()
    for forged in (conv, uuid.uuid4().hex, "' OR '1'='1", "../" * 20):
        for args, api in (
            ((forged, None), "/history_open"),
            ((forged, "bob's title", None), "/history_rename"),
            ((forged, None), "/history_delete"),
        ):
            with pytest.raises(AppError) as info:
                bob.predict(*args, api_name=api)
            answers.add(str(info.value))
    assert len(answers) == 1 and "No such conversation" in answers.pop()  # the same for all

    [mine] = alice.predict("", None, api_name="/history_list")
    assert mine["id"] == conv and mine["title"] == "alice's private question"
    opened = alice.predict(conv, None, api_name="/history_open")
    assert [m["content"] for m in opened["messages"]] == ["alice's private question", "alice's answer"]
    assert alice.predict(conv, "Renamed", None, api_name="/history_rename")["title"] == "Renamed"
    assert alice.predict(conv, None, api_name="/history_delete") == {"deleted": 1, "messages": 2}
    assert alice.predict("", None, api_name="/history_list") == []


def test_repeated_failed_logins_lock_the_name_for_a_while(locked):
    codes = [
        httpx.post(locked.url + "login", data={"username": "carol", "password": f"guess{i}"}).status_code
        for i in range(12)
    ]
    assert set(codes) == {400}
    fails = [
        httpx.post(locked.url + "login", data={"username": "alice", "password": WRONG_PW}) for _ in range(10)
    ]
    assert all(r.status_code == 400 for r in fails)
    # the right password is refused too until the window passes: guessing at speed gets nowhere
    assert (
        httpx.post(locked.url + "login", data={"username": "alice", "password": ALICE_PW}).status_code == 400
    )
    assert httpx.post(locked.url + "login", data={"username": "bob", "password": BOB_PW}).status_code == 200


def test_passwords_never_reach_the_log(locked):
    for key in (f"alice:{WRONG_PW}", f"bob:{BOB_PW}", API_KEY):
        httpx.get(locked.url + "v1/models", headers={"Authorization": f"Bearer {key}"})
    log = locked.log()
    assert "DEBUG" in log and "Safety: login required (2 users)" in log and "admins: alice" in log
    for secret in (ALICE_PW, BOB_PW, WRONG_PW, API_KEY):
        assert secret not in log
