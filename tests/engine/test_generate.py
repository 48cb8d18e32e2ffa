from pathlib import Path

import pytest

from engine.errors import BadRequestError, ModelLoadError
from engine.generate import Generator, Request, Utf8Stream, decode_complete
from engine.sampling import SamplingConfig
from engine.session import ModelSession
from tests.conftest import REPEATED


@pytest.fixture(scope="module")
def gen(tiny_model: Path) -> Generator:
    return Generator(ModelSession(tiny_model))


def test_overfitted_model_generates_its_text_back(gen: Generator) -> None:
    text = gen.generate(seed="the quick", length=120, temperature=0.05, srand=1)
    assert REPEATED.strip() in ("the quick" + text)


def test_same_srand_same_text_different_srand_different_text(gen: Generator) -> None:
    a = gen.generate(length=300, temperature=1.5, srand=42)
    b = gen.generate(length=300, temperature=1.5, srand=42)
    c = gen.generate(length=300, temperature=1.5, srand=43)
    assert a == b
    assert a != c


def test_stream_equals_generate_and_batch_equals_single(gen: Generator) -> None:
    whole = gen.generate(seed="fox", length=200, temperature=1.2, srand=5)
    assert "".join(gen.stream(seed="fox", length=200, temperature=1.2, srand=5)) == whole
    batch = gen.generate_batch(["fox", "dog", "the"], length=200, temperature=1.2, srands=[5, 6, 7])
    assert batch[0] == whole
    assert batch[1] == gen.generate(seed="dog", length=200, temperature=1.2, srand=6)


def test_stop_byte_ends_a_message(gen: Generator) -> None:
    text = gen.generate(seed="the", length=500, temperature=0.05, srand=0, stop=".")
    assert "." not in text and len(text) < 100


def test_length_zero_and_bad_temperature(gen: Generator) -> None:
    assert gen.generate(length=0) == ""
    with pytest.raises(BadRequestError):
        gen.generate(temperature=0)


def test_speaker_slots_are_ignored_by_a_model_without_them(gen: Generator) -> None:
    plain = Request(b"the quick", 80, 7)
    tagged = Request(b"the quick", 80, 7, seed_speakers=(3,) * 9, speaker=3)
    assert gen.generate_bytes([plain], SamplingConfig(1.0)) == gen.generate_bytes([tagged], SamplingConfig(1.0))
    with pytest.raises(BadRequestError, match="2 slots for 9 seed bytes"):
        Request(b"the quick", 10, seed_speakers=(1, 2))


def test_utf8_held_back_until_complete_and_invalid_bytes_never_crash() -> None:
    d = Utf8Stream()
    emoji = "🦊".encode()
    assert d.feed(emoji[:1]) == "" and d.feed(emoji[1:3]) == ""
    assert d.feed(emoji[3:]) == "🦊"
    assert d.feed(b"\xff") == "\ufffd"
    assert decode_complete(b"ok " + emoji[:2]) == "ok "  # a cut-off sequence at the end is dropped


def test_random_bytes_always_decode(gen: Generator) -> None:
    text = gen.generate(length=400, temperature=50.0, srand=3)  # near-uniform over all 256 byte values
    text.encode("utf-8")  # a valid str whatever the model emitted


def test_missing_corrupt_and_foreign_models_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such model file"):
        ModelSession(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not onnx")
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        ModelSession(bad)
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, foreign)
    with pytest.raises(ModelLoadError, match="not a Mimic one"):
        ModelSession(foreign)


def test_the_conversation_is_primed_once_and_the_result_does_not_depend_on_the_cache(gen: Generator) -> None:
    calls: list[int] = []
    real_run = gen.session.run

    def counting_run(tokens, state, speakers=None):
        calls.append(tokens.shape[1])
        return real_run(tokens, state, speakers)

    conversation = b"\nthe quick brown fox\njumps over the lazy dog.\n"
    fresh = Generator(gen.session)
    fresh.session = type("Counting", (), {"run": staticmethod(counting_run),
                                          "initial_state": gen.session.initial_state})()
    first = fresh.prime(conversation + b"the q")
    second = fresh.prime(conversation + b"over")
    assert calls == [len(conversation), 5, 4]  # the shared conversation was fed once
    again = Generator(gen.session).prime(conversation + b"the q")  # an empty cache: same numbers
    assert (first[0] == again[0]).all() and (first[1] == again[1]).all()
    assert not (second[0] == first[0]).all()


def test_max_chars_stops_a_row_one_character_past_it(gen: Generator) -> None:
    """A posted message is cut at max_chars characters: generating far beyond (up to 4 bytes a character)
    only costs time, and a batch waits for its longest row."""
    full, capped = gen.generate_bytes([Request(b"\n", 400, 1), Request(b"\n", 400, 1, max_chars=30)],
                                      SamplingConfig(1.0))
    assert len(full) == 400 and full.startswith(capped)
    text = capped.decode("utf-8", errors="ignore")
    assert 30 <= len(text) <= 31 and len(capped) < 400
