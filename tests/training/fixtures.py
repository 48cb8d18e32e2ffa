"""Chat exports built in code, in the official formats (chat-formats.md §1 and §2).

`slack_export()` is a small workspace covering every case the importers must handle; tests change a copy
and write it with `write_slack_export` as a zip or a folder. `dce_file()` builds DiscordChatExporter JSON.
"""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path
from typing import Any

TEAM = "T0FIXTURE"


def _user(uid: str, name: str, **profile: Any) -> dict[str, Any]:
    top = {k: profile.pop(k) for k in ("deleted", "is_bot", "real_name") if k in profile}
    return {"id": uid, "team_id": TEAM, "name": name, "deleted": False, "is_bot": False,
            "profile": {"image_192": f"https://avatars.invalid/{name}.png", **profile}, **top}


def slack_users() -> list[dict[str, Any]]:
    return [
        _user("U01ALICE", "alice", display_name="Alice A", real_name="Alice Anders"),
        _user("U02BOB", "bob", display_name="", real_name="Bob Brown"),  # no display name
        _user("U03CAROL", "carol", real_name="Carol Cole"),  # 2016 shape: no display_name key at all
        _user("U04DAVE", "dave", display_name="", real_name="", deleted=True),  # deleted, still owns messages
        _user("U05ERIN", "erin", display_name="汉语 हिन्दी", real_name="Erin हिन्दी 汉语"),
        _user("U06BOT", "githubbot", bot_id="B06", is_bot=True),
        _user("USLACKBOT", "slackbot", real_name="Slackbot"),
    ]


def msg(ts: str, user: str | None, text: Any, **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"type": "message", "ts": ts}
    if user is not None:
        m["user"] = user
    if text is not None:
        m["text"] = text
    m.update(extra)
    return m


# Expected rows of the general channel after import: ts -> (speaker, text).
GENERAL_EXPECTED = {
    "1704103200.000100": ("alice", "hello world"),
    "1704103260.000200": ("bob", "hi @alice, see #random and #random"),
    "1704103320.000300": ("carol", "line one\nline two\nline three"),
    "1704103380.000400": ("alice", "1 < 2 && 3 > 2 &lt;"),
    "1704103440.000500": ("bob", "the docs and https://example.com/x?a=1&b=2 bob@example.com"),
    "1704103500.000600": ("alice", "@here @channel @everyone @channel @devs"),
    "1704103560.000700": ("carol", ":+1: 🎉 :wave::skin-tone-2:"),
    "1704103620.000800": ("alice", "thread start"),
    "1704103680.000900": ("bob", "fixed typo"),
    "1704103740.001000": ("dave", "I was here"),
    "1704103800.001100": ("ghost", "boo from @U99UNKNOWN"),
    "1704103860.001200": ("alice", "bell and rs end"),
    "1704103920.001300": ("erin", "waves"),
    "1704190000.000100": ("bob", "a reply"),
    "1704190060.000200": ("carol", "a broadcast reply"),
}


def slack_export() -> dict[str, Any]:
    """Relative path -> JSON value of a whole export."""
    general_day1 = [
        msg("1704103140.000050", "U01ALICE", "<@U01ALICE> has joined the channel", subtype="channel_join"),
        msg("1704103200.000100", "U01ALICE", "hello world", client_msg_id="c1"),
        msg("1704103260.000200", "U02BOB", "hi <@U01ALICE>, see <#C02RAND|random> and <#C02RAND>"),
        msg("1704103320.000300", "U03CAROL", "line one\nline two\r\nline three"),
        msg("1704103380.000400", "U01ALICE", "1 &lt; 2 &amp;&amp; 3 &gt; 2 &amp;lt;"),
        msg("1704103440.000500", "U02BOB",
            "<https://example.com|the docs> and <https://example.com/x?a=1&amp;b=2> <mailto:bob@example.com|bob@example.com>"),
        msg("1704103500.000600", "U01ALICE", "<!here> <!channel> <!everyone> <!group> <!subteam^S1|@devs>"),
        msg("1704103560.000700", "U03CAROL", ":+1: 🎉 :wave::skin-tone-2:"),
        msg("1704103620.000800", "U01ALICE", "thread start", thread_ts="1704103620.000800", reply_count=2,
            replies=[{"user": "U02BOB", "ts": "1704190000.000100"}]),
        msg("1704103680.000900", "U02BOB", "fixed typo", edited={"user": "U02BOB", "ts": "1704103700.000000"}),
        msg("1704103690.000950", None, "deploy finished", subtype="bot_message", bot_id="B99", username="CI"),
        msg("1704103695.000960", "U06BOT", "opened a pull request", bot_id="B06"),
        msg("1704103697.000970", "U01ALICE", "<@U01ALICE> uploaded a file: <https://x.invalid/f|f.png>",
            subtype="file_share"),
        msg("1704103740.001000", "U04DAVE", "I was here"),
        msg("1704103800.001100", "U09GHOST", "boo from <@U99UNKNOWN>",
            user_profile={"name": "ghost", "real_name": "Ghost G", "display_name": "", "image_72": "g.png"}),
        msg("1704103810.001150", "U01ALICE", None, files=[{"id": "F1"}]),  # no text at all
        msg("1704103820.001160", "U02BOB", "   "),  # nothing left after trimming
        msg("1704103830.001170", "USLACKBOT", "You have been reminded"),
        msg("1704103840.001180", "U01ALICE", "set the topic", subtype="channel_topic"),
        msg("1704103860.001200", "U01ALICE", "bell\x07 and rs\x1e end"),
        msg("1704103920.001300", "U05ERIN", "waves", subtype="me_message"),
    ]
    general_day2 = [
        msg("1704190000.000100", "U02BOB", "a reply", thread_ts="1704103620.000800", parent_user_id="U01ALICE"),
        msg("1704190060.000200", "U03CAROL", "a broadcast reply", subtype="thread_broadcast",
            thread_ts="1704103620.000800", root={"ts": "1704103620.000800"}),
        msg("1704190120.000300", "U02BOB", "<@U02BOB> has left the channel", subtype="channel_leave"),
    ]
    return {
        "users.json": slack_users(),
        "channels.json": [
            {"id": "C01GEN", "name": "general", "created": "1452837318", "is_general": True, "members": None},
            {"id": "C02RAND", "name": "random", "created": 1452837318, "members": ["U05ERIN"]},
        ],
        "groups.json": [{"id": "G01SEC", "name": "secret", "created": 1, "members": ["U01ALICE", "U02BOB"]}],
        "dms.json": [{"id": "D01AB", "created": 1, "members": ["U01ALICE", "U02BOB"]}],
        "mpims.json": [{"id": "G02MP", "name": "mpdm-alice--bob--carol-1", "is_mpim": True, "members": []}],
        "integration_logs.json": {"logs": []},
        "general/2024-01-01.json": general_day1,
        "general/2024-01-02.json": general_day2,
        "random/2024-01-03.json": [msg("1704276000.000100", "U05ERIN", "random thoughts 汉语")],
        "secret/2024-01-01.json": [msg("1704103200.000500", "U01ALICE", "private plans")],
        "D01AB/2024-01-01.json": [msg("1704103200.000600", "U02BOB", "a direct message")],
        "mpdm-alice--bob--carol-1/2024-01-01.json": [msg("1704103200.000700", "U03CAROL", "group dm")],
    }


def fresh_export() -> dict[str, Any]:
    return copy.deepcopy(slack_export())


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    # Old exports escape '/' as '\/'; readers must not care.
    return json.dumps(value, ensure_ascii=False, indent=1).replace("/", "\\/").encode("utf-8")


def write_slack_export(tmp_path: Path, files: dict[str, Any] | None = None, *, as_zip: bool = True,
                       name: str = "export") -> Path:
    """Write an export (values: JSON data, or raw bytes) as `name.zip` with directory entries, or a folder."""
    files = slack_export() if files is None else files
    if as_zip:
        path = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for folder in sorted({n.rsplit("/", 1)[0] + "/" for n in files if "/" in n}):
                archive.writestr(folder, b"")  # real exports list their folders too
            for rel, value in files.items():
                archive.writestr(rel, _encode(value))
        return path
    root = tmp_path / name
    for rel, value in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_encode(value))
    return root


# ---- DiscordChatExporter ---------------------------------------------------------------------------

GUILD = {"id": "900", "name": "Fixture Guild", "iconUrl": "https://cdn.invalid/icon.png"}


def author(uid: str, name: str, nickname: str | None = None, *, bot: bool = False, **extra: Any) -> dict[str, Any]:
    a: dict[str, Any] = {"id": uid, "name": name, "discriminator": "0000"}
    if nickname is not None:
        a["nickname"] = nickname
    a.update({"color": None, "isBot": bot, "avatarUrl": f"https://cdn.invalid/{uid}.png", **extra})
    return a


ADAM = author("201", "adam", "Adam")
BETH = author("202", "beth", "Beth B")
CARL = author("203", "carl")  # no nickname key (old DCE)
HOOK = author("299", "Mimic", bot=True)


def dmsg(mid: str, who: dict[str, Any], content: Any, *, kind: str = "Default", at: str = "2023-01-06T10:00:00+00:00",
         edited: str | None = None, **extra: Any) -> dict[str, Any]:
    m = {"id": mid, "type": kind, "timestamp": at, "timestampEdited": edited, "callEndedTimestamp": None,
         "isPinned": False, "content": content, "author": who, "attachments": [], "embeds": [], "stickers": [],
         "reactions": [], "mentions": []}
    m.update(extra)
    return m


def dce_file(channel_id: str, channel_name: str, messages: list[dict[str, Any]], *, guild: dict[str, Any] = GUILD,
             channel_type: str = "GuildTextChat", category: str = "Text Channels") -> dict[str, Any]:
    return {
        "guild": guild,
        "channel": {"id": channel_id, "type": channel_type, "categoryId": "800", "category": category,
                    "name": channel_name, "topic": None},
        "dateRange": {"after": None, "before": None},
        "messages": messages,
        "messageCount": len(messages),
    }


def write_dce(tmp_path: Path, doc: dict[str, Any] | bytes, name: str | None = None) -> Path:
    if isinstance(doc, bytes):
        path = tmp_path / (name or "raw.json")
        path.write_bytes(doc)
        return path
    channel = doc["channel"]
    path = tmp_path / (name or f"{doc['guild']['name']} - {channel['category']} - {channel['name']} [{channel['id']}].json")
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
    return path
