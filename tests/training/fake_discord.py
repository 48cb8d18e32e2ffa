"""A fake Discord REST API (v10) on 127.0.0.1, for the history fetch, the CLI and the retraining job.

discord.py is pointed at it by replacing `discord.http.Route.BASE` (see `serve`). It serves what a REST-only
client uses: `/users/@me` (401 for any token but TOKEN), `/oauth2/applications/@me`, `/users/@me/guilds`,
`/guilds/{id}`, `/guilds/{id}/channels`, `/guilds/{id}/members/{user}`, `/channels/{id}` (404 Unknown Channel,
403 Missing Access), `/channels/{id}/messages` with Discord's `after`/`limit` semantics (the `limit`
messages right after `after`, newest first), and the thread listings: `/guilds/{id}/threads/active` and
`/channels/{id}/threads/archived/public`. Every request is recorded with its query, so tests can assert
the `after` a second run sends; `rate_limit_once` answers one request of a path with a 429 first.

A guild may have forum (type 15) and media (type 16) channels, `forum_channel`: their posts are threads in
`threads` whose `parent_id` is the forum's id, listed as any thread is, and a forum has no messages of its own
(its `/messages` answers 403 here, so a test sees a request that should not be made fail loudly).

Payload shapes follow discord-api-docs (chat-formats.md §5); message ids are snowflakes made from their
times, as Discord's are, because discord.py reads `created_at` from the id.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import discord

TOKEN = "fake-discord-bot-token"
GUILD, OTHER_GUILD = "810000000000000001", "810000000000000002"
GENERAL, RANDOM, SECRET, LOCKED, ANNOUNCE, VOICE, THREAD = (
    "820000000000000001", "820000000000000002", "820000000000000003", "820000000000000004",
    "820000000000000005", "820000000000000006", "820000000000000007")
BOT_ID, ADA, GRACE, LINUS, HOOK = ("830000000000000001", "830000000000000002", "830000000000000003",
                                   "830000000000000004", "830000000000000005")
ROLE_DEVS = "840000000000000001"
VIEW, READ_HISTORY = 1 << 10, 1 << 16
FORUM_KINDS = (15, 16)  # forum and media channels
START = datetime(2024, 1, 2, 9, 0, tzinfo=UTC)


def user(uid: str, username: str, global_name: str | None = None, *, bot: bool = False) -> dict[str, Any]:
    return {"id": uid, "username": username, "discriminator": "0", "global_name": global_name, "avatar": None,
            "bot": bot}


BOT_USER = user(BOT_ID, "mimic", bot=True)
USERS = {ADA: user(ADA, "ada", "Ada L"), GRACE: user(GRACE, "grace", "Grace H"), LINUS: user(LINUS, "linus")}
NICKS = {ADA: "Ada (work)"}  # guild nicknames: what the exporter writes as `nickname`
ROLES = {ADA: [ROLE_DEVS]}  # ada is one of the devs


def snowflake(minutes: float) -> str:
    """The id of a message sent `minutes` after START."""
    return str(discord.utils.time_snowflake(START + timedelta(minutes=minutes)))


def message(minutes: float, author: str, content: str, **extra: Any) -> dict[str, Any]:
    mid = snowflake(minutes)
    when = discord.utils.snowflake_time(int(mid)).isoformat()
    who = BOT_USER if author == BOT_ID else USERS.get(author) or user(author, "Ada (work) (mimic)", bot=True)
    return {"id": mid, "channel_id": "", "author": who, "content": content,
            "timestamp": when, "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mentions": [], "mention_roles": [], "attachments": [], "embeds": [], "pinned": False, "type": 0,
            "flags": 0, **extra}


def text_channel(cid: str, name: str, position: int, *, hidden: bool = False, bot_denied: bool = False,
                 kind: int = 0, guild: str = GUILD) -> dict[str, Any]:
    overwrites = []
    if hidden:  # @everyone (role id = guild id) may not view it: a private channel
        overwrites.append({"id": guild, "type": 0, "allow": "0", "deny": str(VIEW)})
    if bot_denied:  # public, but the bot's own member may not read its history
        overwrites.append({"id": BOT_ID, "type": 1, "allow": "0", "deny": str(READ_HISTORY)})
    data = {"id": cid, "type": kind, "name": name, "guild_id": guild, "position": position, "parent_id": None,
            "permission_overwrites": overwrites, "nsfw": False, "topic": None, "last_message_id": None,
            "rate_limit_per_user": 0}
    if kind == 2:
        data.update(bitrate=64000, user_limit=0, rtc_region=None)
    if kind in FORUM_KINDS:
        data.update(available_tags=[], default_reaction_emoji=None, default_sort_order=None,
                    default_forum_layout=0, default_auto_archive_duration=1440, flags=0)
    return data


def forum_channel(cid: str, name: str, position: int, *, hidden: bool = False, media: bool = False
                  ) -> dict[str, Any]:
    """A forum (or media) channel; its posts are threads with it as `parent_id` (see `public_thread`)."""
    return text_channel(cid, name, position, hidden=hidden, kind=16 if media else 15)


def default_messages() -> dict[str, list[dict[str, Any]]]:
    """#general: 120 messages from people (two pages), a bot post, a webhook echo of Mimic, an edited message,
    a reply, mentions of a person, a channel and a role, a custom emoji and a join notice."""
    general = [message(i, (ADA, GRACE, LINUS)[i % 3], f"message number {i}") for i in range(120)]
    general += [
        message(200, BOT_ID, "I am a bot"),
        message(201, HOOK, "Ada (work) (mimic) wrote this", webhook_id=HOOK),
        message(202, GRACE, "final wording", edited_timestamp=(START + timedelta(minutes=230)).isoformat()),
        message(203, ADA, f"thanks <@{GRACE}>, see <#{RANDOM}> and <@&{ROLE_DEVS}> <:party:123>",
                mentions=[{**USERS[GRACE], "member": {"nick": None, "roles": [], "joined_at": "2023-01-01T00:00:00+00:00",
                                                      "deaf": False, "mute": False, "flags": 0}}],
                mention_roles=[ROLE_DEVS]),
        message(204, LINUS, "agreed", type=19,
                message_reference={"message_id": snowflake(203), "channel_id": GENERAL, "guild_id": GUILD}),
        message(205, GRACE, "", type=7),  # "joined the server"
    ]
    return {GENERAL: general, RANDOM: [message(300, LINUS, "random thoughts")],
            SECRET: [message(400, ADA, "secret plans")], LOCKED: [message(500, ADA, "locked away")],
            ANNOUNCE: [message(600, GRACE, "release on friday")], THREAD: [message(650, LINUS, "in a thread")]}


def public_thread(cid: str, parent: str, name: str) -> dict[str, Any]:
    """A thread, which `/guilds/{id}/channels` does not list: the thread listings below do."""
    return {"id": cid, "type": 11, "guild_id": GUILD, "parent_id": parent, "owner_id": LINUS, "name": name,
            "message_count": 1, "member_count": 1, "rate_limit_per_user": 0, "flags": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "locked": False,
                                "archive_timestamp": START.isoformat()}}


@dataclass
class FakeDiscord:
    guilds: dict[str, dict[str, Any]] = field(default_factory=lambda: {GUILD: {
        "id": GUILD, "name": "Demo Guild", "icon": None, "owner_id": ADA, "features": [],
        "roles": [{"id": GUILD, "name": "@everyone", "permissions": str(VIEW | READ_HISTORY | 2048), "position": 0,
                   "color": 0, "hoist": False, "managed": False, "mentionable": False},
                  {"id": ROLE_DEVS, "name": "devs", "permissions": "0", "position": 1, "color": 0, "hoist": False,
                   "managed": False, "mentionable": True}],
        "emojis": [], "stickers": []}})
    channels: dict[str, dict[str, Any]] = field(default_factory=lambda: {c["id"]: c for c in (
        text_channel(GENERAL, "general", 0), text_channel(RANDOM, "random", 1),
        text_channel(SECRET, "secret", 2, hidden=True), text_channel(LOCKED, "locked", 3, bot_denied=True),
        text_channel(ANNOUNCE, "announcements", 4, kind=5), text_channel(VOICE, "Lounge", 5, kind=2))})
    threads: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        THREAD: public_thread(THREAD, GENERAL, "release plan")})
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=default_messages)
    forbidden: set[str] = field(default_factory=lambda: {LOCKED})  # channels whose history answers 403
    threads_forbidden: set[str] = field(default_factory=set)  # channels whose archived threads answer 403
    rate_limit_once: set[str] = field(default_factory=set)  # paths answered with one 429 first
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    down: bool = False  # every request answers 503
    broken_after: str | None = None  # a history request with this `after` answers 503 (the API fails midway)
    base_url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, pattern: str) -> list[dict[str, str]]:
        with self.lock:
            return [query for _, path, query in self.requests if re.fullmatch(pattern, path)]

    def history_calls(self, channel: str) -> list[dict[str, str]]:
        return self.calls(f"/channels/{channel}/messages")

    def add(self, channel: str, *messages: dict[str, Any]) -> None:
        self.messages.setdefault(channel, []).extend(messages)

    def _member(self, uid: str) -> dict[str, Any]:
        return {"user": BOT_USER if uid == BOT_ID else USERS[uid], "nick": NICKS.get(uid), "roles": ROLES.get(uid, []),
                "joined_at": "2023-01-01T00:00:00+00:00", "deaf": False, "mute": False, "flags": 0}

    def answer(self, method: str, path: str, query: dict[str, str], auth: str | None) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, query))
            if path in self.rate_limit_once:
                self.rate_limit_once.discard(path)
                return 429, {"message": "You are being rate limited.", "retry_after": 0.05, "global": False}
        if self.down:
            return 503, {"message": "upstream connect error", "code": 0}
        if auth != f"Bot {TOKEN}":
            return 401, {"message": "401: Unauthorized", "code": 0}
        if path == "/users/@me":
            return 200, BOT_USER
        if path == "/oauth2/applications/@me":
            return 200, {"id": BOT_ID, "name": "Mimic", "description": "", "icon": None, "bot_public": False,
                         "bot_require_code_grant": False, "owner": USERS[ADA], "verify_key": "00", "flags": 0}
        if path == "/users/@me/guilds":
            return 200, [{"id": g["id"], "name": g["name"], "icon": None, "owner": False, "permissions": "0",
                          "features": []} for g in self.guilds.values() if int(g["id"]) > int(query.get("after", 0))]
        if m := re.fullmatch(r"/guilds/(\d+)", path):
            guild = self.guilds.get(m[1])
            return (200, guild) if guild else (404, {"message": "Unknown Guild", "code": 10004})
        if m := re.fullmatch(r"/guilds/(\d+)/channels", path):
            return 200, [c for c in self.channels.values() if c["guild_id"] == m[1]]
        if m := re.fullmatch(r"/guilds/(\d+)/members/(\d+)", path):
            known = m[2] == BOT_ID or m[2] in USERS
            return (200, self._member(m[2])) if known else (404, {"message": "Unknown Member", "code": 10007})
        if m := re.fullmatch(r"/channels/(\d+)", path):
            channel = self.channels.get(m[1]) or self.threads.get(m[1])
            if channel is None:
                return 404, {"message": "Unknown Channel", "code": 10003}
            return 200, channel
        if m := re.fullmatch(r"/channels/(\d+)/messages", path):
            if m[1] in self.forbidden:
                return 403, {"message": "Missing Access", "code": 50001}
            if self.channels.get(m[1], {}).get("type") in FORUM_KINDS:  # a forum's messages are its posts'
                return 403, {"message": "Missing Access", "code": 50001}
            if m[1] not in self.channels and m[1] not in self.threads:
                return 404, {"message": "Unknown Channel", "code": 10003}
            if query.get("after") == self.broken_after:
                return 503, {"message": "upstream connect error", "code": 0}
            after, limit = int(query.get("after", 0)), min(int(query.get("limit", 50)), 100)
            newer = sorted((msg for msg in self.messages.get(m[1], []) if int(msg["id"]) > after),
                           key=lambda msg: int(msg["id"]))[:limit]
            return 200, [{**msg, "channel_id": m[1]} for msg in reversed(newer)]  # newest first, as Discord does
        if m := re.fullmatch(r"/guilds/(\d+)/threads/active", path):  # every active thread, private ones too
            active = [t for t in self.threads.values() if t["guild_id"] == m[1] and not t["thread_metadata"]["archived"]]
            return 200, {"threads": active, "members": []}
        if m := re.fullmatch(r"/channels/(\d+)/threads/archived/public", path):
            if m[1] in self.threads_forbidden:
                return 403, {"message": "Missing Access", "code": 50001}
            return 200, self._archived(m[1], query)
        return 404, {"message": "404: Not Found", "code": 0}

    def _archived(self, parent: str, query: dict[str, str]) -> dict[str, Any]:
        """A channel's archived public and news threads, latest archive first, before the `before` archive time,
        at most `limit`, with `has_more` (discord.py's `archived_threads` pages on the last one's archive time)."""
        def archived_at(thread: dict[str, Any]) -> datetime:
            return datetime.fromisoformat(thread["thread_metadata"]["archive_timestamp"])

        before = datetime.fromisoformat(query["before"]) if "before" in query else None
        found = sorted((t for t in self.threads.values() if t["parent_id"] == parent and t["type"] in (10, 11)
                        and t["thread_metadata"]["archived"] and (before is None or archived_at(t) < before)),
                       key=archived_at, reverse=True)
        limit = int(query.get("limit", 50))
        return {"threads": found[:limit], "members": [], "has_more": len(found) > limit}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeDiscord

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        url = urlsplit(self.path)
        path = url.path.removeprefix("/api/v10")
        status, body = self.fake.answer("GET", path, dict(parse_qsl(url.query)), self.headers.get("Authorization"))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:  # discord.py treats a 429 without Via as a Cloudflare ban, as Discord's own carry it
            self.send_header("Via", "1.1 google")
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass


@contextmanager
def serve(fake: FakeDiscord | None = None) -> Iterator[FakeDiscord]:
    """The fake answering on 127.0.0.1 and discord.py's base URL pointed at it while the block runs."""
    fake = fake or FakeDiscord()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"fake": fake}))
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/api/v10"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    real = discord.http.Route.BASE
    discord.http.Route.BASE = fake.base_url
    try:
        yield fake
    finally:
        discord.http.Route.BASE = real
        server.shutdown()
        server.server_close()
