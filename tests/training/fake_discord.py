"""A fake Discord REST API (v10) on 127.0.0.1, for the history fetch, the CLI and the retraining job.

discord.py is pointed at it by replacing `discord.http.Route.BASE` (see `serve`). It serves what a REST-only
client uses: `/users/@me` (401 for any token but TOKEN), `/oauth2/applications/@me` (with the application's
`flags`: the message-content intent, `app_flags`), `/users/@me/guilds`, `/guilds/{id}`, `/guilds/{id}/channels`,
`/guilds/{id}/members/{user}`, `/channels/{id}` (404 Unknown Channel), `/channels/{id}/messages` with Discord's
`after`/`limit` semantics (the `limit` messages right after `after`, newest first), and the thread listings:
`/guilds/{id}/threads/active` and `/channels/{id}/threads/archived/public`. Channels and threads carry
`last_message_id`, the newest message's id, as Discord's do.

The bot's permissions are Discord's, from @everyone's role and the channel's overwrites for @everyone and the
bot (a thread's are its parent's): without View Channel, or Connect for a voice or stage channel, its history
answers 403 Missing Access; without Read Message History it answers 200 with no messages, as Discord does (the
archived-thread listing answers 403). `forbidden` makes a history answer 403 regardless, `vanished` 404 Unknown
Channel (a channel deleted after it was listed), and `fail_first` answers a path's next requests with the
statuses given (a 429 as Discord's, with `retry_after` in the body and `retry_after_header` in Retry-After).
Every request is recorded with its query, so tests can assert the `after` a second run sends.

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
VIEW, SEND, READ_HISTORY, CONNECT = 1 << 10, 1 << 11, 1 << 16, 1 << 20
GATEWAY_MESSAGE_CONTENT, GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 18, 1 << 19  # application flags: the intent
VOICE_KINDS = (2, 13)  # voice and stage channels: their text chat also needs Connect
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
    if hidden:  # @everyone (role id = guild id) may not view it: a private channel, which the bot was added to
        overwrites.append({"id": guild, "type": 0, "allow": "0", "deny": str(VIEW)})
        overwrites.append({"id": BOT_ID, "type": 1, "allow": str(VIEW), "deny": "0"})
    if bot_denied:  # public, but the bot's own member may not read its history
        overwrites.append({"id": BOT_ID, "type": 1, "allow": "0", "deny": str(READ_HISTORY)})
    data = {"id": cid, "type": kind, "name": name, "guild_id": guild, "position": position, "parent_id": None,
            "permission_overwrites": overwrites, "nsfw": False, "topic": None, "last_message_id": None,
            "rate_limit_per_user": 0}
    if kind in VOICE_KINDS:
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
        "roles": [{"id": GUILD, "name": "@everyone", "permissions": str(VIEW | READ_HISTORY | SEND), "position": 0,
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
    app_flags: int = GATEWAY_MESSAGE_CONTENT_LIMITED  # the intent enabled, as for a bot in under 100 guilds
    forbidden: set[str] = field(default_factory=set)  # channels whose history answers 403, whatever the permissions
    vanished: set[str] = field(default_factory=set)  # channels deleted after they were listed: history answers 404
    threads_forbidden: set[str] = field(default_factory=set)  # channels whose archived threads answer 403
    fail_first: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses its next requests answer
    retry_after: float = 0.0  # a 429's `retry_after`, what discord.py sleeps before it tries again
    retry_after_header: str = "1"  # a 429's Retry-After (whole seconds, as Discord sends it)
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

    def _failure(self, status: int) -> dict[str, Any]:
        if status == 429:
            return {"message": "You are being rate limited.", "retry_after": self.retry_after, "global": False}
        if status == 401:
            return {"message": "401: Unauthorized", "code": 0}
        return {"message": "upstream connect error", "code": 0}

    def _bot_permissions(self, cid: str) -> int:
        """The bot's permissions in a channel (a thread: its parent), as Discord computes them for a member with
        only @everyone's role: the role's, then @everyone's overwrite, then the bot's own."""
        channel = self.channels.get(cid) or self.channels[self.threads[cid]["parent_id"]]
        guild = self.guilds[channel["guild_id"]]
        allowed = int(next(r["permissions"] for r in guild["roles"] if r["id"] == guild["id"]))
        for target in (guild["id"], BOT_ID):
            for overwrite in channel["permission_overwrites"]:
                if overwrite["id"] == target:
                    allowed = allowed & ~int(overwrite["deny"]) | int(overwrite["allow"])
        return allowed

    def _with_last_message(self, channel: dict[str, Any]) -> dict[str, Any]:
        newest = max((m["id"] for m in self.messages.get(channel["id"], [])), key=int, default=None)
        return {**channel, "last_message_id": newest}

    def answer(self, method: str, path: str, query: dict[str, str], auth: str | None) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, query))
            if self.fail_first.get(path):
                status = self.fail_first[path].pop(0)
                return status, self._failure(status)
        if self.down:
            return 503, {"message": "upstream connect error", "code": 0}
        if auth != f"Bot {TOKEN}":
            return 401, {"message": "401: Unauthorized", "code": 0}
        if path == "/users/@me":
            return 200, BOT_USER
        if path == "/oauth2/applications/@me":
            return 200, {"id": BOT_ID, "name": "Mimic", "description": "", "icon": None, "bot_public": False,
                         "bot_require_code_grant": False, "owner": USERS[ADA], "verify_key": "00",
                         "flags": self.app_flags}
        if path == "/users/@me/guilds":
            return 200, [{"id": g["id"], "name": g["name"], "icon": None, "owner": False, "permissions": "0",
                          "features": []} for g in self.guilds.values() if int(g["id"]) > int(query.get("after", 0))]
        if m := re.fullmatch(r"/guilds/(\d+)", path):
            guild = self.guilds.get(m[1])
            return (200, guild) if guild else (404, {"message": "Unknown Guild", "code": 10004})
        if m := re.fullmatch(r"/guilds/(\d+)/channels", path):
            return 200, [self._with_last_message(c) for c in self.channels.values() if c["guild_id"] == m[1]]
        if m := re.fullmatch(r"/guilds/(\d+)/members/(\d+)", path):
            known = m[2] == BOT_ID or m[2] in USERS
            return (200, self._member(m[2])) if known else (404, {"message": "Unknown Member", "code": 10007})
        if m := re.fullmatch(r"/channels/(\d+)", path):
            channel = self.channels.get(m[1]) or self.threads.get(m[1])
            if channel is None:
                return 404, {"message": "Unknown Channel", "code": 10003}
            return 200, self._with_last_message(channel)
        if m := re.fullmatch(r"/channels/(\d+)/messages", path):
            return self._history(m[1], query)
        if m := re.fullmatch(r"/guilds/(\d+)/threads/active", path):  # every active thread, private ones too
            active = [self._with_last_message(t) for t in self.threads.values()
                      if t["guild_id"] == m[1] and not t["thread_metadata"]["archived"]]
            return 200, {"threads": active, "members": []}
        if m := re.fullmatch(r"/channels/(\d+)/threads/archived/public", path):
            if m[1] in self.threads_forbidden or not self._bot_permissions(m[1]) & READ_HISTORY:
                return 403, {"message": "Missing Access", "code": 50001}
            return 200, self._archived(m[1], query)
        return 404, {"message": "404: Not Found", "code": 0}

    def _history(self, cid: str, query: dict[str, str]) -> tuple[int, Any]:
        """Get Channel Messages, with the answers Discord gives when the bot may not read the channel."""
        channel = self.channels.get(cid) or self.threads.get(cid)
        if channel is None or cid in self.vanished:
            return 404, {"message": "Unknown Channel", "code": 10003}
        allowed = self._bot_permissions(cid)
        voice_only = channel["type"] in VOICE_KINDS and not allowed & CONNECT
        # a forum has no messages of its own (they are its posts'): a request for them should fail loudly
        if cid in self.forbidden or channel["type"] in FORUM_KINDS or not allowed & VIEW or voice_only:
            return 403, {"message": "Missing Access", "code": 50001}
        if not allowed & READ_HISTORY:  # Discord's answer: no messages, not an error
            return 200, []
        if query.get("after") == self.broken_after:
            return 503, {"message": "upstream connect error", "code": 0}
        after, limit = int(query.get("after", 0)), min(int(query.get("limit", 50)), 100)
        newer = sorted((msg for msg in self.messages.get(cid, []) if int(msg["id"]) > after),
                       key=lambda msg: int(msg["id"]))[:limit]
        return 200, [{**msg, "channel_id": cid} for msg in reversed(newer)]  # newest first, as Discord does

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
        return {"threads": [self._with_last_message(t) for t in found[:limit]], "members": [],
                "has_more": len(found) > limit}


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
            self.send_header("Retry-After", self.fake.retry_after_header)
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
