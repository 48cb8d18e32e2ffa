import dataclasses
from pathlib import Path

import pytest

from engine.errors import OptedOutError, TooFewMessagesError, UnknownSpeakerError
from engine.impersonate import (
    ImpersonationConfig,
    Job,
    NoAcceptableMessageError,
    NoSpeakersError,
    build_prompt,
    draft_request,
    finish_text,
    impersonate,
    impersonate_batch,
)
from engine.model_source import load_model
from engine.sampling import SamplingConfig
from tests.engine.conftest import SIGN_OFF

CFG = ImpersonationConfig(temperature=0.8, min_messages=30, max_attempts=20)


@pytest.fixture(scope="module")
def model(chat_run: Path):
    return load_model(chat_run / "model.onnx")


def test_speaker_list_comes_from_metadata(model) -> None:
    names = [s.name for s in model.speakers]
    assert set(names) == {"ada", "grace", "linus", "ann", "bea", "newbie"}
    assert model.copy_index is not None and model.line_break == "\x1e"
    slots = model.speakers.slots()
    assert set(slots) == {"ada", "grace", "linus", "ann", "bea"} and sorted(slots.values()) == [1, 2, 3, 4, 5]
    assert model.speakers.find("newbie").slot == 0  # not in the training text: no slot
    assert model.session.conditioned and model.session.speaker_slots == 16


def _sign_offs(texts: list[str]) -> tuple[int, int]:
    return sum(t.endswith(SIGN_OFF["ann"]) for t in texts), sum(t.endswith(SIGN_OFF["bea"]) for t in texts)


def test_impersonation_is_conditioned_on_the_speaker(model) -> None:
    """ann and bea write the same filler and differ only in a sign-off 70+ bytes after their name: a model
    without speaker slots signs off at random (about half right); this one is fed who is speaking."""
    ann = [m.text for m in impersonate(model, "ann", n=12, srand=3, cfg=CFG)]
    bea = [m.text for m in impersonate(model, "bea", n=12, srand=3, cfg=CFG)]
    assert _sign_offs(ann)[0] >= 10 and _sign_offs(ann)[1] <= 1
    assert _sign_offs(bea)[1] >= 10 and _sign_offs(bea)[0] <= 1


def test_the_speaker_slot_carries_the_voice(model) -> None:
    """ann's name in the prompt but bea's slot fed with every byte: bea's sign-off."""
    ann, bea = model.speakers.find("ann"), model.speakers.find("bea")
    prompt = build_prompt(model, ann, None, None, 0, voice=False)  # the slot alone, no voice memory
    as_bea = dataclasses.replace(prompt, speakers=tuple(bea.slot if s else 0 for s in prompt.speakers),
                                 speaker=bea.slot)
    requests = [draft_request(as_bea, 5, row, 1, 0, 400) for row in range(12)]
    raw = model.generator.generate_bytes(requests, SamplingConfig(0.8))
    assert _sign_offs([finish_text(model, None, r, 400) for r in raw])[1] >= 9


@pytest.mark.parametrize("query", ["ada", "ADA", "@ada", "Ada", "ada example"])
def test_lookup_by_handle_display_or_real_name(model, query: str) -> None:
    (msg,) = impersonate(model, query, srand=1, cfg=CFG)
    assert msg.speaker.name == "ada"
    assert msg.text and "\x1e" not in msg.text


def test_messages_sound_like_the_speaker(model) -> None:
    ada = impersonate(model, "ada", n=6, srand=3, cfg=CFG)
    linus = impersonate(model, "linus", n=6, srand=3, cfg=CFG)
    assert sum("lol" in m.text for m in ada) >= 4
    assert sum("lol" in m.text for m in linus) <= 1


def test_prompt_is_the_opening_words(model) -> None:
    (msg,) = impersonate(model, "grace", prompt="Good", srand=2, cfg=CFG)
    assert msg.text.startswith("Good")


def test_line_breaks_are_restored(model) -> None:
    texts = [m.text for m in impersonate(model, "grace", n=12, srand=3, cfg=CFG)]
    assert any("\n" in t for t in texts)  # grace's "Please file an issue.\nThen ping me." style
    assert all("\x1e" not in t for t in texts)


def test_never_posts_a_verbatim_training_message(model) -> None:
    """The model is overfitted, so most drafts are copies: every returned one must be new."""
    training = {t for v in __import__("tests.engine.conftest", fromlist=["STYLES"]).STYLES.values() for t in v}
    try:
        msgs = impersonate(model, "linus", n=4, srand=11, cfg=ImpersonationConfig(temperature=1.0, max_attempts=30))
    except NoAcceptableMessageError:
        return  # refusing is allowed; posting a copy is not
    for m in msgs:
        assert m.text not in training


def test_speaker_errors(model) -> None:
    with pytest.raises(UnknownSpeakerError, match="did you mean ada"):
        impersonate(model, "adda", cfg=CFG)
    with pytest.raises(OptedOutError, match="opted out"):
        impersonate(model, "ada", cfg=CFG, opted_out=frozenset({"ada"}))
    with pytest.raises(TooFewMessagesError, match=r"not enough messages from New Person yet \(3\)"):
        impersonate(model, "newbie", cfg=CFG)


def test_same_srand_same_message(model) -> None:
    a = impersonate(model, "grace", srand=99, cfg=CFG)[0].text
    assert impersonate(model, "grace", srand=99, cfg=CFG)[0].text == a


def test_batch_of_jobs_matches_single_jobs_and_reports_errors_per_job(model) -> None:
    jobs = [Job("ada", srand=5), Job("nobody"), Job("linus", srand=6, prompt="fix")]
    out = impersonate_batch(model, jobs, CFG)
    assert isinstance(out[1], UnknownSpeakerError)
    assert out[0][0].text == impersonate(model, "ada", srand=5, cfg=CFG)[0].text
    assert out[2][0].text.startswith("fix")


def test_context_primes_the_conversation(model) -> None:
    prompt = build_prompt(model, model.speakers.find("ada"), [("grace", "Hi\nall"), ("linus", "NAK.")], None, 12)
    assert prompt.text == b"\ngrace: Hi\x1eall\nlinus: NAK.\nada: "
    g, li, a = (model.speakers.find(n).slot for n in ("grace", "linus", "ada"))
    assert prompt.speakers == (0, 0, 0, 0, 0, 0, 0, g, g, g, g, g, g, g, g, 0, 0, 0, 0, 0, 0, li, li, li, li, li, li,
                               0, 0, 0, 0, a)  # a name and its ':' are nobody's; the rest, its writer's
    assert prompt.speaker == a  # every generated byte is ada's


def test_prompt_slots_follow_the_training_rule(model) -> None:
    """The engine builds slots as training/speaker_slots.py reads them from a corpus, opening words included."""
    from training.speaker_slots import speaker_ids

    context = [("grace", "Good\nmorning"), ("stranger", "hi: there"), ("ann", "x y -- ann lol"), ("linus", "  ")]
    prompt = build_prompt(model, model.speakers.find("bea"), context, "ok\nso", 12)
    assert prompt.text.endswith(b"\nbea: ok\x1eso")
    assert prompt.speakers == tuple(speaker_ids(prompt.text, model.speakers.slots()).tolist())
    assert "stranger" not in model.speakers.slots()  # unknown people's lines carry slot 0 throughout


def test_a_speaker_without_a_slot_is_written_for_unconditioned(model) -> None:
    """newbie is in the speaker list but in no training text: no slot, so slot 0, as an unconditioned model."""
    cfg = ImpersonationConfig(temperature=0.8, min_messages=0, max_attempts=20)
    prompt = build_prompt(model, model.speakers.find("newbie"), None, None, 0)
    assert set(prompt.speakers) == {0} and prompt.speaker == 0
    assert all(m.text for m in impersonate(model, "newbie", n=3, srand=1, cfg=cfg))


def test_a_chat_model_without_speaker_slots_still_serves(unconditioned_chat_run: Path) -> None:
    old = load_model(unconditioned_chat_run / "model.onnx")
    assert not old.session.conditioned and old.session.metadata["mimic_format"] == "1"
    assert old.speakers.slots() == {} and build_prompt(old, old.speakers.find("ada"), None, "lol", 0).speaker == 0
    cfg = ImpersonationConfig(temperature=0.8, min_messages=30, max_attempts=20)
    msgs = impersonate(old, "ada", n=3, srand=2, prompt="lol", cfg=cfg)
    assert [m.text for m in msgs] == [m.text for m in impersonate(old, "ada", n=3, srand=2, prompt="lol", cfg=cfg)]
    assert all(m.text.startswith("lol") for m in msgs)


def test_plain_text_model_has_no_speakers(tiny_model: Path) -> None:
    with pytest.raises(NoSpeakersError) as caught:
        impersonate(load_model(tiny_model), "ada")
    # `mimic train --db` alone writes to runs/, where no bot looks: say how a chat model gets served
    assert "`mimic retrain`" in str(caught.value) and "--model runs/.../model.onnx" in str(caught.value)


def test_length_cap(model) -> None:
    cfg = ImpersonationConfig(temperature=1.0, max_chars=12, max_attempts=30)
    for m in impersonate(model, "grace", n=5, srand=4, cfg=cfg):
        assert len(m.text) <= 12
