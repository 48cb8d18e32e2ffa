import pytest

from training.errors import BadInputError
from training.ingest_text import ingest_text_files
from training.store import Store


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "mimic.db") as s:
        yield s


def _corpus(store: Store) -> list[tuple[str, str, str]]:
    return [(m.channel, m.speaker, m.text) for m in store.iter_corpus()]


TRANSCRIPT = """# tempest-play (The Tempest)
master: Boatswain!
boatswain: Here, master: what cheer?
master: Good! Speak to the mariners: fall to't yarely, or
    we run ourselves aground: bestir, bestir.

# two-gentlemen-play (Two Gentlemen of Verona)
valentine: Cease to persuade,
\tmy loving Proteus.
Lady Macbeth: Out, damned spot!
this line has no speaker
and neither does this one
"""


def test_named_lines_with_channels_and_continuations(tmp_path, store):
    path = tmp_path / "transcript.txt"
    path.write_text(TRANSCRIPT, encoding="utf-8")
    report = ingest_text_files([path], store)
    assert _corpus(store) == [
        ("tempest-play", "master", "Boatswain!"),
        ("tempest-play", "boatswain", "Here, master: what cheer?"),
        ("tempest-play", "master", "Good! Speak to the mariners: fall to't yarely, or\nwe run ourselves aground: bestir, bestir."),
        ("two-gentlemen-play", "valentine", "Cease to persuade,\nmy loving Proteus."),
        ("two-gentlemen-play", "Lady_Macbeth", "Out, damned spot!"),
    ]
    assert any("2 lines not in `name: text` form" in w for w in report.warnings)
    assert store.find_user("Lady Macbeth").speaker == "Lady_Macbeth"


def test_prose_is_not_taken_for_a_chat(tmp_path, store):
    """A play or a novel has a few lines with a colon; they must not become speakers, nor anything be stored."""
    chat = tmp_path / "chat.txt"
    chat.write_text("ada: hi\nbob: hello\n", encoding="utf-8")
    prose = tmp_path / "play.txt"
    prose.write_text("ACT I. SCENE 1.\nEnter KING HENRY\nGive me thy hand: I am glad\nExeunt\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"3 of 4 lines are not in `name: text` form.*--speaker NAME"):
        ingest_text_files([chat, prose], store)
    assert _corpus(store) == []
    ingest_text_files([prose], store, speaker="shakespeare")
    assert {speaker for _, speaker, _ in _corpus(store)} == {"shakespeare"}


def test_one_speaker_darknet_style(tmp_path, store):
    path = tmp_path / "tiny.txt"
    path.write_text("first line\r\n\r\nname: not a speaker here\nlast\x1e line\n", encoding="utf-8")
    ingest_text_files([path], store, speaker="ztatlock")
    assert _corpus(store) == [("tiny.txt", "ztatlock", "first line"), ("tiny.txt", "ztatlock", "name: not a speaker here"),
                              ("tiny.txt", "ztatlock", "last line")]


def test_reingesting_the_same_file_changes_nothing(tmp_path, store):
    path = tmp_path / "t.txt"
    path.write_text(TRANSCRIPT, encoding="utf-8")
    ingest_text_files([path], store)
    again = ingest_text_files([path], store)
    assert (again.new, again.updated, again.unchanged) == (0, 0, 5)


def test_line_order_is_time(tmp_path, store):
    path = tmp_path / "t.txt"
    path.write_text("a: one\nb: two\na: three\n", encoding="utf-8")
    ingest_text_files([path], store)
    assert [(m.created, m.text) for m in store.iter_corpus()] == [(1.0, "one"), (2.0, "two"), (3.0, "three")]


def test_plain_lines_without_speaker_are_refused(tmp_path, store):
    path = tmp_path / "plain.txt"
    path.write_text("just some text\nwith no names\n", encoding="utf-8")
    with pytest.raises(BadInputError, match="pass --speaker NAME"):
        ingest_text_files([path], store)


def test_missing_file_and_empty_speaker(tmp_path, store):
    with pytest.raises(BadInputError, match="no such file"):
        ingest_text_files([tmp_path / "nope.txt"], store)
    (tmp_path / "x.txt").write_text("hi\n")
    with pytest.raises(BadInputError, match="--speaker needs a name"):
        ingest_text_files([tmp_path / "x.txt"], store, speaker="  ")


def test_non_utf8_bytes_are_replaced_with_a_warning(tmp_path, store):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"ann: caf\xe9 au lait\n")
    report = ingest_text_files([path], store)
    assert any("not valid UTF-8" in w for w in report.warnings)
    assert _corpus(store) == [("latin1.txt", "ann", "caf\ufffd au lait")]


def test_a_10mb_line_is_refused_and_the_rest_stored(tmp_path, store):
    path = tmp_path / "big.txt"
    path.write_text("ann: " + "z" * 10_000_000 + "\nann: short\n", encoding="utf-8")
    report = ingest_text_files([path], store)
    assert report.skipped["too long"] == 1
    assert _corpus(store) == [("big.txt", "ann", "short")]
