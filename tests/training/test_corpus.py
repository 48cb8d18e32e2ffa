import pytest

from training.corpus import LINE_BREAK, build_corpus, format_record, iter_training_texts, parse_record
from training.errors import EmptyCorpusError, StoreError
from training.normalize import clean_text
from training.store import ChannelRecord, MessageRecord, Store, UserRecord


@pytest.mark.parametrize(
    ("speaker", "text"),
    [("alice", "hello"), ("bob_2", "two\nlines\n\nand a gap"), ("汉语", "x: y: z"), ("a", ""), ("a", " lead")],
)
def test_records_round_trip(speaker, text):
    record = format_record(speaker, text)
    assert record.endswith("\n") and record.count("\n") == 1
    assert parse_record(record[:-1]) == (speaker, text)
    assert parse_record(record) == (speaker, text)


def test_record_format_is_the_darknet_slack_shape():
    assert format_record("ztatlock", "hi\nthere") == f"ztatlock: hi{LINE_BREAK}there\n"


def test_normalised_text_never_holds_the_line_break_marker():
    assert LINE_BREAK not in clean_text(f"a{LINE_BREAK}b")


@pytest.mark.parametrize("bad", ["no separator", ": no speaker", ""])
def test_parse_rejects_non_records(bad):
    with pytest.raises(ValueError):
        parse_record(bad)


def test_format_rejects_a_speaker_that_would_break_the_record():
    with pytest.raises(ValueError):
        format_record("a: b", "x")


@pytest.fixture
def db(tmp_path):
    """20 messages over two channels, one per hour; a bot, an opted-out person and a one-letter message."""
    path = tmp_path / "mimic.db"
    with Store.open(path) as store:
        store.upsert_channel(ChannelRecord("slack", "C1", "general", "T1"))
        store.upsert_channel(ChannelRecord("slack", "C2", "random", "T1"))
        store.upsert_users([UserRecord("slack", u, u.lower()) for u in ("ANN", "BEN", "CAT")])
        store.upsert_users([UserRecord("slack", "BOT", "robot", is_bot=True)])
        rows = []
        for i in range(20):
            channel = "C2" if i % 4 == 3 else "C1"
            user = ("ANN", "BEN")[i % 2]
            rows.append(MessageRecord("slack", channel, f"{i}.0", user, f"message {i}\nline two", 1000.0 + 3600 * i))
        rows += [
            MessageRecord("slack", "C1", "100.0", "BOT", "beep boop", 1000.0 + 3600 * 5.5),
            MessageRecord("slack", "C1", "101.0", "CAT", "meow, I opted out", 1000.0 + 3600 * 6.5),
            MessageRecord("slack", "C2", "102.0", "BEN", "k", 1000.0 + 3600 * 7.5),
        ]
        store.upsert_messages(rows)
        store.set_opted_out("cat", True)
    return path


def _records(text: str) -> list[tuple[str, str]]:
    # Not str.splitlines(): it also splits at U+001E, the in-record line break.
    return [parse_record(line) for line in text.split("\n") if line]


def test_splitlines_would_cut_records_at_the_line_break_marker():
    assert len(format_record("a", "x\ny").splitlines()) == 2


def test_split_by_time_in_channel_order(db):
    corpus = build_corpus(db, valid_fraction=0.25)
    train, valid = _records(corpus.train_text), _records(corpus.valid_text)
    assert (corpus.train_messages, corpus.valid_messages) == (len(train), len(valid)) == (16, 5)
    # The held-out part is the most recent messages (15..19 by time), in channel order.
    assert [t.split("\n")[0] for _, t in valid] == ["message 16", "message 17", "message 18", "message 15", "message 19"]
    # Training records: all of general first (channels ordered by their first message), then random.
    train_texts = [t.split("\n")[0] for _, t in train]
    assert train_texts[:3] == ["message 0", "message 1", "message 2"]
    assert train_texts[-4:] == ["message 3", "message 7", "k", "message 11"]
    assert train[0] == ("ann", "message 0\nline two")
    assert corpus.speakers == {"ann": 10, "ben": 11}


def test_filters(db):
    assert "robot" in build_corpus(db, include_bots=True).speakers
    assert "robot" not in build_corpus(db).speakers
    assert "cat" not in build_corpus(db, include_bots=True).speakers  # opted out: never
    assert build_corpus(db, min_chars=2).speakers == {"ann": 10, "ben": 10}
    only_random = build_corpus(db, channels=["#random"], valid_fraction=0.0)
    assert only_random.train_messages == 6 and only_random.valid_text == ""


def test_small_corpora_still_hold_something_out(db):
    corpus = build_corpus(db, channels=["C2"], valid_fraction=0.01)
    assert corpus.valid_messages == 1 and corpus.train_messages == 5


def test_iter_training_texts_is_the_train_split(db):
    corpus = build_corpus(db, valid_fraction=0.25)
    assert sorted(iter_training_texts(db, valid_fraction=0.25)) == sorted(_records(corpus.train_text))


def test_empty_corpus(db, tmp_path):
    with pytest.raises(EmptyCorpusError, match="no learnable messages in channels nowhere"):
        build_corpus(db, channels=["nowhere"])
    empty = tmp_path / "empty.db"
    Store.open(empty).close()
    with pytest.raises(EmptyCorpusError):
        build_corpus(empty)
    with pytest.raises(EmptyCorpusError):
        list(iter_training_texts(empty))


def test_a_missing_store(tmp_path):
    with pytest.raises(StoreError, match="run `mimic ingest` first"):
        build_corpus(tmp_path / "missing.db")


def test_bad_valid_fraction(db):
    with pytest.raises(ValueError):
        build_corpus(db, valid_fraction=1.0)
