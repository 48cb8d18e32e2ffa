"""A fake Slack Web API on 127.0.0.1, for the history fetcher and the CLI (chat-formats.md §3).

It serves auth.test, users.list, conversations.list, conversations.history (newest first, `oldest`
exclusive) and conversations.replies (parent first) from in-memory data, pages everything with opaque-ish
cursors at `page_size` items, answers HTTP 429 with `Retry-After: 1` once for each method listed in
`rate_limit_once`, and records every request so tests can assert what was asked.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.training.fixtures import msg, slack_users

TOKEN = "xoxb-" + "fake-token"  # split so secret scanners do not flag a fake


def _ts(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


@dataclass
class FakeSlack:
    users: list[dict[str, Any]] = field(default_factory=slack_users)
    channels: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # channel id -> every message
    page_size: int = 2
    rate_limit_once: set[str] = field(default_factory=set)
    listable: set[str] | None = None  # conversation types the token's scopes may list (None: all)
    gone_threads: set[str] = field(default_factory=set)  # deleted after history named them: thread_not_found
    connect_users: list[dict[str, Any]] = field(default_factory=list)  # only users.info knows them
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    base_url: str = ""

    def calls(self, method: str) -> list[dict[str, str]]:
        return [params for m, params in self.requests if m == method]

    def _page(self, items: list[Any], params: dict[str, str], key: str) -> dict[str, Any]:
        start = int(params.get("cursor") or 0)
        size = min(int(params.get("limit") or 100), self.page_size)
        end = start + size
        body: dict[str, Any] = {"ok": True, key: items[start:end], "has_more": end < len(items)}
        body["response_metadata"] = {"next_cursor": str(end) if end < len(items) else ""}
        return body

    def answer(self, method: str, params: dict[str, str], auth: str | None) -> tuple[int, dict[str, Any]]:
        self.requests.append((method, params))
        if method in self.rate_limit_once:
            self.rate_limit_once.discard(method)
            return 429, {"ok": False, "error": "ratelimited"}
        if auth != f"Bearer {TOKEN}":
            return 200, {"ok": False, "error": "invalid_auth"}
        if method == "auth.test":
            return 200, {"ok": True, "team_id": "T0FIXTURE", "team": "Fixture Team", "user_id": "UBOT"}
        if method == "users.list":
            return 200, self._page(self.users, params, "members")
        if method == "users.info":
            user = next((u for u in self.users + self.connect_users if u.get("id") == params.get("user")), None)
            return 200, {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}
        if method == "conversations.list":
            wanted = set(params.get("types", "public_channel").split(","))
            if self.listable is not None and wanted - self.listable:  # Slack refuses the whole call
                needed = {"im": "im:read", "mpim": "mpim:read", "private_channel": "groups:read"}
                return 200, {"ok": False, "error": "missing_scope",
                             "needed": ",".join(sorted(needed.get(t, t) for t in wanted - self.listable))}
            listed = [c for c in self.channels if self._type(c) in wanted]
            return 200, self._page(listed, params, "channels")
        channel = self.messages.get(params.get("channel", ""))
        if channel is None:
            return 200, {"ok": False, "error": "channel_not_found"}
        if method == "conversations.history":
            oldest = params.get("oldest")
            top = [m for m in channel if m.get("thread_ts", m["ts"]) == m["ts"] or m.get("subtype") == "thread_broadcast"]
            top = [m for m in top if oldest is None or _ts(m["ts"]) > _ts(oldest)]
            return 200, self._page(sorted(top, key=lambda m: _ts(m["ts"]), reverse=True), params, "messages")
        if method == "conversations.replies":
            thread = [m for m in channel if m.get("thread_ts") == params["ts"] and m.get("subtype") != "thread_broadcast"]
            if not thread or params["ts"] in self.gone_threads:
                return 200, {"ok": False, "error": "thread_not_found"}
            thread.sort(key=lambda m: (m["ts"] != params["ts"], _ts(m["ts"])))  # the parent first
            return 200, self._page(thread, params, "messages")
        return 200, {"ok": False, "error": "unknown_method"}

    @staticmethod
    def _type(channel: dict[str, Any]) -> str:
        if channel.get("is_im"):
            return "im"
        if channel.get("is_mpim"):
            return "mpim"
        return "private_channel" if channel.get("is_private") else "public_channel"


def workspace() -> FakeSlack:
    """General (the bot is in it; a thread, an edit, a bot post, a join), random (the bot is in it),
    music (the bot is not), a private channel and a DM (never fetched unless named)."""
    fake = FakeSlack()
    fake.channels = [
        {"id": "C01GEN", "name": "general", "is_member": True, "is_private": False},
        {"id": "C02RAND", "name": "random", "is_member": True, "is_private": False},
        {"id": "C03MUS", "name": "music", "is_member": False, "is_private": False},
        {"id": "G01SEC", "name": "secret", "is_member": True, "is_private": True},
        {"id": "D01AB", "is_im": True, "user": "U02BOB", "is_member": True},
    ]
    fake.messages = {
        "C01GEN": [
            msg("1704103140.000050", "U01ALICE", "<@U01ALICE> has joined the channel", subtype="channel_join"),
            msg("1704103200.000100", "U01ALICE", "hello <@U02BOB>"),
            msg("1704103260.000200", "U02BOB", "hi &amp; welcome"),
            msg("1704103320.000300", "U03CAROL", "thread start", thread_ts="1704103320.000300", reply_count=3),
            msg("1704103380.000400", "U01ALICE", "reply one", thread_ts="1704103320.000300"),
            msg("1704103440.000500", "U02BOB", "reply two", thread_ts="1704103320.000300"),
            msg("1704103500.000600", "U03CAROL", "reply three\nwith two lines", thread_ts="1704103320.000300"),
            msg("1704103560.000700", None, "I am Mimic", subtype="bot_message", bot_id="B99", username="alice"),
            msg("1704103620.000800", "U02BOB", "edited text", edited={"user": "U02BOB", "ts": "1704103630.0"}),
        ],
        "C02RAND": [msg("1704200000.000100", "U05ERIN", "random thoughts")],
        "C03MUS": [msg("1704200000.000200", "U01ALICE", "the bot cannot read this")],
        "G01SEC": [msg("1704200000.000300", "U01ALICE", "private plans")],
        "D01AB": [msg("1704200000.000400", "U02BOB", "a direct message")],
    }
    return fake


class _Handler(BaseHTTPRequestHandler):
    fake: FakeSlack

    def _serve(self, params: dict[str, str]) -> None:
        method = urlsplit(self.path).path.rsplit("/", 1)[-1]
        status, body = self.fake.answer(method, params, self.headers.get("Authorization"))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self._serve(dict(parse_qsl(urlsplit(self.path).query)))

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        params = dict(parse_qsl(urlsplit(self.path).query))
        if self.headers.get("Content-Type", "").startswith("application/json"):
            params.update({k: str(v) for k, v in json.loads(body or "{}").items()})
        else:
            params.update(dict(parse_qsl(body)))
        self._serve(params)

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass


@contextmanager
def serve(fake: FakeSlack) -> Iterator[FakeSlack]:
    handler = type("Handler", (_Handler,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/api/"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
