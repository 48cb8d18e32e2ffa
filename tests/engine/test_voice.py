"""The voice memory: its counts, its layout, and what it does to generation and impersonation."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelLoadError
from engine.generate import Request
from engine.impersonate import ImpersonationConfig, best_draft, impersonate
from engine.model_source import load_model
from engine.sampling import SamplingConfig
from engine.voice import DEPTH, ORDERS, VoiceMemory, build_voice_memory, forget_speaker, voice_path_for
from tests.engine.conftest import SIGN_OFF

LB = "\x1e"
RECORDS = [("ann", "hello there"), ("bob", "hello world"), ("ann", "help me\nplease"), ("bob", "hold on"),
           ("ann", "hello again")]


def _reference(records: list[tuple[str, str]], speaker: str, p: np.ndarray, context: bytes, beta: float) -> np.ndarray:
    """The Witten-Bell chain of the module docstring, counted the slow way from the speaker's own records (whose
    `name: ` is context only: never counted as a next byte)."""
    data = b"\n" * DEPTH + b"".join(f"{s}: {t.replace(chr(10), LB)}\n".encode() for s, t in records if s == speaker)
    head = len(f"{speaker}: ")
    starts = {i + 1 for i in range(DEPTH - 1, len(data) - 1) if data[i] == ord("\n")}  # records start after "\n"
    said = [i for i in range(DEPTH, len(data)) if not any(0 <= i - s < head for s in starts)]
    context = (b"\n" * DEPTH + context)[-DEPTH:]
    for k in ORDERS:
        counts = Counter(data[i] for i in said if data[i - k:i] == context[-k:])
        if not counts:
            break
        c = np.zeros(256)
        for byte, n in counts.items():
            c[byte] = n
        n, u = sum(counts.values()), len(counts)
        p = (c + beta * u * p) / (n + beta * u)
    return p


@pytest.fixture(params=[64, 1], ids=["counted", "from-the-table"])
def memory(tmp_path: Path, request: pytest.FixtureRequest) -> VoiceMemory:
    """limit 1: every context seen twice or more is read from the precomputed table instead of counted."""
    path = tmp_path / "m.voice.npz"
    assert build_voice_memory(RECORDS, path, LB, limit=request.param) == 2
    return VoiceMemory(path)


@pytest.mark.parametrize("context", [b"ann: hel", b"ann: he", b"\nann: ", b"ann: help me\x1e", b"zzz", b"o",
                                     b"bob: hold", b"there\nann: hello ", b"\nan", b"ann", b"bob: "])
@pytest.mark.parametrize("speaker", ["ann", "bob"])
def test_adapted_distribution_equals_a_direct_count(memory: VoiceMemory, speaker: str, context: bytes) -> None:
    p = np.random.default_rng(0).dirichlet(np.ones(256))
    got = memory.adapt_row(p, memory.speaker_id(speaker), context, beta=1.5)
    np.testing.assert_allclose(got, _reference(RECORDS, speaker, p, context, 1.5), rtol=1e-12)
    assert got.sum() == pytest.approx(1.0)


def test_each_speaker_has_their_own_memory(memory: VoiceMemory) -> None:
    p = np.full(256, 1 / 256)
    ann = memory.adapt_row(p, memory.speaker_id("ann"), b"ann: hel")
    assert ann[ord("l")] > 0.5 and ann[ord("p")] > 0.2  # "hello" twice, "help" once: her words, not bob's
    np.testing.assert_array_equal(memory.adapt_row(p, memory.speaker_id("bob"), b"help"), p)  # not his word
    bob = memory.adapt_row(p, memory.speaker_id("bob"), b"bob: hel")
    assert bob[ord("l")] > 0.5 and bob[ord("p")] == pytest.approx(bob[ord("x")])  # "p" only as the model has it


def test_an_unknown_speaker_is_left_to_the_model(memory: VoiceMemory) -> None:
    assert memory.speaker_id("carol") == -1 and len(memory) == 2
    probs = np.random.default_rng(1).dirichlet(np.ones(256), size=3)
    out = memory.adapt(probs, [-1, memory.speaker_id("ann"), -1], [b"ann: hel"] * 3, [2.0] * 3)
    np.testing.assert_array_equal(out[[0, 2]], probs[[0, 2]])
    assert not np.array_equal(out[1], probs[1])


def test_only_the_most_recent_bytes_of_a_speaker_are_kept(tmp_path: Path) -> None:
    records = [("ann", "old words xyzzy")] + [("ann", f"new message {i}") for i in range(50)]
    build_voice_memory(records, tmp_path / "v.npz", LB, max_bytes=200)
    memory = VoiceMemory(tmp_path / "v.npz")
    assert len(memory.keys) < 200  # the last 200 bytes, less the "ann: " of each record
    p = np.full(256, 1 / 256)
    np.testing.assert_array_equal(memory.adapt_row(p, 0, b"xyz"), p)  # the oldest message is gone
    assert memory.adapt_row(p, 0, b"new")[ord(" ")] > 0.8  # ten "new " out of ten, beta 2: 10/12


def test_a_broken_memory_file_is_a_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.voice.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="unreadable voice memory"):
        VoiceMemory(bad)
    assert voice_path_for(tmp_path / "model.onnx") == bad


@pytest.mark.parametrize("damage", [lambda d: d[: len(d) // 2], lambda d: d[:-30], lambda d: d[:200],
                                    lambda d: d[:1000] + bytes(256) + d[1256:]])
def test_a_truncated_or_damaged_memory_is_a_load_error_naming_it(tmp_path: Path, damage) -> None:
    """BadZipFile, EOFError, zlib.error...: whatever a damaged .npz raises, the caller sees a ModelLoadError."""
    path = tmp_path / "model.voice.npz"
    build_voice_memory(RECORDS * 40, path, LB)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ModelLoadError, match=r"model\.voice\.npz: unreadable voice memory"):
        VoiceMemory(path)


def test_a_memory_with_a_member_missing_is_a_load_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "v.npz", keys=np.zeros(1, np.uint64))
    with pytest.raises(ModelLoadError, match="not a voice memory written by this version"):
        VoiceMemory(tmp_path / "v.npz")


def test_a_memory_rewritten_in_place_while_loaded_keeps_working(tmp_path: Path) -> None:
    """Loaded into memory, not mapped: truncating the file under it (`cp` over it) cannot crash the bot."""
    path = tmp_path / "v.npz"
    build_voice_memory(RECORDS, path, LB)
    memory = VoiceMemory(path)
    p = np.full(256, 1 / 256)
    before = memory.adapt_row(p, memory.speaker_id("ann"), b"ann: hel")
    with open(path, "r+b") as f:
        f.truncate(64)
    np.testing.assert_array_equal(memory.adapt_row(p, memory.speaker_id("ann"), b"ann: hel"), before)


def test_voiced_and_plain_rows_batch_as_they_run_alone(chat_run: Path) -> None:
    model = load_model(chat_run / "model.onnx")
    ann = model.voice.speaker_id("ann")
    seed = b"\nann: the build"
    reqs = [Request(seed, 60, srand=1, stop=b"\n", voice=ann), Request(seed, 60, srand=2, stop=b"\n"),
            Request(seed, 60, srand=3, stop=b"\n", voice=ann, voice_beta=0.5)]
    scores: list[float] = []
    together = model.generator.generate_bytes(reqs, SamplingConfig(0.9), scores)
    for r, text, score in zip(reqs, together, scores, strict=True):
        alone: list[float] = []
        assert model.generator.generate_bytes([r], SamplingConfig(0.9), alone) == [text]
        assert alone == [score]
    assert scores[1] == 0.0 and scores[0] > 0  # a plain row has nothing to score; the memory explains ann


def test_the_voice_memory_alone_gives_a_model_without_speaker_slots_the_speakers_sign_off(
        unconditioned_chat_run: Path) -> None:
    """ann and bea differ only 70+ bytes after their name: the unconditioned model signs off at random; with
    the memory, which knows what follows "-- " in each one's messages, it signs off as the speaker."""
    model = load_model(unconditioned_chat_run / "model.onnx")
    assert not model.session.conditioned and model.voice is not None
    cfg = ImpersonationConfig(temperature=0.8, min_messages=0, max_attempts=20)

    def right(voice: bool) -> int:
        c = dataclasses.replace(cfg, voice=voice)
        ann = [m.text for m in impersonate(model, "ann", n=12, srand=4, cfg=c)]
        bea = [m.text for m in impersonate(model, "bea", n=12, srand=4, cfg=c)]
        return sum(t.endswith(SIGN_OFF["ann"]) for t in ann) + sum(t.endswith(SIGN_OFF["bea"]) for t in bea)

    assert right(voice=True) >= 22
    assert right(voice=False) <= 18


def test_the_best_acceptable_draft_is_kept(chat_run: Path) -> None:
    model = load_model(chat_run / "model.onnx")
    copy = "lol the build is green again"  # a training message: the copy guard refuses it
    drafts = [("a fine new message", 0.1), (copy, 0.9), ("", 5.0), ("another new one", 0.3), ("tie", 0.3)]
    assert best_draft(model, None, drafts) == "another new one"  # the first of equal scores
    assert best_draft(model, None, drafts, guard=False) == copy
    assert best_draft(model, None, [(copy, 1.0)]) is None


def test_drafts_are_reproducible_and_one_draft_without_voice_is_the_plain_model(chat_run: Path) -> None:
    model = load_model(chat_run / "model.onnx")
    cfg = ImpersonationConfig(temperature=0.9, min_messages=0, max_attempts=20)
    a = [m.text for m in impersonate(model, "grace", n=3, srand=8, cfg=cfg)]
    assert [m.text for m in impersonate(model, "grace", n=3, srand=8, cfg=cfg)] == a
    plain = dataclasses.replace(model, voice=None, generator=type(model.generator)(model.session))
    off = dataclasses.replace(cfg, voice=False, drafts=7)
    assert ([m.text for m in impersonate(model, "grace", n=3, srand=8, cfg=off)]
            == [m.text for m in impersonate(plain, "grace", n=3, srand=8, cfg=cfg)])


def test_under_load_each_message_gets_fewer_drafts(chat_run: Path) -> None:
    from engine.impersonate import Job, drafts_under_load, impersonate_batch

    cfg = ImpersonationConfig(temperature=0.9, min_messages=0, max_attempts=20, drafts=4, max_rows=8)
    assert [drafts_under_load(cfg, n) for n in (1, 2, 3, 4, 8, 9, 100)] == [4, 4, 2, 2, 1, 1, 1]
    model = load_model(chat_run / "model.onnx")
    busy = impersonate_batch(model, [Job("ann", srand=i) for i in range(8)], cfg)  # 8 messages, 8 rows: one draft
    one = dataclasses.replace(cfg, drafts=1)
    alone = [impersonate(model, "ann", srand=i, cfg=one)[0] for i in range(8)]
    first = [i for i in range(8) if busy[i][0].attempts == 1]  # later attempts have fewer rows, so more drafts
    assert len(first) >= 6 and all(busy[i][0].text == alone[i].text for i in first)
    idle = impersonate_batch(model, [Job("ann", srand=i) for i in range(2)], cfg)  # 2 messages: 4 drafts each
    assert [r[0].text for r in idle] == [impersonate(model, "ann", srand=i, cfg=cfg)[0].text for i in range(2)]


def test_forgetting_a_speaker_removes_their_words_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "v.npz"
    build_voice_memory(RECORDS, path, LB, limit=1)
    p = np.random.default_rng(2).dirichlet(np.ones(256))
    before = VoiceMemory(path)
    bob_before = before.adapt_row(p, before.speaker_id("bob"), b"bob: hel")
    assert forget_speaker(path, "ann") and not forget_speaker(path, "ann") and not forget_speaker(path, "carol")
    after = VoiceMemory(path)
    assert after.speaker_id("ann") == -1 and len(after) == 1
    assert len(after.keys) == sum(len(f"{t}\n") for s, t in RECORDS if s == "bob")  # only bob's words left
    np.testing.assert_array_equal(after.adapt_row(p, after.speaker_id("bob"), b"bob: hel"), bob_before)
    np.testing.assert_array_equal(after.adapt_row(p, 0, b"ann: hel"), p)  # ann's old id: nothing there


def test_the_name_opening_a_record_is_context_not_something_to_say(memory: VoiceMemory) -> None:
    """Every record opens with "ann: ": counted, the memory would answer "ann" with ": " mid-message."""
    p = np.full(256, 1 / 256)
    np.testing.assert_array_equal(memory.adapt_row(p, memory.speaker_id("ann"), b"hi ann"), p)
    assert memory.adapt_row(p, memory.speaker_id("ann"), b"\nann: ")[ord("h")] > 0.5  # how her messages begin
