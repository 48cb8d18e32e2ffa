import sqlite3

import pytest

from training.errors import StoreError, UnknownUserError
from training.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    ChannelRecord,
    CorpusFilter,
    MessageRecord,
    Store,
    UserRecord,
)


def _seed(store: Store) -> None:
    store.upsert_workspace("slack", "T1", "Acme")
    store.upsert_channel(ChannelRecord("slack", "C1", "general", "T1"))
    store.upsert_channel(ChannelRecord("slack", "C2", "random", "T1"))
    store.upsert_users([
        UserRecord("slack", "U1", "alice", "Alice A", "Alice Anders", "https://a.invalid/a.png", workspace_id="T1"),
        UserRecord("slack", "U2", "bob", None, "Bob Brown", workspace_id="T1"),
        UserRecord("slack", "B1", "ci", is_bot=True, workspace_id="T1"),
    ])


def _m(mid: str, user: str, text: str, created: float, channel: str = "C1", **kw) -> MessageRecord:
    return MessageRecord("slack", channel, mid, user, text, created, **kw)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "sub" / "mimic.db") as s:
        _seed(s)
        yield s


def _dump(store: Store) -> list[str]:
    return list(store._conn.iterdump())


def test_open_creates_parent_dir_wal_and_schema(tmp_path):
    path = tmp_path / "a" / "b" / "m.db"
    with Store.open(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert path.is_file()


def test_open_without_create_refuses_a_missing_file(tmp_path):
    with pytest.raises(StoreError, match="run `mimic ingest` first"):
        Store.open(tmp_path / "none.db", create=False)


def test_an_older_store_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO channels (platform, platform_id, name) VALUES ('slack', 'C1', 'general')")
    conn.execute("INSERT INTO users (platform, platform_id, handle, speaker, speaker_key) "
                 "VALUES ('slack', 'U1', 'alice', 'alice', 'alice')")
    conn.execute("INSERT INTO messages (channel_id, platform_id, user_id, text, created) VALUES (1, '1.0', 1, 'hi', 1)")
    conn.commit()
    conn.close()
    with Store.open(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s.speaker_counts() == {"alice": 1}
        indexes = {r[0] for r in s._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "messages_by_time" in indexes


def test_a_newer_store_is_refused(tmp_path):
    path = tmp_path / "new.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this Mimic"):
        Store.open(path)


def test_a_file_that_is_not_a_store(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable message store"):
        Store.open(path)


def test_upsert_is_idempotent_and_counts(store):
    batch = [_m("1.0", "U1", "one", 1.0), _m("2.0", "U2", "two", 2.0)]
    assert store.upsert_messages(batch).new == 2
    again = store.upsert_messages(batch)
    assert (again.new, again.updated, again.unchanged) == (0, 0, 2)
    assert store.message_count() == 2


def test_an_edit_replaces_the_text_and_an_older_copy_never_wins(store):
    store.upsert_messages([_m("1.0", "U1", "teh typo", 1.0)])
    result = store.upsert_messages([_m("1.0", "U1", "the typo", 1.0, edited=5.0)])
    assert (result.new, result.updated) == (0, 1)
    store.upsert_messages([_m("1.0", "U1", "teh typo", 1.0)])  # an older export again
    assert [m.text for m in store.iter_corpus()] == ["the typo"]
    store.upsert_messages([_m("1.0", "U1", "the final", 1.0, edited=9.0)])
    assert [m.text for m in store.iter_corpus()] == ["the final"]


def test_a_crash_inside_a_batch_leaves_the_store_exactly_as_before(store):
    store.upsert_messages([_m("1.0", "U1", "kept", 1.0)])
    before = _dump(store)

    def batch():
        yield _m("2.0", "U2", "lost", 2.0)
        yield _m("1.0", "U1", "changed", 1.0, edited=3.0)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        store.upsert_messages(batch())
    assert _dump(store) == before
    # The store is still usable afterwards.
    assert store.upsert_messages([_m("2.0", "U2", "fine", 2.0)]).new == 1


def test_unknown_channel_or_user_fails_the_whole_batch(store):
    before = _dump(store)
    with pytest.raises(StoreError, match="unknown channel"):
        store.upsert_messages([_m("1.0", "U1", "a", 1.0), _m("2.0", "U1", "b", 2.0, channel="C9")])
    with pytest.raises(StoreError, match="unknown user"):
        store.upsert_messages([_m("1.0", "U1", "a", 1.0), _m("2.0", "U9", "b", 2.0)])
    assert _dump(store) == before


def test_delete_message(store):
    store.upsert_messages([_m("1.0", "U1", "a", 1.0)])
    assert store.delete_message("slack", "C1", "1.0")
    assert not store.delete_message("slack", "C1", "1.0")
    assert not store.delete_message("slack", "C9", "1.0")
    assert store.message_count() == 0


def test_watermarks(store):
    assert store.get_watermark("slack", "C1") is None
    store.set_watermark("slack", "C1", "1700000000.000100")
    store.set_watermark("slack", "C1", "1700000001.000200")
    assert store.get_watermark("slack", "C1") == "1700000001.000200"
    assert store.get_watermark("slack", "C2") is None


def test_name_collisions_are_resolved_in_first_seen_order_and_reported(store):
    store.upsert_workspace("discord", "G1")
    collisions = store.upsert_users([
        UserRecord("discord", "1", "Alice", workspace_id="G1"),
        UserRecord("discord", "2", "alice", workspace_id="G1"),
        UserRecord("discord", "3", "Neeraj Tandon", workspace_id="G1"),
    ])
    assert [(c.wanted, c.speaker) for c in collisions] == [("Alice", "Alice_2"), ("alice", "alice_3")]
    assert store.user_by_platform_id("discord", "3").speaker == "Neeraj_Tandon"
    # Refreshing a known person never renames them.
    assert store.upsert_users([UserRecord("discord", "1", "zed", "Zed")]) == []
    assert store.user_by_platform_id("discord", "1").speaker == "Alice_2"
    assert store.user_by_platform_id("discord", "1").handle == "zed"


def test_refresh_keeps_fields_a_poorer_record_lacks(store):
    store.upsert_users([UserRecord("slack", "U1", None, None, None, None)])
    user = store.user_by_platform_id("slack", "U1")
    assert (user.handle, user.display_name, user.avatar_url) == ("alice", "Alice A", "https://a.invalid/a.png")
    assert user.workspace_id == "T1"


@pytest.mark.parametrize("name", ["alice", "ALICE", "@alice", "Alice A", "alice anders", "U1", " @Alice "])
def test_find_user_by_any_name(store, name):
    assert store.find_user(name).platform_id == "U1"


def test_find_user_unknown_and_ambiguous(store):
    assert store.find_user("nobody") is None
    assert store.find_user("") is None
    store.upsert_users([UserRecord("discord", "9", "someone", "Bob Brown")])
    with pytest.raises(UnknownUserError, match="fits 2 people"):
        store.find_user("bob brown")
    assert store.find_user("bob").platform_id == "U2"  # the speaker name is unique


def test_opt_out_and_back_in(store):
    store.upsert_messages([_m("1.0", "U1", "a", 1.0), _m("2.0", "U2", "b", 2.0)])
    assert store.set_opted_out("Alice A", True).opted_out
    assert store.speaker_counts() == {"bob": 1}
    assert [m.speaker for m in store.iter_corpus()] == ["bob"]
    assert "alice" not in store.stats()["users"]
    # A re-ingest of the same person does not opt them back in.
    store.upsert_users([UserRecord("slack", "U1", "alice")])
    assert store.user_by_platform_id("slack", "U1").opted_out
    store.set_opted_out("alice", False)
    assert store.speaker_counts() == {"alice": 1, "bob": 1}
    with pytest.raises(UnknownUserError):
        store.set_opted_out("nobody", True)


def test_forget_deletes_everything_and_a_reingest_does_not_bring_them_back(store):
    store.upsert_messages([_m("1.0", "U1", "secret", 1.0), _m("2.0", "U2", "b", 2.0)])
    assert store.forget("alice") == 1
    tomb = store.user_by_platform_id("slack", "U1")
    assert tomb.forgotten and tomb.opted_out
    assert (tomb.handle, tomb.display_name, tomb.real_name, tomb.avatar_url, tomb.speaker) == (None,) * 5
    assert store.find_user("alice").forgotten  # found by the name they had, only to be refused
    assert store.find_user("U1") is None
    # Re-ingest the same export: the profile is not restored and the messages are not stored.
    store.upsert_users([UserRecord("slack", "U1", "alice", "Alice A", "Alice Anders")])
    result = store.upsert_messages([_m("1.0", "U1", "secret", 1.0), _m("3.0", "U1", "new", 3.0)])
    assert (result.new, result.unchanged) == (0, 2)
    assert store.user_by_platform_id("slack", "U1").handle is None
    assert store.speaker_counts() == {"bob": 1}
    rows = store._conn.execute("SELECT count(*) FROM messages WHERE text IN ('secret', 'new')").fetchone()[0]
    assert rows == 0
    with pytest.raises(UnknownUserError):
        store.forget("alice")


def test_speaker_counts_and_stats_count_humans_only(store):
    store.upsert_messages([
        _m("1.0", "U1", "héllo", 1_700_000_000.0),
        _m("2.0", "U1", "again", 1_700_000_100.0, channel="C2"),
        _m("3.0", "U2", "hi", 1_700_086_400.0),
        _m("4.0", "B1", "deploy done", 1_700_000_050.0),
    ])
    assert store.speaker_counts() == {"alice": 2, "bob": 1}
    stats = store.stats()
    assert stats == {
        "messages": 3,
        "chars": 12,
        "users": {"alice": {"messages": 2, "chars": 10}, "bob": {"messages": 1, "chars": 2}},
        "channels": {"general": {"messages": 2}, "random": {"messages": 1}},
        "first": "2023-11-14T22:13:20+00:00",
        "last": "2023-11-15T22:13:20+00:00",
        "opted_out": 0,
    }
    store.set_opted_out("bob", True)
    stats = store.stats()
    assert stats["opted_out"] == 1 and list(stats["users"]) == ["alice"]


def test_stats_of_an_empty_store(store):
    assert store.stats() == {"messages": 0, "chars": 0, "users": {}, "channels": {}, "first": None, "last": None,
                             "opted_out": 0}


def test_channels_sharing_a_name_are_told_apart(store):
    store.upsert_channel(ChannelRecord("discord", "77", "general", "G1"))
    store.upsert_users([UserRecord("discord", "5", "dora")])
    store.upsert_messages([_m("1.0", "U1", "a", 1.0), MessageRecord("discord", "77", "9", "5", "b", 2.0)])
    assert set(store.stats()["channels"]) == {"general [C1]", "general [77]"}


def test_iter_corpus_order_and_filters(store):
    store.upsert_messages([
        _m("5.0", "U1", "random late", 5.0, channel="C2"),
        _m("3.0", "U2", "general b", 3.0),
        _m("1.0", "U1", "general a", 1.0),
        _m("2.0", "U1", "random early", 2.0, channel="C2"),
        _m("4.0", "B1", "bot says", 4.0),
        _m("6.0", "U2", "x", 6.0),
    ])
    texts = [m.text for m in store.iter_corpus()]
    assert texts == ["general a", "general b", "x", "random early", "random late"]
    assert [m.channel for m in store.iter_corpus()][:3] == ["general"] * 3
    assert "bot says" in [m.text for m in store.iter_corpus(CorpusFilter(include_bots=True))]
    assert [m.text for m in store.iter_corpus(CorpusFilter(min_chars=2))].count("x") == 0
    assert {m.channel for m in store.iter_corpus(CorpusFilter(channels=("#random",)))} == {"random"}
    assert {m.channel for m in store.iter_corpus(CorpusFilter(channels=("C1",)))} == {"general"}
    assert list(store.iter_corpus(CorpusFilter(channels=()))) == []
    assert store.count_corpus() == 5
    assert store.corpus_cutoff(CorpusFilter(), 4)[0] == 6.0
    assert store.corpus_cutoff(CorpusFilter(), 5) is None


def test_names_and_lookups_for_mentions(store):
    assert store.speaker_names("slack") == {"U1": "alice", "U2": "bob", "B1": "ci"}
    assert store.channel_names("slack") == {"C1": "general", "C2": "random"}
    assert store.channel("slack", "C1") == ChannelRecord("slack", "C1", "general", "T1", "public")
    assert store.channel("slack", "C9") is None


def test_delete_channel_takes_its_messages_and_watermark(store):
    store.upsert_messages([_m("1.0", "U1", "in one", 1.0), _m("2.0", "U1", "in one too", 2.0),
                           _m("3.0", "U2", "elsewhere", 3.0, channel="C2")])
    store.set_watermark("slack", "C1", "2.0")
    assert store.delete_channel("slack", "C1") == 2
    assert store.message_count() == 1 and store.get_watermark("slack", "C1") is None
    assert store.channel("slack", "C1") is None and store.delete_channel("slack", "C1") == 0
