import json

import pytest

from tests.training.fixtures import ADAM, BETH, CARL, HOOK, author, dce_file, dmsg, write_dce
from training.errors import BadExportError, BadInputError
from training.ingest_discord import ingest_discord_exports
from training.store import Store


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "mimic.db") as s:
        yield s


def _texts(store: Store, channel: str | None = None) -> dict[str, tuple[str, str]]:
    sql = ("SELECT m.platform_id, u.speaker, m.text FROM messages m JOIN users u ON u.id = m.user_id "
           "JOIN channels c ON c.id = m.channel_id")
    args: tuple = ()
    if channel is not None:
        sql += " WHERE c.platform_id = ?"
        args = (channel,)
    return {mid: (speaker, text) for mid, speaker, text in store._conn.execute(sql, args)}


def general_file():
    deleted = author("205", "Deleted User")
    deleted2 = author("206", "Deleted User")
    return dce_file("300", "general", [
        dmsg("1001", ADAM, "Joined the server.", kind="GuildMemberJoin"),
        dmsg("1002", ADAM, "hello <@202> and <@!203>, see <#301> and <#300>", mentions=[BETH, CARL]),
        dmsg("1003", BETH, "ping <@&400> <:kekw:500> <a:dance:501> </ping:600>",
             at="2023-01-06T10:01:00.25+00:00", author={**BETH, "roles": [{"id": "400", "name": "mods"}]}),
        dmsg("1004", CARL, "@Adam rendered by DCE :pepeheart: **bold**\nsecond line 🥶", kind="Reply",
             at="2023-01-06T11:02:03.1234567+01:00", reference={"messageId": "1002", "channelId": "300"}),
        dmsg("1005", BETH, "replied without Reply type", reference={"messageId": "1003", "channelId": "300"},
             at="2023-01-06T10:03:00+00:00"),
        dmsg("1006", ADAM, "fixed it", at="2023-01-06T10:04:00+00:00", edited="2023-01-06T10:05:00+00:00"),
        dmsg("1007", HOOK, "I am a webhook", at="2023-01-06T10:05:00+00:00"),
        dmsg("1008", ADAM, "", at="2023-01-06T10:06:00+00:00", attachments=[{"id": "1", "url": "x.png"}]),
        dmsg("1009", ADAM, "Pinned a message.", kind="ChannelPinnedMessage"),
        dmsg("1010", ADAM, "slash response", kind="20"),
        dmsg("1011", deleted, "gone but said this", at="2023-01-06T10:07:00+00:00"),
        dmsg("1012", deleted2, "another ghost", at="2023-01-06T10:08:00+00:00"),
        dmsg("1002", ADAM, "hello <@202> and <@!203>, see <#301> and <#300>", mentions=[BETH, CARL]),  # duplicate
        dmsg("1013", CARL, "ctrl\x1echars\r\nend", at="2023-01-06T10:09:00+00:00"),
    ])


EXPECTED_GENERAL = {
    "1002": ("adam", "hello @beth and @carl, see #random and #general"),
    "1003": ("beth", "ping @mods :kekw: :dance: /ping"),
    "1004": ("carl", "@Adam rendered by DCE :pepeheart: **bold**\nsecond line 🥶"),
    "1005": ("beth", "replied without Reply type"),
    "1006": ("adam", "fixed it"),
    "1011": ("Deleted_User", "gone but said this"),
    "1012": ("Deleted_User_2", "another ghost"),
    "1013": ("carl", "ctrlchars\nend"),
}


def random_file():
    return dce_file("301", "random", [dmsg("2001", BETH, "over in random", at="2023-01-07T09:00:00Z")])


def test_every_case_of_the_fixture_export(tmp_path, store):
    report = ingest_discord_exports([write_dce(tmp_path, general_file()), write_dce(tmp_path, random_file())], store)
    assert _texts(store, "300") == EXPECTED_GENERAL
    assert report.skipped == {"type GuildMemberJoin": 1, "type ChannelPinnedMessage": 1, "type 20": 1, "bot": 1,
                              "empty": 1}
    assert (report.new, report.unchanged) == (9, 1)  # the duplicate id is stored once
    assert [c.speaker for c in report.collisions] == ["Deleted_User_2"]


def test_rows_keep_time_edits_and_replies(tmp_path, store):
    ingest_discord_exports([write_dce(tmp_path, general_file())], store)
    rows = {r[0]: r[1:] for r in store._conn.execute("SELECT platform_id, created, edited, thread_parent FROM messages")}
    assert rows["1003"] == (1672999260.25, None, None)
    assert rows["1004"] == (pytest.approx(1672999323.123457, abs=1e-5), None, "1002")  # +01:00 honoured
    assert rows["1005"][2] == "1003"
    assert rows["1006"][1] == 1672999500.0


def test_users_and_guild(tmp_path, store):
    ingest_discord_exports([write_dce(tmp_path, general_file())], store)
    adam = store.user_by_platform_id("discord", "201")
    assert (adam.handle, adam.display_name, adam.avatar_url, adam.workspace_id) == (
        "adam", "Adam", "https://cdn.invalid/201.png", "900")
    assert store.user_by_platform_id("discord", "203").display_name is None  # no nickname key
    assert store.find_user("Adam").speaker == "adam"
    assert store.channel("discord", "300").name == "general"


def test_channel_mentions_resolve_across_files_given_together(tmp_path, store):
    files = [write_dce(tmp_path, general_file()), write_dce(tmp_path, random_file())]
    ingest_discord_exports(files, store)
    assert "#random" in _texts(store)["1002"][1]


def test_a_folder_of_exports_and_reingest(tmp_path, store):
    folder = tmp_path / "exports"
    folder.mkdir()
    write_dce(folder, general_file())
    write_dce(folder, random_file())
    (folder / "x.json_Files").mkdir()
    (folder / "x.json_Files" / "meta.json").write_text("{}")  # DCE's media folder: not an export
    first = ingest_discord_exports([folder], store)
    again = ingest_discord_exports([folder], store)
    assert first.new == len(EXPECTED_GENERAL) + 1 and again.new == 0 and again.updated == 0


def test_bots_only_when_asked(tmp_path, store):
    ingest_discord_exports([write_dce(tmp_path, general_file())], store, include_bots=True)
    assert _texts(store)["1007"] == ("Mimic", "I am a webhook")
    assert store.user_by_platform_id("discord", "299").is_bot


@pytest.mark.parametrize("kind", ["DirectTextChat", "DirectGroupTextChat", "GuildPrivateThread"])
def test_private_conversations_only_when_asked(tmp_path, store, kind):
    guild = {"id": "0", "name": "Direct Messages"} if kind.startswith("Direct") else {"id": "900", "name": "G"}
    doc = dce_file("500", "dm", [dmsg("5001", ADAM, "just us")], guild=guild, channel_type=kind)
    path = write_dce(tmp_path, doc)
    report = ingest_discord_exports([path], store)
    assert report.skipped["private conversation"] == 1 and store.message_count() == 0
    ingest_discord_exports([path], store, include_private=True)
    assert _texts(store) == {"5001": ("adam", "just us")}


def test_a_thread_file_is_its_own_channel(tmp_path, store):
    doc = dce_file("600", "Thomas is Thomas", [dmsg("6001", BETH, "in a thread")], channel_type="GuildPublicThread",
                   category="general")
    ingest_discord_exports([write_dce(tmp_path, doc)], store)
    assert store.channel("discord", "600").kind == "thread"


def test_older_exports_without_optional_fields(tmp_path, store):
    bare = {"id": "7001", "type": "Default", "timestamp": "2019-05-20T16:09:44.209+00:00", "content": "old dce",
            "author": {"id": "201", "name": "adam"}}
    doc = {"guild": {"id": "900", "name": "G"}, "channel": {"id": "700", "name": "old"}, "messages": [bare]}
    ingest_discord_exports([write_dce(tmp_path, doc, "old.json")], store)
    assert _texts(store) == {"7001": ("adam", "old dce")}


# ---- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"[1, 2, 3]", b'{"messages": [], "guild": {"id": "1"}}', b'{"guild": {"id": "1"}}', b"{not json", b""],
)
def test_a_json_file_that_is_not_a_dce_export(tmp_path, store, raw):
    with pytest.raises(BadExportError, match="raw.json"):
        ingest_discord_exports([write_dce(tmp_path, raw)], store)


def test_a_missing_path(tmp_path, store):
    with pytest.raises(BadInputError, match="no such file"):
        ingest_discord_exports([tmp_path / "nope.json"], store)


def test_a_file_broken_halfway_keeps_what_came_before(tmp_path, store):
    text = json.dumps(general_file(), indent=2)
    cut = text[: text.index('"id": "1006"')]
    bad = write_dce(tmp_path, cut.encode(), "cut.json")
    good = write_dce(tmp_path, random_file())
    report = ingest_discord_exports([bad, good], store)
    assert any("cut.json: not valid JSON" in w for w in report.warnings)
    assert set(_texts(store)) == {"1002", "1003", "1004", "1005", "2001"}


def test_unknown_message_shapes_are_skipped(tmp_path, store):
    doc = dce_file("300", "general", [42, {"id": "1"}, {"id": "2", "type": "Default", "author": {"id": "9"},
                                      "content": "no time", "timestamp": "yesterday"}, dmsg("3", ADAM, "fine")])
    report = ingest_discord_exports([write_dce(tmp_path, doc)], store)
    assert _texts(store) == {"3": ("adam", "fine")}
    assert report.skipped["not a message"] == 1 and report.skipped["bad timestamp"] == 1


def test_non_utf8_bytes_are_replaced(tmp_path, store):
    raw = json.dumps(dce_file("300", "general", [dmsg("1", ADAM, "caf\u00e9")])).encode().replace(b"caf\\u00e9", b"caf\xe9")
    report = ingest_discord_exports([write_dce(tmp_path, raw)], store)
    assert any("not valid UTF-8" in w for w in report.warnings)
    assert _texts(store) == {"1": ("adam", "caf\ufffd")}


def test_a_10mb_message_is_refused_and_the_rest_stored(tmp_path, store):
    doc = dce_file("300", "general", [dmsg("1", ADAM, "y" * 10_000_000), dmsg("2", ADAM, "short")])
    report = ingest_discord_exports([write_dce(tmp_path, doc)], store)
    assert report.skipped["too long"] == 1
    assert _texts(store) == {"2": ("adam", "short")}
