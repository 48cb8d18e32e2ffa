"""training/history_discord.py against a fake Discord REST API on 127.0.0.1 (tests/training/fake_discord.py,
with the thread listings added below), with discord.py's own HTTP client: channel and thread choice,
pagination, the shared conversion, watermarks, errors and retries (whose waits are recorded, not slept)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import discord
import pytest

from tests.training.fake_discord import (
    ADA,
    ANNOUNCE,
    BOT_ID,
    CONNECT,
    GATEWAY_MESSAGE_CONTENT,
    GENERAL,
    GRACE,
    GUILD,
    LINUS,
    LOCKED,
    NICKS,
    RANDOM,
    ROLE_DEVS,
    SECRET,
    START,
    THREAD,
    TOKEN,
    VOICE,
    FakeDiscord,
    forum_channel,
    message,
    public_thread,
    serve,
    snowflake,
    text_channel,
)
from tests.training.fixtures import dce_file, write_dce
from training import history_discord
from training.errors import ApiError
from training.history_discord import (
    ATTEMPTS,
    MAX_WAIT,
    RETRY_WAIT,
    fetch_discord_history,
    fetch_discord_history_async,
)
from training.ingest_discord import ingest_discord_exports
from training.store import ChannelRecord, Store

ARCHIVED, NEWS_THREAD, PRIVATE_THREAD, LOCKED_THREAD = (
    "820000000000000011", "820000000000000012", "820000000000000013", "820000000000000014")
STAGE = "820000000000000031"
FORUM, OLD_POST, NEW_POST, STAFF_FORUM, STAFF_POST, MEDIA, MEDIA_POST = (
    "820000000000000021", "820000000000000022", "820000000000000023", "820000000000000024",
    "820000000000000025", "820000000000000026", "820000000000000027")
THREAD_TYPES = {"public": 11, "news": 10, "private": 12}

ROWS = """SELECT c.platform_id, c.name, c.kind, m.platform_id, u.platform_id, u.speaker, u.handle, u.display_name,
                 u.avatar_url, u.is_bot, m.text, m.thread_parent, m.created, m.edited
          FROM messages m JOIN channels c ON c.id = m.channel_id JOIN users u ON u.id = m.user_id
          ORDER BY c.platform_id, m.platform_id"""


def rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(ROWS).fetchall()


def thread(cid: str, parent: str, name: str, *, kind: str = "public", archived_at: float | None = None
           ) -> dict[str, Any]:
    """A thread's payload; `archived_at` minutes after START makes it an archived one."""
    data = public_thread(cid, parent, name)
    data["type"] = THREAD_TYPES[kind]
    if archived_at is not None:
        when = (START + timedelta(minutes=archived_at)).isoformat()
        data["thread_metadata"] = {**data["thread_metadata"], "archived": True, "archive_timestamp": when}
    return data


@pytest.fixture
def fake():
    with serve(FakeDiscord()) as fake:  # #general has one active public thread, THREAD
        yield fake


@pytest.fixture
def threads(fake: FakeDiscord) -> FakeDiscord:
    """More threads: an archived one in #general, an archived news thread in #announcements, an active private
    thread in #general and an active public one in #locked, whose history the bot may not read."""
    for data in (thread(ARCHIVED, GENERAL, "old plans", archived_at=700),
                 thread(NEWS_THREAD, ANNOUNCE, "launch questions", kind="news", archived_at=710),
                 thread(PRIVATE_THREAD, GENERAL, "just us", kind="private"),
                 thread(LOCKED_THREAD, LOCKED, "locked talk")):
        fake.threads[data["id"]] = data
    fake.add(ARCHIVED, message(660, ADA, "archived talk"), message(661, GRACE, "still archived"))
    fake.add(NEWS_THREAD, message(670, LINUS, "when exactly?"))
    fake.add(PRIVATE_THREAD, message(680, ADA, "between us"))
    fake.add(LOCKED_THREAD, message(690, ADA, "locked thread talk"))
    return fake


@pytest.fixture
def forums(fake: FakeDiscord) -> FakeDiscord:
    """Forums: #ideas (between #random and #announcements in the guild's order) with an archived post and a
    newer active one, a forum hidden from @everyone with one post, and a media channel last with one post."""
    for data in (forum_channel(FORUM, "ideas", 1), forum_channel(STAFF_FORUM, "staff ideas", 7, hidden=True),
                 forum_channel(MEDIA, "gallery", 8, media=True)):
        fake.channels[data["id"]] = data
    for data in (thread(OLD_POST, FORUM, "faster search", archived_at=720), thread(NEW_POST, FORUM, "dark mode"),
                 thread(STAFF_POST, STAFF_FORUM, "raises"), thread(MEDIA_POST, MEDIA, "screenshots")):
        fake.threads[data["id"]] = data
    fake.add(OLD_POST, message(720, ADA, "search is slow"))
    fake.add(NEW_POST, message(730, GRACE, "please add dark mode"), message(731, LINUS, "yes please"))
    fake.add(STAFF_POST, message(740, ADA, "staff only"))
    fake.add(MEDIA_POST, message(750, LINUS, "look at this"))
    return fake


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "mimic.db"


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits before retries, recorded instead of slept."""
    recorded: list[float] = []

    async def sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(history_discord, "_sleep", sleep)
    return recorded


def fetch(db: Path, **options: Any):
    with Store.open(db) as store:
        return fetch_discord_history(options.pop("token", TOKEN), store, **options)


def test_first_run_fetches_public_channels_page_by_page(fake, db: Path) -> None:
    events: list[Any] = []
    report = fetch(db, progress=events.append)
    # Public text and announcement channels the bot may read and their public threads; never the private one,
    # the one whose history the bot is denied, or the voice channel.
    asked = {path.split("/")[2] for _, path, _ in fake.requests if path.endswith("/messages")}
    assert asked == {GENERAL, THREAD, RANDOM, ANNOUNCE}
    pages = fake.history_calls(GENERAL)
    assert [p["after"] for p in pages] == ["0", snowflake(99)]  # 126 messages: a full page of 100, then the rest
    assert all(p["limit"] == "100" for p in pages)
    assert report.new == 120 + 3 + 1 + 1 + 1 and report.files == 4
    assert report.skipped == {"bot": 2, "type new_member": 1}  # a bot, Mimic's own webhook post, a join
    assert (events[-1].files_done, events[-1].files_total, events[-1].messages) == (4, 4, 129)
    assert events[0].source == "#general" and events[0].messages == 100  # progress every page
    with Store.open(db) as store:
        # the newest message seen, stored or not (the join notice), so a second run asks for nothing old
        assert store.get_watermark("discord", GENERAL) == snowflake(205)
        assert store.get_watermark("discord", RANDOM) == snowflake(300)
        assert store.channel("discord", GENERAL).workspace_id == GUILD
    by_id = {r[3]: r for r in rows(db)}
    mention = by_id[snowflake(203)]
    assert mention[10] == "thanks @grace, see #random and @devs :party:"  # as an export with raw tokens reads
    assert mention[5:8] == ("ada", "ada", "Ada (work)")  # the guild nickname, as live capture has it
    edited = by_id[snowflake(202)]
    assert edited[10] == "final wording" and edited[13] is not None
    assert by_id[snowflake(204)][11] == snowflake(203)  # a reply keeps its parent
    assert all(len(fake.calls(rf"/guilds/{GUILD}/members/{who}")) == 1 for who in (ADA, GRACE, LINUS))  # once each


def test_stored_rows_equal_an_export_import_of_the_same_messages(threads, db: Path, tmp_path: Path) -> None:
    fake = threads
    fake.add(GENERAL, message(206, GRACE, f"notes in <#{ARCHIVED}>"))  # a thread fetched after this channel
    fetch(db)
    exported = tmp_path / "export.db"
    files = [write_dce(tmp_path, dce_file(cid, name, [as_exported(m) for m in fake.messages[cid]],
                                          guild={"id": GUILD, "name": "Demo Guild", "iconUrl": ""},
                                          channel_type=kind))
             for cid, name, kind in ((GENERAL, "general", "GuildTextChat"), (RANDOM, "random", "GuildTextChat"),
                                     (ANNOUNCE, "announcements", "GuildNews"),
                                     (THREAD, "release plan", "GuildPublicThread"),
                                     (ARCHIVED, "old plans", "GuildPublicThread"),
                                     (NEWS_THREAD, "launch questions", "GuildNewsThread"))]
    with Store.open(exported) as store:
        ingest_discord_exports(files, store)
    assert rows(db) == rows(exported)
    assert ("notes in #old plans",) in [r[10:11] for r in rows(db)]


def as_exported(payload: dict[str, Any]) -> dict[str, Any]:
    """What DiscordChatExporter (`--markdown false`) writes for one API message, written out by hand."""
    author = payload["author"]
    uid = author["id"]
    kinds = {0: "Default", 19: "Reply", 7: "GuildMemberJoin"}
    ref = payload.get("message_reference")
    return {
        "id": payload["id"], "type": kinds[payload["type"]], "timestamp": payload["timestamp"],
        "timestampEdited": payload["edited_timestamp"], "content": payload["content"],
        "author": {"id": uid, "name": author["username"],
                   "nickname": NICKS.get(uid) or author["global_name"] or author["username"],
                   "isBot": author["bot"] or "webhook_id" in payload,
                   "avatarUrl": f"https://cdn.discordapp.com/embed/avatars/{(int(uid) >> 22) % 6}.png",
                   "roles": [{"id": ROLE_DEVS, "name": "devs"}] if uid == ADA else []},
        "mentions": [{"id": u["id"], "name": u["username"], "nickname": u["global_name"]} for u in payload["mentions"]],
        "reference": {"messageId": ref["message_id"]} if ref else None,
    }


def test_second_run_asks_only_for_what_is_newer(fake, db: Path) -> None:
    fetch(db)
    fake.requests.clear()
    fake.add(GENERAL, message(700, GRACE, "something new"), message(701, BOT_ID, "bot again"))
    report = fetch(db)
    assert [p["after"] for p in fake.history_calls(GENERAL)] == [snowflake(205)]
    assert not fake.history_calls(RANDOM)  # its last_message_id is its watermark: nothing new to ask for
    assert (report.new, report.updated, report.unchanged) == (1, 0, 0) and report.skipped == {"bot": 1}
    with Store.open(db) as store:
        assert store.get_watermark("discord", GENERAL) == snowflake(701)
    report = fetch(db)
    assert report.stored == 0 and report.files == 4


def test_a_channel_failing_every_try_keeps_its_stored_batches_and_the_next_run_resumes(fake, db: Path,
                                                                                       waits: list[float]) -> None:
    fake.broken_after = snowflake(99)  # the second page of #general answers 503 every time
    report = fetch(db, batch_size=40)
    # tried again from its watermark, waiting longer each time, then skipped; the channels after it are fetched
    assert [p["after"] for p in fake.history_calls(GENERAL)] == ["0", snowflake(99)] + [snowflake(99)] * (ATTEMPTS - 1)
    assert waits == [RETRY_WAIT * 2 ** i for i in range(ATTEMPTS - 1)]
    assert report.warnings == [f"Discord channel #general ({GENERAL}): HTTP 503 Service Unavailable, {ATTEMPTS} "
                               "tries; skipped until the next run"]
    assert report.files == 3 and report.new == 100 + 1 + 1 + 1
    with Store.open(db) as store:
        assert store.get_watermark("discord", GENERAL) == snowflake(99)  # the batches of 40 and the last 20
    fake.broken_after = None
    fake.requests.clear()
    report = fetch(db, batch_size=40)
    assert [p["after"] for p in fake.history_calls(GENERAL)] == [snowflake(99)]
    assert report.new == 20 + 3 and not report.warnings  # the others have nothing new


def test_listed_channels_private_ones_included_and_problems_skipped_with_a_warning(fake, db: Path) -> None:
    fake.forbidden = {ANNOUNCE}
    report = fetch(db, channels=["#secret", str(LOCKED), "999999999999999999", "#nope", RANDOM, ANNOUNCE])
    # #locked is not asked: without Read Message History Discord answers with no messages, not an error
    assert {p.split("/")[2] for _, p, _ in fake.requests if p.endswith("/messages")} == {SECRET, RANDOM, ANNOUNCE}
    assert not fake.history_calls(GENERAL)
    with Store.open(db) as store:
        assert store.channel("discord", SECRET).kind == "private"
        assert store.channel("discord", LOCKED) is None
    assert report.files == 2 and report.new == 2
    warnings = "\n".join(report.warnings)
    assert f"Discord channel #locked ({LOCKED}): the bot lacks the Read Message History permission there; " \
           "skipped" in warnings
    assert f"#announcements ({ANNOUNCE}): no access (HTTP 403 Missing Access); skipped" in warnings
    assert "Discord channel 999999999999999999: not found (HTTP 404 Unknown Channel); skipped" in warnings
    assert "Discord channel '#nope' not found in the bot's guilds; skipped" in warnings
    fake.forbidden = set()
    public_and_one = fetch(db, channels=["public", SECRET])  # as `learn_channels = ["public", "<id>"]` reads
    assert public_and_one.files == 5


def test_a_thread_is_fetched_when_listed_by_id(fake, db: Path) -> None:
    report = fetch(db, channels=[THREAD])
    assert report.new == 1 and fake.history_calls(THREAD)[0]["after"] == "0"
    with Store.open(db) as store:
        assert store.channel("discord", THREAD) == ChannelRecord("discord", THREAD, "release plan", GUILD, "thread")
    assert [r[10] for r in rows(db)] == ["in a thread"]


def history_order(fake: FakeDiscord) -> list[str]:
    """The channels whose history was asked for, in the order first asked."""
    return list(dict.fromkeys(p.split("/")[2] for _, p, _ in fake.requests if p.endswith("/messages")))


def test_public_threads_are_fetched_by_default_each_once_after_their_channel(threads, db: Path) -> None:
    report = fetch(db)
    # Active and archived public threads of the public channels the bot may read, each right after its
    # channel and oldest first; not the private thread, not the thread of #locked.
    assert history_order(threads) == [GENERAL, THREAD, ARCHIVED, RANDOM, ANNOUNCE, NEWS_THREAD]
    assert all(len(threads.history_calls(t)) == 1 for t in (THREAD, ARCHIVED, NEWS_THREAD))
    assert report.files == 6 and report.new == 125 + 1 + 2 + 1 and not report.warnings
    # one listing of the guild's active threads, one of each listed channel's archived public threads
    assert threads.calls(rf"/guilds/{GUILD}/threads/active") == [{}]
    assert threads.calls(rf"/channels/{GENERAL}/threads/archived/public") == [{"limit": "100"}]
    assert {p for _, p, _ in threads.requests if "archived" in p} == {
        f"/channels/{c}/threads/archived/public" for c in (GENERAL, RANDOM, ANNOUNCE)}
    with Store.open(db) as store:
        assert store.channel("discord", ARCHIVED) == ChannelRecord("discord", ARCHIVED, "old plans", GUILD, "thread")
        assert store.channel("discord", NEWS_THREAD).kind == "thread"
        assert store.channel("discord", PRIVATE_THREAD) is None and store.channel("discord", LOCKED_THREAD) is None
        assert store.get_watermark("discord", ARCHIVED) == snowflake(661)
    stored = [r[10] for r in rows(db)]
    assert stored.count("archived talk") == 1 and "between us" not in stored


def test_a_private_thread_is_fetched_only_when_listed_by_id(threads, db: Path) -> None:
    report = fetch(db, channels=["public", "#just us"])  # a private thread's name does not reach it
    assert not threads.history_calls(PRIVATE_THREAD)
    assert "Discord channel '#just us' not found in the bot's guilds; skipped" in report.warnings
    report = fetch(db, channels=["public", PRIVATE_THREAD])
    assert [q["after"] for q in threads.history_calls(PRIVATE_THREAD)] == ["0"] and report.new == 1
    with Store.open(db) as store:
        assert store.channel("discord", PRIVATE_THREAD).kind == "private"


def test_a_public_thread_is_found_by_name(threads, db: Path) -> None:
    report = fetch(db, channels=["#old plans", "#launch questions"])
    assert history_order(threads) == [ARCHIVED, NEWS_THREAD]
    assert report.files == 2 and report.new == 3 and not report.warnings


def test_a_refused_archived_thread_listing_is_a_warning_and_the_rest_is_fetched(threads, db: Path) -> None:
    threads.threads_forbidden = {GENERAL}
    report = fetch(db)
    assert history_order(threads) == [GENERAL, THREAD, RANDOM, ANNOUNCE, NEWS_THREAD]  # the active thread too
    assert report.warnings == [f"Discord channel #general ({GENERAL}): cannot list its archived threads: "
                               "no access (HTTP 403 Missing Access); skipped"]
    assert report.files == 5


def test_forum_posts_are_fetched_by_default_as_threads_after_their_forum(forums, db: Path) -> None:
    report = fetch(db)
    # The posts of the public forums the bot may read, oldest first, where their forum stands in the guild's
    # order; never the forums themselves, nor the forum hidden from @everyone.
    assert history_order(forums) == [GENERAL, THREAD, RANDOM, OLD_POST, NEW_POST, ANNOUNCE, MEDIA_POST]
    assert report.files == 7 and report.new == 126 + 1 + 2 + 1 and not report.warnings
    assert {p for _, p, _ in forums.requests if "archived" in p} == {
        f"/channels/{c}/threads/archived/public" for c in (GENERAL, RANDOM, ANNOUNCE, FORUM, MEDIA)}
    with Store.open(db) as store:
        assert store.channel("discord", OLD_POST) == ChannelRecord("discord", OLD_POST, "faster search", GUILD,
                                                                   "thread")
        assert store.channel("discord", NEW_POST).kind == "thread"
        assert all(store.channel("discord", c) is None for c in (FORUM, MEDIA, STAFF_FORUM, STAFF_POST))
        assert store.get_watermark("discord", NEW_POST) == snowflake(731)
    assert "staff only" not in [r[10] for r in rows(db)]


def test_a_forum_listed_by_id_or_name_selects_its_posts(forums, db: Path, tmp_path: Path) -> None:
    report = fetch(db, channels=[FORUM])
    assert history_order(forums) == [OLD_POST, NEW_POST] and not forums.history_calls(FORUM)
    assert report.files == 2 and report.new == 3 and not report.warnings
    forums.requests.clear()
    report = fetch(tmp_path / "by-name.db", channels=["#staff ideas", "#gallery", STAFF_FORUM])  # private: listed
    assert history_order(forums) == [STAFF_POST, MEDIA_POST] and not report.warnings and report.new == 2
    assert forums.calls(rf"/channels/{STAFF_FORUM}/threads/archived/public") == [{"limit": "100"}]  # once
    forums.requests.clear()
    report = fetch(tmp_path / "posts.db", channels=["#dark mode", OLD_POST])  # a post is a thread like any other
    assert history_order(forums) == [NEW_POST, OLD_POST] and report.new == 3 and not report.warnings


def test_a_refused_forum_archived_listing_is_a_warning_and_its_active_posts_are_fetched(forums, db: Path) -> None:
    forums.threads_forbidden = {FORUM}
    report = fetch(db)
    assert history_order(forums) == [GENERAL, THREAD, RANDOM, NEW_POST, ANNOUNCE, MEDIA_POST]
    assert report.warnings == [f"Discord channel #ideas ({FORUM}): cannot list its archived threads: "
                               "no access (HTTP 403 Missing Access); skipped"]
    report = fetch(db, channels=[FORUM])  # listed by id: the same
    assert report.warnings == [f"Discord channel #ideas ({FORUM}): cannot list its archived threads: "
                               "no access (HTTP 403 Missing Access); skipped"]
    assert report.files == 1


def test_a_second_run_asks_nothing_of_channels_and_threads_with_nothing_new(threads, db: Path) -> None:
    fetch(db)
    threads.requests.clear()
    report = fetch(db)
    assert report.stored == 0 and report.files == 6  # each still done, from its last_message_id alone
    assert history_order(threads) == []
    threads.add(ARCHIVED, message(800, LINUS, "reopened"))
    report = fetch(db)
    assert history_order(threads) == [ARCHIVED]
    assert [q["after"] for q in threads.history_calls(ARCHIVED)] == [snowflake(661)]
    assert (report.new, report.updated, report.unchanged) == (1, 0, 0)
    assert [r[10] for r in rows(db)].count("reopened") == 1


def test_a_rate_limit_is_waited_out_by_discord_py(fake, db: Path, waits: list[float]) -> None:
    fake.fail_first = {f"/channels/{GENERAL}/messages": [429]}
    report = fetch(db)
    assert len(fake.history_calls(GENERAL)) == 3 and fake.history_calls(GENERAL)[0] == fake.history_calls(GENERAL)[1]
    assert report.new == 126 and waits == []


def test_a_503_is_tried_again_from_the_watermark(fake, db: Path, waits: list[float]) -> None:
    fake.fail_first = {f"/channels/{GENERAL}/messages": [503]}  # discord.py raises a 503 at once
    report = fetch(db)
    assert [p["after"] for p in fake.history_calls(GENERAL)] == ["0", "0", snowflake(99)]
    assert waits == [RETRY_WAIT] and report.new == 126 and report.files == 4 and not report.warnings


@pytest.mark.parametrize(("retry_after", "waited"), [("7", 7.0), ("5000", MAX_WAIT), ("0", RETRY_WAIT)])
def test_a_429_discord_py_gave_up_on_is_tried_again_after_retry_after(fake, db: Path, waits: list[float],
                                                                      retry_after: str, waited: float) -> None:
    # discord.py waits out five 429s (`retry_after` 0 here), then raises; the sixth answer is one more 429
    fake.fail_first = {f"/channels/{GENERAL}/messages": [429] * 6}
    fake.retry_after_header = retry_after
    report = fetch(db)
    assert len(fake.history_calls(GENERAL)) == 6 + 2
    assert waits == [waited]  # what Discord asked, but no less than the backoff and no more than MAX_WAIT
    assert report.new == 126 and not report.warnings


def test_a_401_while_fetching_is_still_fatal(fake, db: Path, waits: list[float]) -> None:
    fake.fail_first = {f"/channels/{RANDOM}/messages": [401]}
    with pytest.raises(ApiError, match=rf"^Discord API GET /api/v10/channels/{RANDOM}/messages failed: HTTP 401"):
        fetch(db)
    assert waits == [] and len(fake.history_calls(RANDOM)) == 1


def test_a_thread_deleted_during_the_run_is_skipped_and_leaves_the_store(fake, db: Path) -> None:
    fetch(db)
    fake.requests.clear()
    fake.add(THREAD, message(651, ADA, "last words"))
    fake.add(RANDOM, message(301, ADA, "still here"))
    fake.vanished = {THREAD}  # listed as active, then deleted before its turn
    report = fetch(db)
    assert history_order(fake) == [THREAD, RANDOM]  # the channels after it are fetched
    assert report.warnings == [f"Discord channel #release plan ({THREAD}): deleted during the run (HTTP 404 Unknown "
                               "Channel); skipped, and its 1 stored messages removed from the store"]
    assert report.files == 3 and report.new == 1
    with Store.open(db) as store:
        assert store.channel("discord", THREAD) is None and store.get_watermark("discord", THREAD) is None
    assert "in a thread" not in [r[10] for r in rows(db)]


def test_a_thread_deleted_before_anything_was_stored_is_a_warning(fake, db: Path) -> None:
    fake.vanished = {THREAD}
    report = fetch(db)
    assert report.warnings == [f"Discord channel #release plan ({THREAD}): deleted during the run (HTTP 404 Unknown "
                               "Channel); skipped"]
    assert report.files == 3 and report.new == 123 + 1 + 1


@pytest.fixture
def voice(fake: FakeDiscord) -> FakeDiscord:
    """Voice channel chat the bot may read (@everyone may connect), and a stage channel's."""
    fake.guilds[GUILD]["roles"][0]["permissions"] = str(int(fake.guilds[GUILD]["roles"][0]["permissions"]) | CONNECT)
    fake.channels[STAGE] = text_channel(STAGE, "Town Hall", 6, kind=13)
    fake.add(VOICE, message(760, GRACE, "can you hear me"))
    fake.add(STAGE, message(770, ADA, "questions at the end"))
    return fake


def test_voice_and_stage_chat_is_public_fetched_by_default_and_by_name(voice, db: Path, tmp_path: Path) -> None:
    report = fetch(db)
    assert history_order(voice) == [GENERAL, THREAD, RANDOM, ANNOUNCE, VOICE, STAGE]
    assert report.files == 6 and report.new == 126 + 2 and not report.warnings
    assert {p for _, p, _ in voice.requests if "archived" in p} == {  # voice channels have no threads
        f"/channels/{c}/threads/archived/public" for c in (GENERAL, RANDOM, ANNOUNCE)}
    with Store.open(db) as store:
        assert store.channel("discord", VOICE) == ChannelRecord("discord", VOICE, "Lounge", GUILD, "public")
        assert store.channel("discord", STAGE).kind == "public"
    voice.requests.clear()
    report = fetch(tmp_path / "named.db", channels=["#Lounge", "#Town Hall"])
    assert history_order(voice) == [VOICE, STAGE] and report.new == 2 and not report.warnings


def test_voice_chat_needs_connect_to_be_fetched_by_default(fake, db: Path) -> None:
    fake.add(VOICE, message(760, GRACE, "can you hear me"))
    fetch(db)
    assert VOICE not in history_order(fake)


def test_a_listed_channel_without_read_message_history_is_a_warning(fake, db: Path) -> None:
    for listed in ([LOCKED], ["#locked"]):
        report = fetch(db, channels=listed)
        assert report.warnings == [f"Discord channel #locked ({LOCKED}): the bot lacks the Read Message History "
                                   "permission there; skipped"]
        assert report.files == 0 and not fake.history_calls(LOCKED)


def test_archived_threads_sharing_an_archive_time_across_a_page_boundary_are_all_listed(fake, db: Path) -> None:
    # 120 archived threads, latest archive first; the 95th to the 105th share one archive time, so discord.py's
    # second page (`before` that time, exclusive) would start after them
    for i in range(120):
        tid = str(850000000000000000 + i)
        fake.threads[tid] = thread(tid, GENERAL, f"old {i}", archived_at=2000 - (95 if 95 <= i <= 105 else i))
    report = fetch(db, channels=["#old 104", "#old 119"])
    assert report.files == 2 and not report.warnings
    befores = [q.get("before") for q in fake.calls(rf"/channels/{GENERAL}/threads/archived/public")]
    tie = START + timedelta(minutes=2000 - 95)
    assert befores == [None, (tie + timedelta(milliseconds=1)).isoformat()]  # the tie again, then short: the end


def test_an_application_without_the_message_content_intent_is_refused_before_fetching(fake, db: Path) -> None:
    fake.app_flags = 0
    with pytest.raises(ApiError, match=r"^the Discord bot lacks the message content intent.*enable Message "
                                       r"Content Intent on the Bot page of the Discord developer portal and run "
                                       r"again$"):
        fetch(db)
    assert not [p for _, p, _ in fake.requests if p not in ("/users/@me", "/oauth2/applications/@me")]
    fake.app_flags = GATEWAY_MESSAGE_CONTENT  # a verified application's flag
    assert fetch(db).new == 126


async def fetch_logged_in(db: Path) -> Any:
    """fetch_discord_history_async with a client logged in by its caller, as a bot that already runs would."""
    client = discord.Client(intents=discord.Intents.default())
    try:
        await client.login(TOKEN)
        with Store.open(db) as store:
            return await fetch_discord_history_async(client, store)
    finally:
        await client.close()


def test_a_logged_in_caller_is_refused_too_unless_the_flags_are_unknown(fake, db: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fake.app_flags = 0
    with pytest.raises(ApiError, match="message content intent"):
        asyncio.run(fetch_logged_in(db))
    assert not fake.calls(r"/users/@me/guilds")
    monkeypatch.setattr(discord.Client, "application_flags", property(lambda client: None))
    assert asyncio.run(fetch_logged_in(db)).new == 126


def test_a_run_whose_new_messages_have_no_text_warns_of_nothing(fake, db: Path) -> None:
    fetch(db)
    picture = {"id": "870000000000000001", "filename": "cat.png", "size": 1, "url": "https://cdn.invalid/cat.png",
               "proxy_url": "https://cdn.invalid/cat.png"}
    fake.add(GENERAL, message(800, ADA, "", attachments=[picture]), message(801, GRACE, ""))  # an image, a forward
    report = fetch(db)
    assert report.stored == 0 and report.skipped and not report.warnings


def test_a_bad_token_and_an_api_that_is_down_are_one_line_errors(fake, db: Path) -> None:
    with pytest.raises(ApiError, match=r"^Discord refused the bot token \(HTTP 401 Unauthorized\); check DISCORD_TOKEN$"):
        fetch(db, token="not-the-token")
    fake.down = True
    with pytest.raises(ApiError, match=r"^Discord API GET /api/v10/users/@me failed: HTTP 503"):
        fetch(db)
    fake.down = False
    with Store.open(db) as store:
        assert store.message_count() == 0


def test_an_unreachable_api(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import discord

    monkeypatch.setattr(discord.http.Route, "BASE", "http://127.0.0.1:9/api/v10")
    with pytest.raises(ApiError, match=r"^Discord API: cannot connect"):
        fetch(db)
