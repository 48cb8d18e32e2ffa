"""bot/capture.py: live messages, edits and deletions stored exactly as the export importers store them."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.capture import Capture, StoreAccess
from bot.config import ChannelRules
from bot.discord_adapter import channel_record, dce_message
from training.ingest_discord import ingest_discord_exports
from training.ingest_slack import ingest_slack_export
from training.store import Store

TEAM = "T0CAPTURE"
MEMBERS = [
    {"id": "U0ADA", "team_id": TEAM, "name": "ada", "real_name": "Ada Okonkwo",
     "profile": {"display_name": "Ada", "real_name": "Ada Okonkwo", "image_192": "https://a.example/ada.png"}},
    {"id": "U0GRACE", "team_id": TEAM, "name": "grace", "real_name": "Grace L",
     "profile": {"display_name": "Grace", "real_name": "Grace L", "image_192": "https://a.example/grace.png"}},
]
MESSAGES = [
    {"type": "message", "user": "U0ADA", "text": "R&amp;D is fun, right <@U0GRACE>? &lt;3", "ts": "1704189600.000100",
     "client_msg_id": "a1"},
    {"type": "message", "user": "U0GRACE", "text": "Agenda:\n1. build\n2. <https://x.example|docs>",
     "ts": "1704189700.000200", "thread_ts": "1704189600.000100", "parent_user_id": "U0ADA"},
    {"type": "message", "user": "U0ADA", "text": "fixed typo", "ts": "1704189800.000300",
     "edited": {"user": "U0ADA", "ts": "1704189900.000000"}},
]
ROWS = """SELECT c.platform, c.platform_id, c.name, c.kind, m.platform_id, u.platform_id, u.speaker, u.handle,
                 u.display_name, u.real_name, u.avatar_url, m.text, m.thread_parent, m.created, m.edited
          FROM messages m JOIN channels c ON c.id = m.channel_id JOIN users u ON u.id = m.user_id
          ORDER BY c.platform_id, m.platform_id"""


def rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(ROWS).fetchall()


def slack_export(tmp_path: Path, messages: list[dict[str, Any]]) -> Path:
    root = tmp_path / "export"
    (root / "general").mkdir(parents=True)
    (root / "users.json").write_text(json.dumps(MEMBERS))
    (root / "channels.json").write_text(json.dumps([{"id": "C0GEN", "name": "general"}]))
    (root / "general" / "2024-01-02.json").write_text(json.dumps(messages))
    return root


def live_event(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A `message` event as the Events API delivers it: the message plus where it happened."""
    return {**message, "channel": "C0GEN", "channel_type": "channel", "event_ts": message.get("ts"), **extra}


@pytest.fixture
def live(tmp_path: Path) -> tuple[Capture, Path]:
    db = tmp_path / "live.db"
    return Capture(StoreAccess(db), ChannelRules(), ChannelRules()), db


def fetch(user_id: str) -> dict[str, Any] | None:  # users.info answers with the same member shape
    return next((m for m in MEMBERS if m["id"] == user_id), None)


def test_slack_live_capture_stores_the_rows_an_export_import_stores(tmp_path: Path, live) -> None:
    exported = tmp_path / "export.db"
    with Store.open(exported) as store:
        ingest_slack_export(slack_export(tmp_path, MESSAGES), store)
    capture, db = live
    for message in MESSAGES:
        assert capture.slack_event(live_event(message), channel_kind="public", channel_name="general",
                                   workspace_id=TEAM, fetch_user=fetch) == "stored"
    assert rows(db) == rows(exported)
    texts = [r[11] for r in rows(db)]
    assert texts[0] == "R&D is fun, right @grace? <3" and texts[1] == "Agenda:\n1. build\n2. docs"


def test_slack_edits_and_deletions(live) -> None:
    capture, db = live
    where = {"channel_kind": "public", "channel_name": "general", "workspace_id": TEAM, "fetch_user": fetch}
    capture.slack_event(live_event(MESSAGES[0]), **where)
    changed = {"type": "message", "subtype": "message_changed", "hidden": True, "channel": "C0GEN",
               "channel_type": "channel", "ts": "1704190000.000400",
               "message": {**MESSAGES[0], "text": "R&amp;D is great", "edited": {"user": "U0ADA", "ts": "1704190000.0"}},
               "previous_message": MESSAGES[0]}
    assert capture.slack_event(changed, **where) == "stored"
    (row,) = rows(db)
    assert row[11] == "R&D is great" and row[14] == 1704190000.0
    stale = {**changed, "message": {**MESSAGES[0], "text": "older copy"}}  # an out-of-order older version
    capture.slack_event(stale, **where)
    assert rows(db)[0][11] == "R&D is great"
    deleted = {"type": "message", "subtype": "message_deleted", "hidden": True, "channel": "C0GEN",
               "channel_type": "channel", "deleted_ts": MESSAGES[0]["ts"], "ts": "1704190100.000500"}
    assert capture.slack_event(deleted, **where) == "deleted"
    assert rows(db) == []
    assert capture.slack_event(deleted, **where) == "not stored"


def test_slack_thread_parent_deleted_under_its_replies(live) -> None:
    capture, db = live
    where = {"channel_kind": "public", "channel_name": "general", "workspace_id": TEAM, "fetch_user": fetch}
    capture.slack_event(live_event(MESSAGES[0]), **where)
    tombstone = {"type": "message", "subtype": "message_changed", "channel": "C0GEN", "channel_type": "channel",
                 "message": {"type": "message", "subtype": "tombstone", "hidden": True, "text": "This message was deleted.",
                             "ts": MESSAGES[0]["ts"], "thread_ts": MESSAGES[0]["ts"], "user": "USLACKBOT"}}
    assert capture.slack_event(tombstone, **where) == "deleted"
    assert rows(db) == []


@pytest.mark.parametrize(("message", "reason"), [
    # Mimic's own post coming back (slack_api/chat.postMessage.ok.json): never train on ourselves.
    ({"type": "message", "subtype": "bot_message", "bot_id": "B0MIMIC", "username": "Ada (mimic)",
      "text": "hello", "ts": "1704189600.000900"}, "bot"),
    ({"type": "message", "user": "U0APP", "bot_id": "B0APP", "text": "deployed", "ts": "1704189600.000901"}, "bot"),
    ({"type": "message", "subtype": "channel_join", "user": "U0ADA", "text": "<@U0ADA> has joined the channel",
      "ts": "1704189600.000902"}, "subtype channel_join"),
    ({"type": "message", "user": "U0ADA", "text": "   ", "ts": "1704189600.000903"}, "empty"),
])
def test_slack_skips_what_the_importer_skips(live, message: dict[str, Any], reason: str) -> None:
    capture, db = live
    outcome = capture.slack_event(live_event(message), channel_kind="public", channel_name="general",
                                  workspace_id=TEAM, fetch_user=fetch)
    assert outcome == f"skipped: {reason}"
    assert rows(db) == []


def test_learn_channels(tmp_path: Path) -> None:
    message = {"type": "message", "user": "U0ADA", "text": "psst", "ts": "1704189600.000100"}
    default = Capture(StoreAccess(tmp_path / "a.db"), ChannelRules(), ChannelRules())
    for kind in ("private", "dm", "mpim", "unknown"):
        assert default.slack_event({**message, "channel": "G0X"}, channel_kind=kind, fetch_user=fetch) == \
            "skipped: not a learn channel"
    listed = Capture(StoreAccess(tmp_path / "b.db"), ChannelRules(("public", "#leads")), ChannelRules())
    assert listed.slack_event({**message, "channel": "G0X"}, channel_kind="private", channel_name="leads",
                              fetch_user=fetch) == "stored"
    off = Capture(StoreAccess(tmp_path / "b.db"), ChannelRules(()), ChannelRules(()))
    assert off.slack_event({**message, "channel": "C0GEN"}, channel_kind="public") == "skipped: not a learn channel"
    # Learning was switched off after "psst" was stored: its deletion still reaches the store.
    deleted = {"type": "message", "subtype": "message_deleted", "channel": "G0X", "deleted_ts": message["ts"]}
    assert off.slack_event(deleted, channel_kind="private") == "deleted"


def test_store_access_gives_each_thread_its_own_connection(tmp_path: Path) -> None:
    access = StoreAccess(tmp_path / "s.db")
    seen: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            seen.append(id(access.store()))
            access.store().message_count()  # a connection used outside its thread would raise here
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(seen)) == 4 and access.store() is access.store()


def test_opting_out_someone_the_store_has_never_seen(tmp_path: Path) -> None:
    access = StoreAccess(tmp_path / "s.db")
    user = access.set_opted_out("slack", "U0NEW", True, handle="newbie")
    assert user.opted_out and user.speaker == "newbie"
    assert not access.set_opted_out("slack", "U0NEW", False).opted_out


# ---- Discord: a real discord.Message against a DiscordChatExporter file ------------------------------------

GUILD, CHANNEL = 880000000000000001, 880000000000000002
AT = datetime(2024, 1, 2, 10, 0, 0, 123000, tzinfo=UTC)
AUTHOR = {"id": "880000000000000010", "username": "ada_p", "discriminator": "0", "global_name": "Ada P",
          "avatar": None, "bot": False}


def discord_message(content: str, *, message_id: int | None = None, edited: datetime | None = None,
                    reply_to: int | None = None) -> discord.Message:
    client = discord.Client(intents=discord.Intents.default())
    state = client._connection
    guild = discord.Guild(data={"id": str(GUILD), "name": "Demo Guild"}, state=state)
    channel = discord.TextChannel(state=state, guild=guild, data={
        "id": str(CHANNEL), "type": 0, "name": "general", "position": 0, "permission_overwrites": [],
        "guild_id": str(GUILD)})
    data: dict[str, Any] = {
        "id": str(message_id or discord.utils.time_snowflake(AT)), "channel_id": str(CHANNEL), "author": AUTHOR,
        "member": {"nick": "Ada (work)", "roles": [], "joined_at": "2023-01-01T00:00:00+00:00", "deaf": False,
                   "mute": False, "flags": 0},
        "content": content, "timestamp": AT.isoformat(), "edited_timestamp": edited.isoformat() if edited else None,
        "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
        "pinned": False, "type": 19 if reply_to else 0,
    }
    if reply_to:
        data["message_reference"] = {"message_id": str(reply_to), "channel_id": str(CHANNEL), "guild_id": str(GUILD)}
    return discord.Message(state=state, channel=channel, data=data)


def dce_export(tmp_path: Path, messages: list[dict[str, Any]]) -> Path:
    path = tmp_path / "Demo Guild - general [880000000000000002].json"
    path.write_text(json.dumps({
        "guild": {"id": str(GUILD), "name": "Demo Guild", "iconUrl": ""},
        "channel": {"id": str(CHANNEL), "type": "GuildTextChat", "categoryId": None, "category": "Text",
                    "name": "general", "topic": None},
        "dateRange": {"after": None, "before": None}, "messages": messages, "messageCount": len(messages)}))
    return path


def test_discord_live_capture_stores_the_rows_an_export_import_stores(tmp_path: Path, live) -> None:
    first = discord_message("hello **team**, <:party:123> time")
    second = discord_message("agreed\nsee you", message_id=discord.utils.time_snowflake(AT) + 1,
                             edited=datetime(2024, 1, 2, 11, 0, tzinfo=UTC), reply_to=first.id)
    exported = tmp_path / "export.db"
    as_dce = [dce_message(first), dce_message(second)]
    assert as_dce[1]["type"] == "Reply" and as_dce[0]["author"]["nickname"] == "Ada (work)"
    with Store.open(exported) as store:
        ingest_discord_exports([dce_export(tmp_path, as_dce)], store)
    capture, db = live
    for message in (first, second):
        assert capture.discord_message(dce_message(message), channel=channel_record(message.channel),
                                       guild_name="Demo Guild") == "stored"
    assert rows(db) == rows(exported)
    assert [r[11] for r in rows(db)] == ["hello **team**, :party: time", "agreed\nsee you"]
    assert rows(db)[1][12] == str(first.id)  # the reply keeps its parent


def test_discord_edits_deletions_and_bots(live) -> None:
    capture, db = live
    message = discord_message("first draft")
    where = {"channel": channel_record(message.channel)}
    capture.discord_message(dce_message(message), **where)
    edited = discord_message("final text", edited=datetime(2024, 1, 2, 12, 0, tzinfo=UTC))
    assert capture.discord_message(dce_message(edited), **where) == "stored"
    assert [r[11] for r in rows(db)] == ["final text"]
    assert capture.discord_delete(str(CHANNEL), str(message.id)) == "deleted"
    assert rows(db) == []
    webhook_post = dce_message(discord_message("as someone else"))
    webhook_post["author"]["isBot"] = True  # what our own webhook posts look like when they come back
    assert capture.discord_message(webhook_post, **where) == "skipped: bot"
