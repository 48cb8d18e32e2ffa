"""Speaker slots: stable across warm starts and resumes, extended for new people, and the slot of every byte."""

import logging
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from training.checkpoint import load_checkpoint
from training.corpus import format_record
from training.errors import BadCheckpointError
from training.models import ModelConfig, build_model, initial_state
from training.speaker_slots import extend_slots, speaker_ids
from training.textdata import StreamBatcher, eval_streams
from training.trainer import TrainConfig, train


def _chat(names: list[str], n: int = 240) -> bytes:
    styles = {"ada": "lol ok", "bob": "NAK.", "cy": "Good\nmorning!", "dee": "hmm maybe"}
    return "".join(format_record(names[i % len(names)], styles[names[i % len(names)]]) for i in range(n)).encode()


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=4, seq_len=16, eval_every=0, checkpoint_every=0, threads=1, warmup_steps=2)
    return TrainConfig(**{**base, **kw})


def test_slots_are_kept_and_new_speakers_get_the_next_free_ones() -> None:
    first = extend_slots(None, ["ada", "bob"], 8)
    assert first == {"ada": 1, "bob": 2}
    assert extend_slots(first, ["cy", "bob", "ada", "dee"], 8) == {"ada": 1, "bob": 2, "cy": 3, "dee": 4}
    assert extend_slots({"ada": 1, "cy": 3}, ["bob", "dee"], 8) == {"ada": 1, "cy": 3, "bob": 2, "dee": 4}


def test_full_table_leaves_further_speakers_unconditioned_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="training.speaker_slots"):
        table = extend_slots({"ada": 1}, ["bob", "cy", "dee"], 3)
    assert table == {"ada": 1, "bob": 2}
    assert "cy, dee" in caplog.text and "3 speaker slots" in caplog.text


def test_per_byte_ids_name_zero_rest_of_the_record_the_writer() -> None:
    data = b"ada: hi\x1ethere\nbob: x: y\nzed: ?\n"
    ids = speaker_ids(data, {"ada": 5, "bob": 7})
    by_byte = list(zip(data.decode(), ids.tolist(), strict=True))
    assert by_byte[:5] == [("a", 0), ("d", 0), ("a", 0), (":", 0), (" ", 5)]
    assert [s for c, s in by_byte[5:14]] == [5] * 9  # "hi\x1ethere\n": the record goes on past \x1e
    assert by_byte[14:18] == [("b", 0), ("o", 0), ("b", 0), (":", 0)]
    assert [s for _, s in by_byte[18:24]] == [7] * 6  # " x: y\n": a ": " in the text is text
    assert ids[24:].tolist() == [0] * 7  # zed has no slot: unconditioned


def test_ids_of_a_cut_record_and_of_multibyte_names() -> None:
    assert speaker_ids(b"no separator here\nada: a", {"ada": 2}).tolist() == [0] * 18 + [0, 0, 0, 0, 2, 2]
    data = "汉语: 好\n".encode()
    assert speaker_ids(data, {"汉语": 3}).tolist() == [0] * 7 + [3] * 5


def test_batcher_and_eval_streams_carry_the_ids_aligned_with_the_bytes() -> None:
    data = _chat(["ada", "bob"])
    ids = speaker_ids(data, {"ada": 1, "bob": 2})
    batcher = StreamBatcher(data, streams=3, seq_len=10, speakers=ids)
    batch, raw = batcher.batch(4), np.frombuffer(data, dtype=np.uint8)
    for row, start in enumerate(batcher.starts):
        at = start + 4 * 10
        assert (batch.x[row] == raw[at:at + 10]).all() and (batch.s[row] == ids[at:at + 10]).all()
    tokens, slots = eval_streams(data, speakers=ids)
    assert tokens.shape == slots.shape
    assert (slots.reshape(-1) == ids[:slots.size]).all()
    assert StreamBatcher(data, 3, 10).batch(0).s is None


def test_speaker_vector_is_added_at_every_step_and_slot_zero_is_nobody() -> None:
    cfg = ModelConfig(hidden=8, speaker_slots=4)
    model = build_model(cfg).eval()
    assert torch.equal(model.speaker.weight, torch.zeros(4, 8))  # new slots start exactly unconditioned
    with torch.no_grad():
        model.speaker.weight[1:] = torch.randn(3, 8)
        tokens = torch.randint(0, 256, (2, 5))
        plain, _ = model(tokens, initial_state(cfg, 2))
        nobody, _ = model(tokens, initial_state(cfg, 2), torch.zeros(2, 5, dtype=torch.long))
        someone, _ = model(tokens, initial_state(cfg, 2), torch.ones(2, 5, dtype=torch.long))
    assert torch.equal(plain, nobody) and not torch.allclose(plain, someone)


@pytest.mark.parametrize("bad", [{"speaker_slots": -1}, {"speaker_slots": 1},
                                 {"arch": "darknet-rnn", "speaker_slots": 8}])
def test_bad_speaker_slots_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        ModelConfig(**bad)


def test_warm_start_keeps_every_slot_and_extends_the_table(tmp_path: Path) -> None:
    cfg = ModelConfig(hidden=16, speaker_slots=8)
    first = train(_chat(["ada", "bob"]), cfg, _cfg(steps=20, lr=1e-2), tmp_path / "a", speakers=["ada", "bob"])
    assert first.speaker_slots == {"ada": 1, "bob": 2}
    parent = load_checkpoint(first.checkpoint)
    assert parent["speaker_slots"] == {"ada": 1, "bob": 2} and parent["model_config"]["speaker_slots"] == 8
    trained = parent["model"]["speaker.weight"]
    assert trained[1:3].abs().sum() > 0 and trained[3:].abs().sum() == 0  # only the used rows learn

    # The nightly corpus gained cy (and now lists people by message count): old slots stay where they were.
    warm = train(_chat(["cy", "bob", "ada"]), cfg, _cfg(steps=1, lr=1e-9), tmp_path / "b",
                 speakers=["cy", "bob", "ada"], init_from=first.checkpoint)
    assert warm.speaker_slots == {"ada": 1, "bob": 2, "cy": 3}
    child = load_checkpoint(warm.checkpoint)
    assert child["model"]["speaker.weight"].shape == trained.shape
    assert torch.allclose(child["model"]["speaker.weight"][1:3], trained[1:3], atol=1e-6)


def test_warm_start_from_a_different_model_says_what_differs(tmp_path: Path) -> None:
    plain = train(_chat(["ada", "bob"]), ModelConfig(hidden=16), _cfg(steps=2), tmp_path / "a")
    with pytest.raises(BadCheckpointError, match=r"speaker_slots 8 vs 0"):
        train(_chat(["ada", "bob"]), ModelConfig(hidden=16, speaker_slots=8), _cfg(steps=1), tmp_path / "b",
              speakers=["ada", "bob"], init_from=plain.checkpoint)


def test_resume_keeps_the_table_and_adds_newcomers(tmp_path: Path) -> None:
    cfg = ModelConfig(hidden=16, speaker_slots=8)
    half = train(_chat(["ada", "bob"]), cfg, _cfg(steps=3), tmp_path / "r", speakers=["ada", "bob"])
    again = train(_chat(["dee", "ada", "bob"]), ModelConfig(), _cfg(steps=3), tmp_path / "r",
                  speakers=["dee", "ada", "bob"], resume=half.checkpoint)  # the checkpoint's model wins
    assert again.speaker_slots == {"ada": 1, "bob": 2, "dee": 3}
    assert load_checkpoint(again.checkpoint)["model_config"]["speaker_slots"] == 8


def _signed(n: int, seed: int) -> bytes:
    """ada and bob write the same filler words; only the sign-off at the end tells them apart."""
    rng = random.Random(seed)
    words, sign = ["the", "patch", "docs", "main", "tests", "fix"], {"ada": "lol", "bob": "NAK"}
    records = []
    for _ in range(n):
        who = rng.choice(["ada", "bob"])
        records.append(format_record(who, " ".join(rng.choice(words) for _ in range(5)) + " " + sign[who]))
    return "".join(records).encode()


def _sign_off_bits(model: torch.nn.Module, cfg: ModelConfig, data: bytes, table: dict[str, int]) -> float:
    """Mean bits spent choosing between the sign-offs where one starts: -log2 p(right) / (p('l') + p('N'))."""
    tokens = torch.tensor(list(data))[None]  # (1, T)
    slots = torch.from_numpy(speaker_ids(data, table))[None]
    with torch.no_grad():
        logits, _ = model(tokens[:, :-1], initial_state(cfg, 1), slots[:, :-1])
    choice = torch.log_softmax(logits[0][:, [ord("l"), ord("N")]], -1)  # (T-1, 2): which sign-off, if one
    starts = [i for i in range(len(data) - 1) if data[i + 1] in b"lN" and data[i] == ord(" ")]
    picked = choice[starts, [int(data[i + 1] == ord("N")) for i in starts]]
    return float(-picked.mean() / math.log(2))


def test_conditioned_model_knows_who_is_speaking_at_the_end_of_a_long_message(tmp_path: Path) -> None:
    """The sign-off comes 20+ bytes after the name, past the 16-byte training window: the state is not
    taught to carry the name that far (an unconditioned model scores 1 bit here, a coin toss), but the
    speaker vector fed at every byte tells who is writing."""
    cfg = ModelConfig(hidden=24, speaker_slots=4)
    result = train(_signed(300, 0), cfg, _cfg(steps=400, batch_size=16, lr=3e-2), tmp_path, speakers=["ada", "bob"])
    model = build_model(cfg).eval()
    model.load_state_dict(load_checkpoint(result.checkpoint)["model"])
    held_out = _signed(60, 1)
    right = _sign_off_bits(model, cfg, held_out, {"ada": 1, "bob": 2})
    swapped = _sign_off_bits(model, cfg, held_out, {"ada": 2, "bob": 1})
    assert right < 0.5 and swapped > 2, (right, swapped)
