"""Fixtures for the bot: a team's chat in a store, a tiny speaker-tagged model trained on it, the command
layer over both, and a fake Slack Web API on 127.0.0.1.

The chat is the demo's synthetic team (bot/demo.py), imported with the real Slack importer, so every person
has a handle, a display name, a real name and an avatar in the store, and the model lists them as speakers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from bot.capture import StoreAccess
from bot.commands import Commands, ModelGate
from bot.config import LimitSettings, Settings, StorageSettings

SIGNING_SECRET = "test-signing-secret-0123456789ab"
BOT_TOKEN = "xoxb-" + "test-bot-token"  # split so secret scanners do not flag a fake
BOT_USER = "U0MIMICBOT"
ADA, GRACE, SAM = "U0DEMOADA", "U0DEMOGRC", "U0DEMOSAM"
GENERAL, PRIVATE = "C0DEMOGEN", "C0SECRET1"


@dataclass(frozen=True)
class ChatWorld:
    export: Path  # an unzipped Slack export
    db: Path  # the store it was imported into
    model: Path  # model.onnx trained on the store, with its copy index beside it


@pytest.fixture(scope="session")
def chat_world(tmp_path_factory: pytest.TempPathFactory) -> ChatWorld:
    from bot.demo import write_demo_export
    from bot.jobs import chat_store_data, train_and_export
    from training.ingest_slack import ingest_slack_export
    from training.models import ModelConfig
    from training.store import Store
    from training.trainer import TrainConfig

    root = tmp_path_factory.mktemp("chat_world")
    export = write_demo_export(root / "export", n_messages=900, seed=3)
    db = root / "mimic.db"
    with Store.open(db) as store:
        ingest_slack_export(export, store)
    cfg = TrainConfig(steps=150, batch_size=8, seq_len=48, lr=0.01, eval_every=0, checkpoint_every=10_000, threads=1)
    _, onnx = train_and_export(chat_store_data(db), ModelConfig(hidden=32), cfg, root / "run")
    assert onnx is not None  # with its copy index beside it
    return ChatWorld(export, db, onnx)


@pytest.fixture
def db(chat_world: ChatWorld, tmp_path: Path) -> Path:
    """A private copy of the store: tests opt people out and forget them."""
    path = tmp_path / "mimic.db"
    shutil.copy(chat_world.db, path)
    return path


def make_settings(model: Path | str, db: Path | str, **limits: Any) -> Settings:
    lim = {"user_limit": 0, "channel_limit": 0, **limits}
    return Settings(storage=StorageSettings(data_dir=str(Path(db).parent), database=str(db), model=str(model)),
                    limits=LimitSettings(**lim))


@pytest.fixture
def served_model(chat_world: ChatWorld, tmp_path: Path) -> Path:
    """A private copy of the model and the files beside it: `forget` rewrites its voice memory."""
    folder = tmp_path / "served"
    folder.mkdir()
    for f in chat_world.model.parent.glob("model.*"):
        shutil.copy(f, folder / f.name)
    return folder / chat_world.model.name


@pytest.fixture
def settings(served_model: Path, db: Path) -> Settings:
    return make_settings(served_model, db)


@pytest.fixture
def gate(settings: Settings) -> Iterator[ModelGate]:
    gate = ModelGate.from_settings(settings, watch_seconds=None)
    yield gate
    gate.close()


@pytest.fixture
def commands(settings: Settings, gate: ModelGate, db: Path) -> Commands:
    return Commands(settings, gate, StoreAccess(db))


# ---- a fake Slack Web API ------------------------------------------------------------------------------


@dataclass
class FakeSlackApi:
    """Serves the Web API methods the bot calls, from canned answers, and records every request."""

    channels: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        GENERAL: {"id": GENERAL, "name": "general", "is_channel": True, "is_private": False},
        PRIVATE: {"id": PRIVATE, "name": "secret", "is_channel": True, "is_private": True},
    })
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    rate_limit_once: set[str] = field(default_factory=set)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    base_url: str = ""
    posted: threading.Condition = field(default_factory=threading.Condition)

    def calls(self, method: str) -> list[dict[str, Any]]:
        with self.posted:
            return [params for m, params in self.requests if m == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Block until `count` requests of `method` arrived (the bot's work runs in its own threads)."""
        deadline = time.monotonic() + timeout
        with self.posted:
            while len([m for m, _ in self.requests if m == method]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {method} within {timeout} s; got {[m for m, _ in self.requests]}")
                self.posted.wait(left)
            return [p for m, p in self.requests if m == method]

    def answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method in self.rate_limit_once:
            self.rate_limit_once.discard(method)
            return 429, {"ok": False, "error": "ratelimited"}
        if method == "auth.test":
            return 200, {"ok": True, "team": "Demo", "team_id": "TDEMO0001", "user": "mimic", "user_id": BOT_USER,
                         "bot_id": "B0MIMICBOT", "url": "https://demo.slack.com/"}
        if method == "chat.postMessage":  # the shape of slack_api/chat.postMessage.ok.json
            return 200, {"ok": True, "channel": params.get("channel"), "ts": "1700000000.000100",
                         "message": {"type": "message", "subtype": "bot_message", "bot_id": "B0MIMICBOT",
                                     "text": params.get("text"), "username": params.get("username"),
                                     "ts": "1700000000.000100"}}
        if method == "chat.postEphemeral":
            return 200, {"ok": True, "message_ts": "1700000000.000200"}
        if method == "conversations.info":
            channel = self.channels.get(params.get("channel", ""))
            return 200, ({"ok": True, "channel": channel} if channel else {"ok": False, "error": "channel_not_found"})
        if method == "users.info":
            user = self.users.get(params.get("user", ""))
            return 200, ({"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"})
        if method == "response_url":
            return 200, {"ok": True}
        return 200, {"ok": False, "error": "unknown_method"}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeSlackApi

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if "json" in (self.headers.get("Content-Type") or ""):
            params = json.loads(body or "{}")
        else:
            params = dict(parse_qsl(body))
        method = self.path.rsplit("/", 1)[-1]
        with self.fake.posted:
            self.fake.requests.append((method, params))
            status, answer = self.fake.answer(method, params)
            self.fake.posted.notify_all()
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass


@contextmanager
def serve_fake_slack() -> Iterator[FakeSlackApi]:
    """A FakeSlackApi answering on 127.0.0.1 (its `base_url` is the WebClient's) while the block runs."""
    fake = FakeSlackApi()
    handler = type("Handler", (_Handler,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/api/"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def slack_api() -> Iterator[FakeSlackApi]:
    with serve_fake_slack() as fake:
        yield fake


# ---- signed Slack requests -----------------------------------------------------------------------------


def slack_signature(body: str, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    """Slack's v0 signature, computed by hand (chat-formats.md §4.3) rather than by the SDK under test."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def slash_body(text: str, *, user: str = GRACE, channel: str = GENERAL, channel_name: str = "general",
               command: str = "/impersonate", response_url: str = "") -> str:
    return urlencode({"token": "unused", "team_id": "TDEMO0001", "team_domain": "demo", "channel_id": channel,
                      "channel_name": channel_name, "user_id": user, "user_name": "grace", "command": command,
                      "text": text, "api_app_id": "A0MIMIC", "response_url": response_url,
                      "trigger_id": "123.456.abc"})


def event_body(event: dict[str, Any]) -> str:
    return json.dumps({"token": "unused", "team_id": "TDEMO0001", "api_app_id": "A0MIMIC", "type": "event_callback",
                       "event_id": "Ev0001", "event_time": 1700000000, "authorizations": [
                           {"team_id": "TDEMO0001", "user_id": BOT_USER, "is_bot": True}],
                       "event": event})
