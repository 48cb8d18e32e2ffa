import pytest

from tests.training.fixtures import ADAM, dce_file, dmsg, write_dce, write_slack_export
from training.errors import BadInputError
from training.ingest import detect_format, ingest_paths
from training.store import Store


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "mimic.db") as s:
        yield s


def test_detect_format(tmp_path):
    assert detect_format(write_slack_export(tmp_path)) == "slack"
    assert detect_format(write_slack_export(tmp_path, as_zip=False)) == "slack"
    nested = tmp_path / "outer"
    write_slack_export(nested, as_zip=False, name="inner")
    assert detect_format(nested) == "slack"
    dce = write_dce(tmp_path, dce_file("1", "general", []))
    assert detect_format(dce) == "discord"
    assert detect_format(dce.parent / "export.zip") == "slack"
    folder = tmp_path / "dce"
    folder.mkdir()
    write_dce(folder, dce_file("1", "general", []))
    assert detect_format(folder) == "discord"
    (tmp_path / "notes.txt").write_text("a: b\n")
    assert detect_format(tmp_path / "notes.txt") == "text"
    (tmp_path / "data.bin").write_bytes(b"\0")
    with pytest.raises(BadInputError, match="pass --format slack|discord|text"):
        detect_format(tmp_path / "data.bin")
    with pytest.raises(BadInputError, match="no such file"):
        detect_format(tmp_path / "missing.zip")


def test_mixed_sources_in_one_run(tmp_path, store):
    (tmp_path / "log.txt").write_text("zed: plain text line\n")
    events = []
    report = ingest_paths(
        store,
        [write_slack_export(tmp_path), write_dce(tmp_path, dce_file("1", "dc", [dmsg("9", ADAM, "hi")])),
         tmp_path / "log.txt"],
        progress=events.append,
    )
    assert report.files == 3 + 1 + 1
    assert {"adam", "zed", "alice"} <= set(store.speaker_counts())
    assert {e.source for e in events} >= {str(tmp_path / "export.zip"), str(tmp_path / "log.txt")}


def test_forced_format_and_speaker(tmp_path, store):
    (tmp_path / "words").write_text("hello\nworld\n")
    ingest_paths(store, [tmp_path / "words"], fmt="text", speaker="solo")
    assert store.speaker_counts() == {"solo": 2}
    with pytest.raises(BadInputError, match="--speaker is for plain text only"):
        ingest_paths(store, [write_slack_export(tmp_path)], speaker="solo")
    with pytest.raises(BadInputError, match="unknown format"):
        ingest_paths(store, [tmp_path / "words"], fmt="csv")
