import logging
import zipfile

import pytest

from tests.training.fixtures import GENERAL_EXPECTED, fresh_export, msg, write_slack_export
from training.errors import BadExportError
from training.ingest_slack import ingest_slack_export
from training.store import Store


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "mimic.db") as s:
        yield s


def _rows(store: Store, channel: str = "C01GEN") -> dict[str, tuple[str, str]]:
    rows = store._conn.execute(
        "SELECT m.platform_id, u.speaker, m.text FROM messages m JOIN users u ON u.id = m.user_id "
        "JOIN channels c ON c.id = m.channel_id WHERE c.platform_id = ?",
        (channel,),
    )
    return {mid: (speaker, text) for mid, speaker, text in rows}


def _all_rows(store: Store) -> list[tuple]:
    return store._conn.execute(
        "SELECT c.platform_id, m.platform_id, u.platform_id, m.text, m.thread_parent, m.created, m.edited "
        "FROM messages m JOIN users u ON u.id = m.user_id JOIN channels c ON c.id = m.channel_id ORDER BY 1, 2"
    ).fetchall()


@pytest.mark.parametrize("as_zip", [True, False])
def test_every_case_of_the_fixture_export(tmp_path, store, as_zip):
    report = ingest_slack_export(write_slack_export(tmp_path, as_zip=as_zip), store)
    assert _rows(store) == GENERAL_EXPECTED
    assert _rows(store, "C02RAND") == {"1704276000.000100": ("erin", "random thoughts 汉语")}
    assert report.new == len(GENERAL_EXPECTED) + 1
    assert report.skipped == {
        "subtype channel_join": 1, "subtype channel_leave": 1, "subtype channel_topic": 1,
        "subtype file_share": 1, "bot": 3, "no text": 1, "empty": 1, "private conversation": 3,
    }
    assert report.files == 3


def test_zip_and_folder_store_identical_rows(tmp_path):
    rows = []
    for as_zip in (True, False):
        with Store.open(tmp_path / f"{as_zip}.db") as s:
            ingest_slack_export(write_slack_export(tmp_path, as_zip=as_zip, name=f"e{as_zip}"), s)
            rows.append(_all_rows(s))
    assert rows[0] == rows[1]


def test_users_and_identity(tmp_path, store):
    ingest_slack_export(write_slack_export(tmp_path), store)
    bob = store.user_by_platform_id("slack", "U02BOB")
    assert (bob.handle, bob.display_name, bob.real_name, bob.speaker) == ("bob", None, "Bob Brown", "bob")
    carol = store.user_by_platform_id("slack", "U03CAROL")
    assert (carol.display_name, carol.real_name) == (None, "Carol Cole")
    alice = store.user_by_platform_id("slack", "U01ALICE")
    assert alice.avatar_url == "https://avatars.invalid/alice.png" and alice.workspace_id == "T0FIXTURE"
    assert store.user_by_platform_id("slack", "U06BOT").is_bot
    assert store.user_by_platform_id("slack", "USLACKBOT").is_bot
    assert store.find_user("汉语 हिन्दी").speaker == "erin"
    # A deleted user keeps their messages; an author missing from users.json comes from user_profile.
    assert store.speaker_counts()["dave"] == 1
    ghost = store.user_by_platform_id("slack", "U09GHOST")
    assert (ghost.handle, ghost.real_name, ghost.avatar_url) == ("ghost", "Ghost G", "g.png")


def test_a_newer_user_profile_refreshes_names_but_keeps_the_speaker(tmp_path, store):
    files = fresh_export()
    files["random/2024-01-03.json"].append(
        msg("1704276100.000200", "U09GHOST", "later", user_profile={"name": "spooky", "real_name": "Spooky G"})
    )
    ingest_slack_export(write_slack_export(tmp_path, files), store)
    ghost = store.user_by_platform_id("slack", "U09GHOST")
    assert (ghost.handle, ghost.real_name, ghost.speaker) == ("spooky", "Spooky G", "ghost")


def test_threads_span_day_files(tmp_path, store):
    ingest_slack_export(write_slack_export(tmp_path), store)
    parents = dict(store._conn.execute("SELECT platform_id, thread_parent FROM messages").fetchall())
    assert parents["1704103620.000800"] is None
    assert parents["1704190000.000100"] == "1704103620.000800"
    assert parents["1704190060.000200"] == "1704103620.000800"


def test_reingesting_the_same_export_changes_nothing(tmp_path, store):
    path = write_slack_export(tmp_path)
    ingest_slack_export(path, store)
    before = _all_rows(store)
    report = ingest_slack_export(path, store)
    assert (report.new, report.updated, report.unchanged) == (0, 0, len(before))
    assert _all_rows(store) == before


def test_overlapping_exports_keep_one_copy_and_the_edit(tmp_path, store):
    old = fresh_export()
    del old["general/2024-01-02.json"]
    old["general/2024-01-01.json"][9] = msg("1704103680.000900", "U02BOB", "fixde typo")
    new = fresh_export()
    del new["general/2024-01-01.json"][:5]
    ingest_slack_export(write_slack_export(tmp_path, new, name="new"), store)
    report = ingest_slack_export(write_slack_export(tmp_path, old, name="old"), store)
    assert report.new == 4  # only what the newer export lacked (the 5 dropped records hold 1 join)
    assert _rows(store) == GENERAL_EXPECTED  # the older, unedited copy did not overwrite the edit
    edited = store._conn.execute("SELECT edited FROM messages WHERE platform_id = '1704103680.000900'").fetchone()
    assert edited == (1704103700.0,)


def test_private_conversations_only_when_asked(tmp_path, store):
    path = write_slack_export(tmp_path)
    ingest_slack_export(path, store)
    assert {c for (c,) in store._conn.execute("SELECT platform_id FROM channels")} == {"C01GEN", "C02RAND"}
    ingest_slack_export(path, store, include_private=True)
    texts = {t for (t,) in store._conn.execute("SELECT text FROM messages")}
    assert {"private plans", "a direct message", "group dm"} <= texts
    kinds = dict(store._conn.execute("SELECT platform_id, kind FROM channels").fetchall())
    assert kinds == {"C01GEN": "public", "C02RAND": "public", "G01SEC": "private", "D01AB": "dm", "G02MP": "mpim"}


def test_bots_only_when_asked(tmp_path, store):
    ingest_slack_export(write_slack_export(tmp_path), store, include_bots=True)
    bots = store._conn.execute(
        "SELECT u.platform_id, u.speaker, m.text FROM messages m JOIN users u ON u.id = m.user_id WHERE u.is_bot"
    ).fetchall()
    assert sorted(bots) == [
        ("B99", "CI", "deploy finished"),
        ("U06BOT", "githubbot", "opened a pull request"),
        ("USLACKBOT", "slackbot", "You have been reminded"),
    ]
    assert "CI" not in store.speaker_counts()


def test_a_tombstone_removes_the_stored_parent(tmp_path, store):
    ingest_slack_export(write_slack_export(tmp_path, name="before"), store)
    files = fresh_export()
    day = files["general/2024-01-01.json"]
    day[8] = msg("1704103620.000800", "USLACKBOT", "This message was deleted.", subtype="tombstone", hidden=True,
                 thread_ts="1704103620.000800")
    report = ingest_slack_export(write_slack_export(tmp_path, files, name="after"), store)
    assert report.deleted == 1
    assert "1704103620.000800" not in _rows(store)


def test_forgotten_people_stay_forgotten_on_reingest(tmp_path, store):
    path = write_slack_export(tmp_path)
    ingest_slack_export(path, store)
    store.forget("alice")
    ingest_slack_export(path, store)
    assert "alice" not in store.speaker_counts()
    assert store.user_by_platform_id("slack", "U01ALICE").handle is None
    # Mentions of them by others are rendered with the mention's own label or the id, not their old name.
    assert all(speaker != "alice" for speaker, _ in _rows(store).values())


# ---- bad input ------------------------------------------------------------------------------------


def _zip(tmp_path, entries: dict[str, bytes], name: str = "bad.zip"):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        for entry, data in entries.items():
            archive.writestr(entry, data)
    return path


def test_a_zip_that_is_not_a_slack_export(tmp_path, store):
    with pytest.raises(BadExportError, match="no users.json or channels.json; is this a Slack export"):
        ingest_slack_export(_zip(tmp_path, {"photos/cat.jpg": b"\xff\xd8"}), store)


@pytest.mark.parametrize("evil", ["../evil.json", "general/../../evil.json", "/etc/evil.json", "C:/evil.json",
                                  "..\\evil.json"])
def test_a_zip_with_escaping_paths_is_refused(tmp_path, store, evil):
    path = _zip(tmp_path, {"users.json": b"[]", "channels.json": b"[]", evil: b"[]"})
    with pytest.raises(BadExportError, match="unsafe path"):
        ingest_slack_export(path, store)


def test_a_truncated_zip(tmp_path, store):
    whole = write_slack_export(tmp_path).read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BadExportError, match="not a readable zip"):
        ingest_slack_export(cut, store)
    assert store.message_count() == 0


def test_a_file_that_is_not_a_zip(tmp_path, store):
    path = tmp_path / "export.zip"
    path.write_text("hello")
    with pytest.raises(BadExportError, match="not a readable zip"):
        ingest_slack_export(path, store)


def test_a_broken_day_file_is_skipped_whole_with_a_warning(tmp_path, store, caplog):
    files = fresh_export()
    files["general/2024-01-02.json"] = b'[{"type": "message", "ts": "1704190000.000100", "user": "U02BOB", "text": "a"}, {"ty'
    files["random/2024-01-03.json"] = {"not": "an array"}
    with caplog.at_level(logging.WARNING):
        report = ingest_slack_export(write_slack_export(tmp_path, files), store)
    assert any("general/2024-01-02.json is not valid JSON" in w for w in report.warnings)
    assert any("random/2024-01-03.json is not a JSON array" in w for w in report.warnings)
    assert "general/2024-01-02.json" in caplog.text
    rows = _rows(store)
    assert "1704190000.000100" not in rows  # nothing from the broken day, not even its first message
    assert rows["1704103200.000100"] == ("alice", "hello world")  # the rest is stored


def test_unknown_message_shapes_are_skipped_with_a_warning(tmp_path, store):
    files = fresh_export()
    files["random/2024-01-03.json"] += [42, ["x"], {"type": "message", "text": "no ts"}, {"ts": 5, "text": "x"},
                                        msg("abc", "U05ERIN", "bad ts")]
    report = ingest_slack_export(write_slack_export(tmp_path, files), store)
    assert any("random/2024-01-03.json: 5 records of unknown shape skipped" in w for w in report.warnings)
    assert _rows(store, "C02RAND") == {"1704276000.000100": ("erin", "random thoughts 汉语")}


def test_non_utf8_bytes_are_replaced_with_a_warning(tmp_path, store):
    files = fresh_export()
    files["random/2024-01-03.json"] = (
        b'[{"type": "message", "ts": "1704276000.000100", "user": "U05ERIN", "text": "caf\xe9 ok"}]'
    )
    report = ingest_slack_export(write_slack_export(tmp_path, files), store)
    assert any("not valid UTF-8" in w for w in report.warnings)
    assert _rows(store, "C02RAND") == {"1704276000.000100": ("erin", "caf\ufffd ok")}


def test_a_10mb_message_is_refused_with_a_reason_and_the_rest_stored(tmp_path, store):
    files = fresh_export()
    files["random/2024-01-03.json"].append(msg("1704276100.000100", "U05ERIN", "x" * 10_000_000))
    report = ingest_slack_export(write_slack_export(tmp_path, files), store)
    assert report.skipped["too long"] == 1
    assert any("1704276100.000100 has 10000000 characters" in w for w in report.warnings)
    assert "1704276000.000100" in _rows(store, "C02RAND")


def test_an_export_without_channels_json_reads_folders_as_channels(tmp_path, store):
    files = fresh_export()
    for name in ("channels.json", "groups.json", "dms.json", "mpims.json"):
        del files[name]
    files = {k: v for k, v in files.items() if not k.startswith(("secret/", "D01AB/", "mpdm-"))}
    report = ingest_slack_export(write_slack_export(tmp_path, files), store)
    assert any("no channels.json" in w for w in report.warnings)
    assert _rows(store, "general")["1704103200.000100"] == ("alice", "hello world")


def test_a_folder_in_no_list_is_skipped(tmp_path, store):
    files = fresh_export()
    files["mystery/2024-01-01.json"] = [msg("1.000001", "U01ALICE", "where am I")]
    report = ingest_slack_export(write_slack_export(tmp_path, files), store)
    assert any("mystery/ is in no conversation list" in w for w in report.warnings)


def test_an_export_zipped_inside_a_folder(tmp_path, store):
    files = {f"acme-export/{k}": v for k, v in fresh_export().items()}
    ingest_slack_export(write_slack_export(tmp_path, files), store)
    assert _rows(store) == GENERAL_EXPECTED


def test_folder_named_differently_from_the_channel(tmp_path, store):
    files = fresh_export()
    files["channels.json"][1]["name_normalized"] = "random-renamed"
    files["random-renamed/2024-01-04.json"] = [msg("1704362400.000100", "U05ERIN", "renamed folder")]
    ingest_slack_export(write_slack_export(tmp_path, files), store)
    assert "1704362400.000100" in _rows(store, "C02RAND")


def test_progress_reports_files(tmp_path, store):
    events = []
    ingest_slack_export(write_slack_export(tmp_path), store, progress=events.append)
    assert events[-1].files_done == events[-1].files_total == 3
    assert events[-1].messages == len(GENERAL_EXPECTED) + 1


def test_an_enterprise_grid_export_lists_people_in_org_users_json(tmp_path, store):
    files = fresh_export()
    files["org_users.json"] = files.pop("users.json")
    ingest_slack_export(write_slack_export(tmp_path, files), store)
    assert _rows(store) == GENERAL_EXPECTED


def test_an_ingest_that_dies_halfway_keeps_whole_batches_and_a_rerun_completes_it(tmp_path, store, monkeypatch):
    import training.ingest_batch
    import training.normalize

    path = write_slack_export(tmp_path)
    monkeypatch.setattr(training.ingest_batch, "BATCH_SIZE", 4)
    real = training.normalize.slack_text

    def dying(text, *args):
        if text == "a reply":  # in the second day file: day one's 13 messages went out 4 at a time
            raise RuntimeError("power cut")
        return real(text, *args)

    monkeypatch.setattr(training.normalize, "slack_text", dying)
    with pytest.raises(RuntimeError):
        ingest_slack_export(path, store)
    assert store.message_count() == 12  # three whole batches; the 13th message's batch never committed
    assert all(GENERAL_EXPECTED[mid] == row for mid, row in _rows(store).items())
    monkeypatch.setattr(training.normalize, "slack_text", real)
    report = ingest_slack_export(path, store)
    assert report.new == len(GENERAL_EXPECTED) + 1 - 12
    assert _rows(store) == GENERAL_EXPECTED
