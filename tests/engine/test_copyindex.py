import random
import string
from pathlib import Path

from engine.copyindex import COPY_SPAN, CopyIndex, build_copy_index


def _corpus(n: int = 3000) -> list[str]:
    rng = random.Random(1)
    alphabet = string.ascii_lowercase + "     éü🦊"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(3, 150))) for _ in range(n)]


def test_every_40_character_copy_is_caught_wherever_it_starts(tmp_path: Path) -> None:
    msgs = _corpus()
    build_copy_index(msgs, tmp_path / "i.npy", chunk_chars=10_000)  # small chunks: boundaries are exercised
    index = CopyIndex(tmp_path / "i.npy")
    long_ones = [m for m in msgs if len(m) >= 120][:50]
    for m in long_ones:
        for start in range(0, len(m) - COPY_SPAN + 1, 7):
            assert index.copies("» " + m[start:start + COPY_SPAN] + " «"), (m, start)


def test_whole_short_messages_are_caught_and_new_text_passes(tmp_path: Path) -> None:
    msgs = _corpus() + ["brb coffee"]
    build_copy_index(msgs, tmp_path / "i.npy")
    index = CopyIndex(tmp_path / "i.npy")
    assert index.copies("brb coffee")
    assert not index.copies("brb tea")
    assert not index.copies("a perfectly new sentence that nobody in this random corpus would ever write")
    assert len(index) == len(msgs)


def test_spans_across_two_messages_are_not_copies(tmp_path: Path) -> None:
    a, b = "x" * 10 + "abcdefghijklmnopqrst", "uvwxyzabcdefghijklmnopqrst" + "y" * 10
    build_copy_index([a, b], tmp_path / "i.npy")
    assert not CopyIndex(tmp_path / "i.npy").copies("abcdefghijklmnopqrst" + "uvwxyzabcdefghijklmnopqrst")


def test_empty_corpus(tmp_path: Path) -> None:
    build_copy_index([], tmp_path / "i.npy")
    assert not CopyIndex(tmp_path / "i.npy").copies("anything at all, really, of any length whatsoever")
