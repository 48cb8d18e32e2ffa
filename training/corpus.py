"""The training corpus: the store's learnable messages as `speaker: text` records.

Record format (the Darknet Slack example's): one message per line, `f"{speaker}: {text}\\n"`, where
`speaker` is the person's canonical speaker name (no blank space, no ':'), so `speaker: ` can later prompt
the model to write as that person. A message's own line breaks become `LINE_BREAK` (ASCII record
separator, U+001E) inside its record and turn back into '\\n' on output; normalisation strips U+001E from
real text, so it can only ever mean "line break inside a message". Split a corpus into records with
`text.split("\n")`, never `str.splitlines()`, which also breaks lines at U+001E.

Records come channel by channel (channels in order of their first message), each channel in time order.
The held-out split is by time: the most recent `valid_fraction` of messages go to `valid_text` (still in
channel order), so validation measures text the model has not seen.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from training.errors import EmptyCorpusError
from training.store import CorpusFilter, Store

LINE_BREAK = "\x1e"


def format_record(speaker: str, text: str) -> str:
    """One corpus record, with its trailing newline."""
    if ":" in speaker or "\n" in speaker:
        raise ValueError(f"speaker {speaker!r} is not a canonical speaker name")
    return f"{speaker}: {text.replace(chr(10), LINE_BREAK)}\n"


def parse_record(line: str) -> tuple[str, str]:
    """(speaker, text) of one record; the inverse of format_record (a trailing newline is ignored)."""
    if line.endswith("\n"):
        line = line[:-1]
    speaker, sep, text = line.partition(": ")
    if not sep or not speaker:
        raise ValueError(f"not a corpus record: {line[:60]!r}")
    return speaker, text.replace(LINE_BREAK, "\n")


@dataclass(frozen=True)
class Corpus:
    train_text: str  # records in channel order (then time), the older part
    valid_text: str  # the most recent `valid_fraction` of messages by time, records in channel order
    speakers: dict[str, int]  # canonical speaker -> number of messages in the corpus (train + valid)
    train_messages: int
    valid_messages: int


@dataclass(frozen=True)
class _Split:
    filt: CorpusFilter
    total: int
    cutoff: tuple[float, int] | None  # (created, key) of the first held-out message; None: none held out


def _plan(
    store: Store, valid_fraction: float, channels: list[str] | None, min_chars: int, include_bots: bool
) -> _Split:
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), not {valid_fraction}")
    filt = CorpusFilter(tuple(channels) if channels is not None else None, min_chars, include_bots)
    total = store.count_corpus(filt)
    if total == 0:
        what = f" in channels {', '.join(channels)}" if channels is not None else ""
        raise EmptyCorpusError(
            f"{store.path}: no learnable messages{what} (min_chars={min_chars}, bots "
            f"{'included' if include_bots else 'excluded'}, opted-out people excluded); ingest some chat first"
        )
    held_out = math.floor(total * valid_fraction + 0.5)
    if valid_fraction > 0 and total > 1:
        held_out = min(max(held_out, 1), total - 1)  # both parts non-empty whenever a split was asked for
    cutoff = store.corpus_cutoff(filt, total - held_out) if held_out else None
    return _Split(filt, total, cutoff)


def build_corpus(
    db_path: str | Path,
    *,
    valid_fraction: float = 0.05,
    channels: list[str] | None = None,
    min_chars: int = 1,
    include_bots: bool = False,
) -> Corpus:
    """Everything `mimic train` learns from. Raises EmptyCorpusError when the filters leave nothing."""
    with Store.open(db_path, create=False) as store:
        split = _plan(store, valid_fraction, channels, min_chars, include_bots)
        train: list[str] = []
        valid: list[str] = []
        speakers: Counter[str] = Counter()
        for m in store.iter_corpus(split.filt):
            held_out = split.cutoff is not None and (m.created, m.key) >= split.cutoff
            (valid if held_out else train).append(format_record(m.speaker, m.text))
            speakers[m.speaker] += 1
    return Corpus(
        train_text="".join(train),
        valid_text="".join(valid),
        speakers=dict(speakers.most_common()),
        train_messages=len(train),
        valid_messages=len(valid),
    )


def iter_training_texts(
    db_path: str | Path,
    *,
    valid_fraction: float = 0.05,
    channels: list[str] | None = None,
    min_chars: int = 1,
    include_bots: bool = False,
) -> Iterator[tuple[str, str]]:
    """(speaker, normalised text) of every message in the train split of `build_corpus` with the same
    arguments, streamed (for building a copy-check index)."""
    with Store.open(db_path, create=False) as store:
        split = _plan(store, valid_fraction, channels, min_chars, include_bots)
        for m in store.iter_corpus(split.filt):
            if split.cutoff is None or (m.created, m.key) < split.cutoff:
                yield m.speaker, m.text
