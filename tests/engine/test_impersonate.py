from pathlib import Path

import pytest

from engine.errors import OptedOutError, TooFewMessagesError, UnknownSpeakerError
from engine.impersonate import (
    ImpersonationConfig,
    Job,
    NoAcceptableMessageError,
    NoSpeakersError,
    build_prompt,
    impersonate,
    impersonate_batch,
)
from engine.model_source import load_model

CFG = ImpersonationConfig(temperature=0.8, min_messages=30, max_attempts=20)


@pytest.fixture(scope="module")
def model(chat_run: Path):
    return load_model(chat_run / "model.onnx")


def test_speaker_list_comes_from_metadata(model) -> None:
    names = [s.name for s in model.speakers]
    assert set(names) == {"ada", "grace", "linus", "newbie"}
    assert model.copy_index is not None and model.line_break == "\x1e"


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
    assert prompt == b"\ngrace: Hi\x1eall\nlinus: NAK.\nada: "


def test_plain_text_model_has_no_speakers(tiny_model: Path) -> None:
    with pytest.raises(NoSpeakersError):
        impersonate(load_model(tiny_model), "ada")


def test_length_cap(model) -> None:
    cfg = ImpersonationConfig(temperature=1.0, max_chars=12, max_attempts=30)
    for m in impersonate(model, "grace", n=5, srand=4, cfg=cfg):
        assert len(m.text) <= 12
