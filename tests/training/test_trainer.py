from pathlib import Path

import pytest
import torch

from training.checkpoint import load_checkpoint
from training.errors import BadInputError
from training.models import ModelConfig
from training.textdata import StreamBatcher, split_holdout
from training.trainer import TrainConfig, lr_at, train

TEXT = ("All the world's a stage, and all the men and women merely players. " * 60).encode()


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=12, batch_size=4, seq_len=16, eval_every=0, checkpoint_every=0, threads=1, warmup_steps=3)
    base.update(kw)
    return TrainConfig(**base)


def test_streams_carry_on_from_window_to_window() -> None:
    data = bytes(range(256)) * 4
    b = StreamBatcher(data, streams=4, seq_len=10)
    first, second = b.batch(0), b.batch(1)
    assert first.reset and not second.reset
    assert (second.x[:, 0] == first.x[:, -1] + 1).all() or (second.x[:, 0] == (first.x[:, -1] + 1) % 256).all()
    assert (first.y[:, :-1] == first.x[:, 1:]).all()
    assert b.batch(b.windows).reset  # a new epoch starts over with a fresh state


def test_holdout_is_the_end_of_the_text() -> None:
    train_part, valid = split_holdout(b"a" * 95 + b"b" * 5, 0.05)
    assert valid == b"b" * 5 and train_part == b"a" * 95


def test_text_shorter_than_one_window_is_a_clear_error() -> None:
    with pytest.raises(BadInputError, match="shorter than one training window"):
        StreamBatcher(b"short", streams=4, seq_len=128)


def test_lr_schedule_warms_up_then_decays() -> None:
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10)
    rates = [lr_at(s, 0.0, cfg) for s in range(100)]
    assert rates[0] < rates[9] == pytest.approx(1.0)
    assert rates[99] < rates[20] < rates[10]
    budget = TrainConfig(time_budget=10, lr=1.0, warmup_steps=0, min_lr_ratio=0.1)
    assert lr_at(50, 1.0, budget) == pytest.approx(0.1) and lr_at(50, 0.0, budget) == pytest.approx(1.0)


def test_loss_goes_down_and_bits_per_char_is_reported(tmp_path: Path) -> None:
    result = train(TEXT, ModelConfig(hidden=32), _cfg(steps=60, lr=1e-2), tmp_path)
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last < first * 0.7
    assert 0 < result.val_bpc < 8
    assert result.history[-1]["val_bpc"] == result.val_bpc


CHAT = "".join(f"{who}: {text}\n" for who, text in [("ada", "lol the build is green"), ("bob", "NAK.\x1eno tests."),
                                                      ("cy", "Good morning, team!")] * 40).encode()


@pytest.mark.parametrize("arch,extra", [("gru", {"dropout": 0.2, "layers": 2}), ("darknet-rnn", {"layers": 2}),
                                        ("lstm", {}), ("gru", {"speaker_slots": 8, "dropout": 0.2}),
                                        ("lstm", {"speaker_slots": 8})])
def test_resume_is_exact(tmp_path: Path, arch: str, extra: dict) -> None:
    """2N steps in one go == N steps, then resume for N more: same weights, bit for bit, on the CPU."""
    model_cfg = ModelConfig(arch=arch, hidden=16, **extra)
    text, speakers = (CHAT, ["ada", "bob", "cy"]) if model_cfg.speaker_slots else (TEXT, None)
    once = train(text, model_cfg, _cfg(steps=12), tmp_path / "once", speakers=speakers)
    half = train(text, model_cfg, _cfg(steps=6), tmp_path / "half", speakers=speakers)
    resumed = train(text, model_cfg, _cfg(steps=6), tmp_path / "half", speakers=speakers, resume=half.checkpoint)
    a, b = load_checkpoint(once.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["step"] == b["step"] == 12
    assert a["speaker_slots"] == b["speaker_slots"] == ({"ada": 1, "bob": 2, "cy": 3} if speakers else {})
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    if speakers:
        assert a["model"]["speaker.weight"][1:4].abs().sum() > 0  # the speaker vectors did train


def test_checkpoint_describes_itself(tmp_path: Path) -> None:
    result = train(TEXT, ModelConfig(hidden=16), _cfg(steps=3), tmp_path, corpus_info={"kind": "text"})
    ckpt = load_checkpoint(result.checkpoint)
    for key in ("model_config", "train_config", "model", "optimizer", "schedule", "step", "rng", "hidden"):
        assert key in ckpt
    assert ckpt["model_config"]["hidden"] == 16 and ckpt["corpus"] == {"kind": "text"}


def test_interrupt_saves_a_checkpoint_first(tmp_path: Path) -> None:
    def stop_at_5(p) -> None:
        if p.step == 5:
            raise KeyboardInterrupt

    result = train(TEXT, ModelConfig(hidden=16), _cfg(steps=50), tmp_path, on_progress=stop_at_5)
    assert result.interrupted and result.step == 5
    assert load_checkpoint(result.checkpoint)["step"] == 5


def test_warm_start_from_another_checkpoint(tmp_path: Path) -> None:
    first = train(TEXT, ModelConfig(hidden=16), _cfg(steps=30, lr=1e-2), tmp_path / "a")
    warm = train(TEXT, ModelConfig(hidden=16), _cfg(steps=1, lr=1e-9), tmp_path / "b", init_from=first.checkpoint)
    assert warm.val_bpc == pytest.approx(first.val_bpc, abs=0.05)
