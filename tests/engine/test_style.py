"""The style ranker: a naive Bayes over each person's words, stored with the voice memory, that picks drafts."""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from engine.impersonate import ImpersonationConfig, build_prompt, impersonate, write_drafts
from engine.model_source import load_model
from engine.sampling import SamplingConfig
from engine.style import ALPHA, RIVAL_MESSAGES
from engine.voice import VoiceMemory, build_voice_memory, forget_speaker, voice_path_for
from tests.engine.conftest import SIGN_OFF

LB = "\x1e"
ANN = ["Hello there, lovely people", "hello again\nlovely day", "so lovely, thanks"]
BOB = ["ship it now", "did you ship the fix?", "Ship it!"]
RECORDS = [("ann", t) for t in ANN] * 4 + [("bob", t) for t in BOB] * 4 + [("cy", "hello ship lovely")]


def _grams(text: str) -> list[str]:
    words = re.findall(r"\b\w\w+\b", text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


def _reference(texts: list[str], draft: str, vocabulary: set[str]) -> float:
    """log P(draft | speaker) by the textbook: word and word-pair counts, additive smoothing over the vocabulary
    (words nobody used are left out)."""
    counts = Counter(g for t in texts for g in _grams(t))
    total = sum(counts.values())
    return sum(math.log((counts[g] + ALPHA) / (total + ALPHA * len(vocabulary))) for g in _grams(draft) if g in vocabulary)


@pytest.fixture
def memory(tmp_path: Path) -> VoiceMemory:
    path = tmp_path / "m.voice.npz"
    build_voice_memory(RECORDS, path, LB)
    return VoiceMemory(path)


@pytest.mark.parametrize("draft", ["hello lovely", "Ship it, lovely", "nothing known here", "ship ship ship"])
def test_likelihoods_are_the_textbook_naive_bayes(memory: VoiceMemory, draft: str) -> None:
    vocabulary = {g for _, t in RECORDS for g in _grams(t)}
    ll, n = memory.style.log_likelihoods(draft)
    assert n == sum(g in vocabulary for g in _grams(draft))
    for name in ("ann", "bob", "cy"):
        said = [t.replace("\n", LB) for s, t in RECORDS if s == name]
        assert ll[memory.speaker_id(name)] == pytest.approx(_reference(said, draft, vocabulary), rel=1e-12)


def test_likelihoods_match_scikit_learns_multinomial_naive_bayes(memory: VoiceMemory) -> None:
    text = pytest.importorskip("sklearn.feature_extraction.text")
    nb = pytest.importorskip("sklearn.naive_bayes")
    vec = text.CountVectorizer(ngram_range=(1, 2))
    x = vec.fit_transform([t for _, t in RECORDS])
    clf = nb.MultinomialNB(alpha=ALPHA, fit_prior=False).fit(x, [s for s, _ in RECORDS])
    drafts = ["hello lovely people", "did you ship it", "thanks"]
    want = clf.predict_joint_log_proba(vec.transform(drafts)) + math.log(len(clf.classes_))  # minus the prior
    for draft, row in zip(drafts, want, strict=True):
        ll, _ = memory.style.log_likelihoods(draft)
        got = [ll[memory.speaker_id(s)] for s in clf.classes_]
        np.testing.assert_allclose(got, row, rtol=1e-10)


def test_margin_is_per_word_against_the_best_regular_rival(memory: VoiceMemory) -> None:
    ann, bob, cy = (memory.speaker_id(s) for s in ("ann", "bob", "cy"))
    assert sorted(memory.style.rivals.tolist()) == sorted([ann, bob])  # cy wrote once: no rival
    assert RIVAL_MESSAGES <= 12
    ll, n = memory.style.log_likelihoods("lovely day again")
    assert memory.style.margin("lovely day again", ann) == pytest.approx((ll[ann] - ll[bob]) / n)
    assert memory.style.margin("lovely day again", ann) > 0 > memory.style.margin("lovely day again", bob)
    assert memory.style.margin("ship it", bob) > 0
    ll, n = memory.style.log_likelihoods("ship it")
    assert memory.style.margin("ship it", cy) == pytest.approx((ll[cy] - max(ll[ann], ll[bob])) / n)
    assert memory.style.margin("!!! ?", ann) == memory.style.margin("zebra quux", ann) == 0.0  # nothing to tell


def test_forgetting_removes_a_speakers_words_from_the_ranker(tmp_path: Path) -> None:
    path = tmp_path / "m.voice.npz"
    build_voice_memory(RECORDS, path, LB)
    before = VoiceMemory(path)
    bob_before = before.style.log_likelihoods("ship it")[0][before.speaker_id("bob")]
    ann = before.speaker_id("ann")
    assert forget_speaker(path, "ann")
    after = VoiceMemory(path).style
    assert not ((after.keys & np.uint64(0xFFFF)) == np.uint64(ann)).any()
    assert after.total[ann] == 0 and ann not in after.rivals.tolist()
    # bob's counts stay; his likelihood moves only through the smaller vocabulary
    assert len(after.keys) == len(before.style.keys) - int(((before.style.keys & np.uint64(0xFFFF)) == ann).sum())
    assert after.log_likelihoods("ship it")[0][before.speaker_id("bob")] != pytest.approx(0)
    assert bob_before < 0


def test_a_memory_written_before_the_ranker_still_serves(chat_run: Path, tmp_path: Path) -> None:
    model = load_model(chat_run / "model.onnx")
    old = tmp_path / "model.voice.npz"
    with np.load(voice_path_for(chat_run / "model.onnx")) as f:
        np.savez(old, **{k: f[k] for k in f.files if not k.startswith("style_")})
    memory = VoiceMemory(old)
    assert memory.style is None
    plain = dataclasses.replace(model, voice=memory, generator=type(model.generator)(model.session, memory))
    cfg = ImpersonationConfig(temperature=0.9, min_messages=0, max_attempts=20)
    got = [m.text for m in impersonate(plain, "grace", n=2, srand=3, cfg=cfg)]
    assert got == [m.text for m in impersonate(model, "grace", n=2, srand=3, cfg=dataclasses.replace(cfg, style=False))]


def test_drafts_are_scored_by_the_ranker(chat_run: Path) -> None:
    model = load_model(chat_run / "model.onnx")
    cfg = ImpersonationConfig(temperature=0.9, min_messages=0)
    prompt = build_prompt(model, model.speakers.find("ann"), None, None, 1)
    (drafts,) = write_drafts(model, [prompt], [None], [(5, 0)], 1, SamplingConfig(0.9), cfg)
    assert len(drafts) == cfg.drafts
    assert [s for _, s in drafts] == [model.voice.style.margin(t, prompt.voice) for t, _ in drafts]


def test_the_ranker_keeps_drafts_that_are_not_someone_elses(unconditioned_chat_run: Path) -> None:
    """ann and bea write the same filler and differ only in their sign-off. With the memory's pull made
    negligible the model signs off as either of them; of its drafts, the ranker avoids the other one's."""
    model = load_model(unconditioned_chat_run / "model.onnx")
    cfg = ImpersonationConfig(temperature=0.8, min_messages=0, max_attempts=20, voice_beta=1e6)
    other = {"ann": SIGN_OFF["bea"], "bea": SIGN_OFF["ann"]}

    def wrong(style: bool) -> int:
        c = dataclasses.replace(cfg, style=style)
        return sum(other[s] in m.text for s in other for m in impersonate(model, s, n=16, srand=6, cfg=c))

    ranked, unranked = wrong(True), wrong(False)
    assert ranked < unranked and ranked <= 2


def test_with_no_other_regular_writer_drafts_keep_the_memorys_score(chat_run: Path, tmp_path: Path) -> None:
    from tests.engine.conftest import chat_messages

    path = tmp_path / "m.voice.npz"
    build_voice_memory([m for m in chat_messages() if m[0] == "ann"] + [("bob", "ship it")], path, LB)
    memory = VoiceMemory(path)
    assert not memory.style.ranks(memory.speaker_id("ann")) and memory.style.ranks(memory.speaker_id("bob"))
    model = load_model(chat_run / "model.onnx")
    model = dataclasses.replace(model, voice=memory, generator=type(model.generator)(model.session, memory))
    cfg = ImpersonationConfig(temperature=0.9, min_messages=0)
    prompt = build_prompt(model, model.speakers.find("ann"), None, None, 1)
    args = (model, [prompt], [None], [(5, 0)], 1, SamplingConfig(0.9))
    assert write_drafts(*args, cfg) == write_drafts(*args, dataclasses.replace(cfg, style=False))
