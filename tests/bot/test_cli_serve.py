"""`mimic serve`, `mimic impersonate`, `mimic who`, `mimic demo` through the real entry point."""

from __future__ import annotations

import io
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot.cli import main
from tests.bot.conftest import ChatWorld, FakeSlackApi

ROOT = Path(__file__).resolve().parents[2]


def one_line_error(capsys: pytest.CaptureFixture, needle: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mimic:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_impersonate_prints_one_message(chat_world: ChatWorld, db: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["impersonate", "grace", "--model", str(chat_world.model), "--db", str(db), "-srand", "3",
            "--prompt", "Good"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("Good") and first.endswith("\n")
    assert main(args) == 0
    assert capsys.readouterr().out == first  # -srand makes it repeatable
    assert main(["impersonate", "Grace Lindqvist", "--model", str(chat_world.model), "-temp", "0.5"]) == 0
    assert main(["impersonate", "Grace", "Lindqvist", "--model", str(chat_world.model), "-temp", "0.5"]) == 0


@pytest.mark.parametrize(("args", "needle"), [
    (["impersonate", "bob"], "no such person in the model: bob"),
    (["impersonate", "sam"], "not enough messages from Sam yet (6)"),
    (["impersonate", "ada", "-temp", "0"], "temperature"),
    (["impersonate", "ada", "-temp", "100"], "-temp must be in (0, 5], as [generation] temperature in the config "
                                             "(got 100)"),
    (["impersonate", "ada", "-temp", "nan"], "-temp must be in (0, 5]"),
    (["impersonate", "grace", "--prompt", "word " * 100], "the opening words are too long (500 characters; at most 200)"),
])
def test_impersonate_errors_are_one_line(chat_world: ChatWorld, db: Path, capsys: pytest.CaptureFixture,
                                         args: list[str], needle: str) -> None:
    assert main([*args, "--model", str(chat_world.model), "--db", str(db)]) == 2
    one_line_error(capsys, needle)


def test_impersonate_takes_the_configs_highest_temperature(chat_world: ChatWorld, db: Path) -> None:
    assert main(["impersonate", "ada", "--model", str(chat_world.model), "--db", str(db), "-temp", "5",
                 "-srand", "1"]) == 0


def test_a_plain_text_model_says_how_to_get_a_chat_model(tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["impersonate", "ada", "--model", str(tiny_model)]) == 2
    one_line_error(capsys, "knows no people; train one on a chat store with `mimic retrain` (served from the model "
                           "registry), or with `mimic train --db PATH` and serve it with `--model runs/.../model.onnx`")


def test_no_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["impersonate", "ada", "--data-dir", str(tmp_path)]) == 2
    one_line_error(capsys, "no model loaded yet")
    (tmp_path / "models").mkdir()  # what a registry is before its first version
    assert main(["impersonate", "ada", "--data-dir", str(tmp_path)]) == 2
    one_line_error(capsys, "empty model registry (no versions in it yet)); train one with `mimic retrain`")


def test_a_store_named_but_missing_is_refused_not_created(chat_world: ChatWorld, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    """Opt-outs live in the store: a mistyped --db must not write as someone who opted out, nor make a bot
    take everyone for forgotten from a new empty store."""
    typo = tmp_path / "mimic.dbx"
    for args in (["impersonate", "grace"], ["who"]):
        assert main([*args, "--model", str(chat_world.model), "--db", str(typo)]) == 2
        one_line_error(capsys, "no such message store, but the model knows 6 people")
    monkeypatch.setattr(sys, "stdin", io.StringIO("who\n"))
    assert main(["serve", "console", "--model", str(chat_world.model), "--db", str(typo)]) == 2
    one_line_error(capsys, "is the path right?")
    monkeypatch.setattr(sys, "stdin", io.StringIO("who\n"))
    assert main(["serve", "console", "--model", str(chat_world.model), "--data-dir", str(tmp_path)]) == 2
    one_line_error(capsys, "no such message store")  # the default store, empty, would refuse everyone
    assert not typo.exists() and not (tmp_path / "mimic.db").exists()
    from training.store import Store

    Store.open(typo).close()  # an empty store, as an earlier run with the wrong path would have made
    assert main(["impersonate", "grace", "--model", str(chat_world.model), "--db", str(typo)]) == 2
    one_line_error(capsys, "holds no messages, but the model knows 6 people")


def test_who_without_a_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["who", "--model", str(tmp_path / "nope.onnx")]) == 2
    one_line_error(capsys, "no model loaded yet")


def test_who(chat_world: ChatWorld, db: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["who", "--model", str(chat_world.model), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("I can write as 5 people") and "• grace (Grace): " in out
    assert main(["who", "--all", "--model", str(chat_world.model), "--db", str(db)]) == 0
    assert capsys.readouterr().out == out  # five people: all shown either way (the command was once refused)


def test_serve_console_with_piped_input(chat_world: ChatWorld, db: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("who\nimpersonate ada\nquit\n"))
    with caplog.at_level(logging.INFO):
        assert main(["serve", "console", "--model", str(chat_world.model), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "mimic> who" in out and "Ada (mimic): " in out
    health = caplog.text
    assert "model model.onnx" in health and "people" in health and "message store" in health


@pytest.mark.parametrize(("platform", "needle"), [
    ("slack", "SLACK_SIGNING_SECRET is not set"),
    ("discord", "DISCORD_TOKEN is not set"),
])
def test_serve_without_secrets(tmp_path: Path, capsys: pytest.CaptureFixture, platform: str, needle: str) -> None:
    assert main(["serve", platform, "--data-dir", str(tmp_path)]) == 2
    one_line_error(capsys, needle)


def test_serve_slack_needs_the_bot_token(tmp_path: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    assert main(["serve", "slack", "--data-dir", str(tmp_path)]) == 2
    one_line_error(capsys, "SLACK_BOT_TOKEN is not set")


def test_serve_slack_names_every_missing_secret_at_once(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(var, raising=False)
    assert main(["serve", "slack", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "SLACK_BOT_TOKEN is not set" in err and "SLACK_SIGNING_SECRET is not set" in err
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xoxb-2")  # the bot token where the app token goes
    assert main(["serve", "slack", "--data-dir", str(tmp_path)]) == 2  # refused before dialling Slack
    one_line_error(capsys, "SLACK_APP_TOKEN is not an app-level token (those start with xapp-")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that refuses connections (bound, never listening): no network is needed to fail to reach it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_serve_slack_that_cannot_reach_slack_says_which_call(tmp_path: Path, closed_port: int,
                                                              capsys: pytest.CaptureFixture,
                                                              caplog: pytest.LogCaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1")
    monkeypatch.setenv("SLACK_API_URL", f"http://127.0.0.1:{closed_port}/api/")
    assert main(["serve", "slack", "--data-dir", str(tmp_path)]) == 2
    one_line_error(capsys, "Slack API auth.test: cannot connect (")
    assert not [r for r in caplog.records if r.name.startswith("slack_sdk")]  # the one line says it all


@pytest.mark.parametrize(("refused", "needle"), [
    ("auth.test", "Slack API auth.test failed: invalid_auth; check SLACK_BOT_TOKEN"),
    ("apps.connections.open", "Slack API apps.connections.open failed: invalid_auth; check SLACK_APP_TOKEN"),
])
def test_serve_slack_that_slack_refuses_is_one_line(tmp_path: Path, slack_api: FakeSlackApi,
                                                    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                                    refused: str, needle: str) -> None:
    answer = slack_api.answer
    monkeypatch.setattr(slack_api, "answer", lambda method, params: (200, {"ok": False, "error": "invalid_auth"})
                        if method == refused else answer(method, params))
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1")
    monkeypatch.setenv("SLACK_API_URL", slack_api.base_url)
    assert main(["serve", "slack", "--data-dir", str(tmp_path)]) == 2
    one_line_error(capsys, needle)


def test_serve_discord_that_cannot_reach_discord_says_so(tmp_path: Path, closed_port: int,
                                                         capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import discord.http

    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{closed_port}/api/v10")
    monkeypatch.setenv("DISCORD_TOKEN", "not-a-real-token")
    assert main(["serve", "discord", "--data-dir", str(tmp_path)]) == 2
    one_line_error(capsys, "Discord login: cannot connect (")


def test_serve_discord_with_a_refused_token_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import discord.http

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            body = b'{"message": "401: Unauthorized", "code": 0}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{server.server_address[1]}/api/v10")
        monkeypatch.setenv("DISCORD_TOKEN", "not-a-real-token")
        assert main(["serve", "discord", "--data-dir", str(tmp_path)]) == 2
    finally:
        server.shutdown()
        server.server_close()
    one_line_error(capsys, "Discord refused the bot token (HTTP 401 Unauthorized); check DISCORD_TOKEN")


def test_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[limits]\nuser_limit = -3\n")
    assert main(["serve", "console", "--config", str(config)]) == 2
    one_line_error(capsys, "[limits] user_limit must be 0 (unlimited) or more")
    config.write_text("[slack]\nbot_token = 'xoxb-1'\n")
    assert main(["who", "--config", str(config)]) == 2
    one_line_error(capsys, "secrets are read only from the environment")


def test_demo_runs_offline_with_piped_input(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "demo", "--time-budget", "3", "--data-dir",
                           str(tmp_path / "demo")], input="who\nimpersonate ada\nimpersonate sam\n", cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "mimic> who" in out and "I can write as 5 people" in out
    assert "mimic> impersonate ada" in out and "not enough messages from Sam yet (6)" in out
    assert "imported the team's chat" in proc.stderr and "trained" in proc.stderr
    assert (tmp_path / "demo" / "model" / "model.copyindex.npy").is_file()


def test_procfile_runs_one_process_per_adapter() -> None:
    lines = (ROOT / "Procfile").read_text().splitlines()
    assert lines == ["slack: mimic serve slack", "discord: mimic serve discord", "worker: mimic scheduler"]


def test_serving_path_never_imports_torch(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "import bot.cli, bot.cli_serve, bot.slack_adapter, bot.discord_adapter, bot.console_adapter\n"
        "from bot.config import Settings, StorageSettings\n"
        "from bot.cli_serve import build_commands\n"
        f"commands, gate, stores = build_commands(Settings(storage=StorageSettings(data_dir={str(tmp_path)!r})))\n"
        "commands.handle(__import__('bot.commands').commands.Invocation('console', 'you', 'console', 'help'))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True, timeout=120)
