import zipfile

import pytest

from tests.training.fake_slack import TOKEN, serve, workspace
from tests.training.fixtures import _user, msg
from training.errors import ApiError
from training.history_slack import fetch_slack_history, slack_client
from training.ingest_slack import ingest_slack_export
from training.store import Store


@pytest.fixture
def fake():
    with serve(workspace()) as fake:
        yield fake


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "mimic.db") as s:
        yield s


def _rows(store: Store) -> list[tuple]:
    return store._conn.execute(
        "SELECT c.platform_id, m.platform_id, u.speaker, m.text, m.thread_parent, m.edited FROM messages m "
        "JOIN users u ON u.id = m.user_id JOIN channels c ON c.id = m.channel_id ORDER BY 1, 2"
    ).fetchall()


def _fetch(fake, store, **kw):
    return fetch_slack_history(slack_client(TOKEN, fake.base_url), store, **kw)


GENERAL = [
    ("C01GEN", "1704103200.000100", "alice", "hello @bob", None, None),
    ("C01GEN", "1704103260.000200", "bob", "hi & welcome", None, None),
    ("C01GEN", "1704103320.000300", "carol", "thread start", None, None),
    ("C01GEN", "1704103380.000400", "alice", "reply one", "1704103320.000300", None),
    ("C01GEN", "1704103440.000500", "bob", "reply two", "1704103320.000300", None),
    ("C01GEN", "1704103500.000600", "carol", "reply three\nwith two lines", "1704103320.000300", None),
    ("C01GEN", "1704103620.000800", "bob", "edited text", None, 1704103630.0),
]
RANDOM = [("C02RAND", "1704200000.000100", "erin", "random thoughts", None, None)]


def test_first_run_pages_threads_and_waits_out_a_429(fake, store):
    fake.rate_limit_once = {"conversations.history"}
    events = []
    report = _fetch(fake, store, progress=events.append)
    assert _rows(store) == GENERAL + RANDOM
    assert report.skipped["subtype channel_join"] == 1 and report.skipped["bot"] == 1  # Mimic's own post too
    # Only the public channels the bot is a member of; never the private channel or the DM.
    asked = [p["channel"] for p in fake.calls("conversations.history")]
    assert set(asked) == {"C01GEN", "C02RAND"}
    assert fake.calls("conversations.history")[0] == fake.calls("conversations.history")[1]  # retried after 429
    assert all("oldest" not in p for p in fake.calls("conversations.history"))
    assert len(fake.calls("conversations.history")) == 1 + 3 + 1  # the 429, 3 pages of general, 1 of random
    assert [p["ts"] for p in fake.calls("conversations.replies")] == ["1704103320.000300"] * 2  # 2 pages
    assert all(p.get("limit") == "200" for p in fake.calls("users.list"))
    assert len(fake.calls("users.list")) == 4  # 7 users, 2 a page
    assert store.get_watermark("slack", "C01GEN") == "1704103620.000800"
    assert store.get_watermark("slack", "C02RAND") == "1704200000.000100"
    assert (events[-1].files_done, events[-1].files_total, events[-1].messages) == (2, 2, 10)


def test_second_run_asks_only_for_newer_messages(fake, store):
    _fetch(fake, store)
    fake.requests.clear()
    fake.messages["C01GEN"].append(msg("1704300000.000100", "U01ALICE", "something new"))
    report = _fetch(fake, store)
    oldest = {p["channel"]: p.get("oldest") for p in fake.calls("conversations.history")}
    assert oldest == {"C01GEN": "1704103620.000800", "C02RAND": "1704200000.000100"}
    assert (report.new, report.updated, report.unchanged) == (1, 0, 0)
    assert store.get_watermark("slack", "C01GEN") == "1704300000.000100"
    assert _rows(store)[-2] == ("C01GEN", "1704300000.000100", "alice", "something new", None, None)


def test_named_channels_include_private_ones_and_unknown_names_warn(fake, store):
    report = _fetch(fake, store, channels=["#secret", "D01AB", "nope", "C02RAND"])
    assert {r[0] for r in _rows(store)} == {"G01SEC", "D01AB", "C02RAND"}
    assert any("'nope' not found" in w for w in report.warnings)
    kinds = dict(store._conn.execute("SELECT platform_id, kind FROM channels").fetchall())
    assert kinds == {"G01SEC": "private", "D01AB": "dm", "C02RAND": "public"}


def test_a_channel_the_api_refuses_is_skipped_and_the_others_fetched(fake, store):
    report = _fetch(fake, store, channels=["C09GONE", "C02RAND"])
    assert {r[0] for r in _rows(store)} == {"C02RAND"}
    assert any("C09GONE" in w and "channel_not_found" in w for w in report.warnings)


def test_named_channels_without_im_and_mpim_scopes(fake, store):
    """Slack refuses conversations.list outright when one requested type's scope is missing."""
    fake.listable = {"public_channel", "private_channel"}
    report = _fetch(fake, store, channels=["#secret", "C02RAND"])
    assert {r[0] for r in _rows(store)} == {"G01SEC", "C02RAND"}
    assert any("the token needs im:read,mpim:read" in w for w in report.warnings)
    fake.listable = {"public_channel"}
    store2_report = _fetch(fake, store, channels=["C01GEN"])
    assert "C01GEN" in {r[0] for r in _rows(store)} and store2_report.warnings


def test_a_bad_token_is_still_an_error(fake, store):
    with pytest.raises(ApiError, match="invalid_auth"):
        fetch_slack_history(slack_client("xoxb-wrong", fake.base_url), store, channels=["C02RAND"])


def test_a_bad_token(fake, store):
    with pytest.raises(ApiError, match="auth.test failed: invalid_auth"):
        fetch_slack_history(slack_client("xoxb-wrong", fake.base_url), store)


def test_nothing_listening(store):
    with pytest.raises(ApiError, match="auth.test"):
        fetch_slack_history(slack_client(TOKEN, "http://127.0.0.1:9/api/"), store)


def test_out_zip_is_an_official_export_holding_what_was_fetched(fake, store, tmp_path):
    out = tmp_path / "fetched.zip"
    _fetch(fake, store, out_zip=out, channels=["general", "random", "secret"])
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
    assert {"users.json", "channels.json", "groups.json", "dms.json", "mpims.json"} <= names
    assert {"general/2024-01-01.json", "random/2024-01-02.json", "secret/2024-01-02.json"} <= names
    assert not (tmp_path / "fetched.zip.part").exists()
    # Importing the zip stores exactly what the API run stored.
    with Store.open(tmp_path / "from-zip.db") as again:
        ingest_slack_export(out, again, include_private=True)
        assert _rows(again) == _rows(store)


def test_a_thread_deleted_since_its_parent_was_listed_is_skipped(fake, store):
    parent = {"type": "message", "user": "U01ALICE", "text": "a thread soon gone", "ts": "1704400000.000100",
              "thread_ts": "1704400000.000100", "reply_count": 2}
    fake.messages["C02RAND"].append(parent)
    fake.gone_threads.add(parent["ts"])  # deleted since: conversations.replies says thread_not_found
    report = _fetch(fake, store)
    assert ("C02RAND", "1704400000.000100") in {r[:2] for r in _rows(store)}
    assert any("1704400000.000100" in w and "gone" in w for w in report.warnings)


def test_an_author_users_list_leaves_out_is_looked_up(fake, store):
    """Slack Connect users are not in users.list; users.info names them (else they are stored by id)."""
    fake.connect_users.append(_user("U09ZOE", "zoe", display_name="Zoe Z", real_name="Zoe Zed"))
    fake.messages["C02RAND"].append(msg("1704500000.000100", "U09ZOE", "hello from another org"))
    fake.messages["C02RAND"].append(msg("1704500001.000100", "U09GHOST", "nobody knows me"))
    report = _fetch(fake, store)
    rows = {r[1]: r[2] for r in _rows(store)}
    assert rows["1704500000.000100"] == "zoe" and rows["1704500001.000100"] == "U09GHOST"
    assert sorted(c["user"] for c in fake.calls("users.info")) == ["U09GHOST", "U09ZOE"]  # once each
    assert any("U09GHOST" in w and "users.info failed" in w for w in report.warnings)
