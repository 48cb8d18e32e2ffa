import random
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.copyindex import COPY_SPAN, CopyIndex, build_copy_index, normalize_space
from engine.errors import ModelLoadError

ROOT = Path(__file__).resolve().parents[2]


def _corpus(n: int = 3000) -> list[str]:
    rng = random.Random(1)
    alphabet = string.ascii_lowercase + "     éü🦊"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(3, 150))) for _ in range(n)]


def test_every_40_character_copy_is_caught_wherever_it_starts(tmp_path: Path) -> None:
    msgs = _corpus()
    build_copy_index(msgs, tmp_path / "i.npy", chunk_chars=10_000)  # small chunks: boundaries are exercised
    index = CopyIndex(tmp_path / "i.npy")
    long_ones = [normalize_space(m) for m in msgs if len(normalize_space(m)) >= 120][:50]  # 40 as compared
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


def test_a_copy_laid_out_differently_is_still_a_copy(tmp_path: Path) -> None:
    said = "Indeed, good madam, she hath privately\ntwice or thrice a day, ever since the death of her son"
    build_copy_index([said, "brb\n coffee"], tmp_path / "i.npy")
    index = CopyIndex(tmp_path / "i.npy")
    assert index.copies("Marry, she hath privately twice or thrice a day, ever\nsince the child?")
    assert index.copies("twice  or thrice a day,\n\never since the death")  # 40 characters once spaced out
    assert index.copies("  brb coffee\n")
    assert not index.copies("privately twice or thrice a week")  # 28 in common: under a window


def test_an_index_written_before_whitespace_was_normalised_is_read_as_it_was(tmp_path: Path) -> None:
    msgs = _corpus(300) + ["brb coffee"]
    build_copy_index(msgs, tmp_path / "i.npy")
    old = np.load(tmp_path / "i.npy")[1:]  # the same hashes without the MAGIC word: the old layout
    np.save(tmp_path / "old.npy", old)
    index = CopyIndex(tmp_path / "old.npy")
    assert not index.normalised and len(index) == len(msgs)
    assert index.copies("brb coffee") and not index.copies("brb tea")
    long_one = next(m for m in msgs if len(m) >= 60 and "  " not in m and m == m.strip())
    assert index.copies(long_one[:COPY_SPAN])


def test_an_index_rewritten_in_place_while_loaded_does_not_kill_the_process(tmp_path: Path) -> None:
    """`cp new.npy model.copyindex.npy` truncates the file under a loaded index: a memory-mapped one dies with
    SIGBUS at the next check (the whole bot, nothing logged). Run in a child process so that cannot take
    pytest down."""
    msgs = _corpus(300)
    build_copy_index(msgs, tmp_path / "i.npy")
    probe = f"""
from engine.copyindex import CopyIndex
index = CopyIndex({str(tmp_path / "i.npy")!r})
with open({str(tmp_path / "i.npy")!r}, "r+b") as f:
    f.truncate(128)
print(index.copies({msgs[0]!r}), index.copies("a new sentence that nobody in this random corpus would ever write"))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stdout.split() == ["True", "False"]


@pytest.mark.parametrize("damage", [lambda d: d[: len(d) // 2], lambda d: d[:100], lambda d: b"",
                                    lambda d: d[:-8], lambda d: b"not an npy file at all"])
def test_a_damaged_index_is_a_load_error_naming_the_file(tmp_path: Path, damage) -> None:
    build_copy_index(_corpus(300), tmp_path / "model.copyindex.npy")
    path = tmp_path / "model.copyindex.npy"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ModelLoadError, match=r"model\.copyindex\.npy: .*rebuild it with `mimic export"):
        CopyIndex(path)


def test_a_foreign_npy_is_a_load_error(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.arange(10, dtype=np.float32))
    with pytest.raises(ModelLoadError, match="not a copy index"):
        CopyIndex(tmp_path / "f.npy")
    np.save(tmp_path / "g.npy", np.array([5, 1, 1], dtype=np.uint64))  # sizes that do not add up
    with pytest.raises(ModelLoadError, match="not a copy index"):
        CopyIndex(tmp_path / "g.npy")
