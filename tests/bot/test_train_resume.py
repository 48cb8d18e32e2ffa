"""Stopping and resuming `mimic train`: a signal never cuts a step in half, a resume is the same run."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest
import torch

import training.trainer as trainer
from bot.cli import main
from training.checkpoint import load_checkpoint
from training.models import ModelConfig
from training.trainer import TrainConfig, train

TEXT = ("All the world's a stage, and all the men and women merely players. " * 60).encode()
SMALL = ["--threads", "1", "--hidden", "16", "--batch-size", "4", "--seq-len", "16", "--eval-every", "0",
         "--checkpoint-every", "0"]


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=12, batch_size=4, seq_len=16, eval_every=0, checkpoint_every=0, threads=1, warmup_steps=3)
    return TrainConfig(**{**base, **kw})


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return all(torch.equal(x[k], y[k]) for k in x)


def _signal_in_step(monkeypatch: pytest.MonkeyPatch, signum: int, at_call: int) -> None:
    """Deliver `signum` to this process in the middle of a training step: while its inputs are prepared."""
    calls = {"n": 0}
    real = trainer._model_inputs

    def inputs(*args):
        calls["n"] += 1
        if calls["n"] == at_call:
            signal.raise_signal(signum)
        return real(*args)

    monkeypatch.setattr(trainer, "_model_inputs", inputs)


@pytest.mark.parametrize("arch", ["gru", "darknet-rnn"])
def test_a_signal_mid_step_finishes_the_step_and_the_resume_is_exact(tmp_path: Path, monkeypatch, arch) -> None:
    model = ModelConfig(arch=arch, hidden=16, layers=2, dropout=0.2 if arch == "gru" else 0.0)
    once = train(TEXT, model, _cfg(steps=12), tmp_path / "once")
    _signal_in_step(monkeypatch, signal.SIGINT, at_call=6)
    stopped = train(TEXT, model, _cfg(steps=12), tmp_path / "cut")
    assert stopped.interrupted and stopped.stop_signal == signal.SIGINT and stopped.step == 6
    monkeypatch.undo()
    resumed = train(TEXT, model, _cfg(steps=6), tmp_path / "cut", resume=stopped.checkpoint)
    assert resumed.step == 12 and _same_weights(once.checkpoint, resumed.checkpoint)


def test_sigterm_is_recorded_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _signal_in_step(monkeypatch, signal.SIGTERM, at_call=3)
    result = train(TEXT, ModelConfig(hidden=16), _cfg(steps=12), tmp_path)
    assert result.interrupted and result.stop_signal == signal.SIGTERM and result.step == 3
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # put back


def test_a_second_ctrl_c_during_the_final_evaluation_still_saves(tmp_path: Path, monkeypatch) -> None:
    def slow_evaluation(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # the user gives up waiting for the held-out figure
        raise AssertionError("the signal should have cut the evaluation")

    monkeypatch.setattr(trainer, "evaluate_bpc", slow_evaluation)
    result = train(TEXT, ModelConfig(hidden=16), _cfg(steps=5), tmp_path)
    assert result.interrupted and result.step == 5
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 5


def test_resume_takes_the_runs_settings_and_finishes_its_plan(tmp_path: Path, capsys) -> None:
    """Stopped at step 4 of 10, `mimic train FILE --resume CKPT` with no other flag trains the 6 steps left with
    the run's own settings (batch 4, window 16, warm-up 3: not the CLI's defaults) and ends where an
    uninterrupted run ends, bit for bit."""
    text = tmp_path / "t.txt"
    text.write_bytes(TEXT)
    model = ModelConfig(hidden=16, layers=2)
    once = train(TEXT, model, _cfg(steps=10), tmp_path / "once")

    def stop_at_4(p) -> None:
        if p.step == 4:
            raise KeyboardInterrupt

    stopped = train(TEXT, model, _cfg(steps=10), tmp_path / "cut", on_progress=stop_at_4)
    assert stopped.step == 4
    assert main(["train", str(text), "--resume", str(stopped.checkpoint), "--threads", "1", "--no-export"]) == 0
    ckpt = load_checkpoint(tmp_path / "cut" / "last.pt")  # the checkpoint's own folder, not a new runs/...
    assert ckpt["step"] == 10 and ckpt["train_config"]["batch_size"] == 4
    assert _same_weights(once.checkpoint, tmp_path / "cut" / "last.pt")
    # Finished: resuming again without asking for more is a clear error.
    assert main(["train", str(text), "--resume", str(tmp_path / "cut" / "last.pt")]) == 2
    assert "already trained all it was planned to" in capsys.readouterr().err


def test_resume_refuses_another_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = tmp_path / "t.txt"
    text.write_bytes(TEXT)
    run = train(TEXT, ModelConfig(hidden=16), _cfg(steps=2), tmp_path / "run")
    argv = ["train", str(text), "--resume", str(run.checkpoint), "--steps", "1", "--no-export"]
    assert main([*argv, "--arch", "lstm", "--hidden", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--arch (the run has gru)" in err[0] and "--hidden (the run has 16)" in err[0]
    assert main([*argv, "--arch", "gru", "--hidden", "16"]) == 0  # the same model, spelled out, is fine


def test_resume_on_another_text_or_with_other_settings_warns(tmp_path: Path, caplog) -> None:
    first, other = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_bytes(TEXT)
    other.write_bytes(TEXT.replace(b"stage", b"STAGE"))
    assert main(["train", str(first), *SMALL, "--steps", "2", "--out", str(tmp_path / "run"), "--no-export"]) == 0
    ckpt = str(tmp_path / "run" / "last.pt")
    with caplog.at_level(logging.WARNING):
        assert main(["train", str(other), "--resume", ckpt, "--steps", "1", "--lr", "0.01", "--no-export"]) == 0
    said = caplog.text
    assert "trained on another text (a.txt" in said and "--lr 0.01 differs from the run's 0.003" in said


def test_a_new_run_never_writes_over_another(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = tmp_path / "t.txt"
    text.write_bytes(TEXT)
    out = tmp_path / "run"
    assert main(["train", str(text), *SMALL, "--steps", "2", "--out", str(out), "--no-export"]) == 0
    before = (out / "last.pt").read_bytes()
    assert main(["train", str(text), *SMALL, "--steps", "2", "--out", str(out), "--no-export"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "last.pt").read_bytes() == before


def test_a_refused_run_leaves_no_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = tmp_path / "t.txt"
    text.write_bytes(b"tiny text")
    assert main(["train", str(text), *SMALL, "--steps", "2", "--out", str(tmp_path / "run")]) == 2
    assert "fewer than one training window" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags,needle", [
    (["--seed", str(2**64)], "--seed must be from 0"),
    (["--time-budget", "nan"], "--time-budget must be a positive number"),
    (["--valid-fraction", "1.5"], "--valid-fraction must be between 0 and 1"),
    (["--hidden", "1000000"], "does not fit in cpu memory"),
])
def test_bad_numbers_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, flags, needle) -> None:
    text = tmp_path / "t.txt"
    text.write_bytes(TEXT)
    args = ["train", str(text), "--threads", "1", "--batch-size", "4", "--seq-len", "16", "--out", str(tmp_path / "r")]
    assert main([*args, *(["--steps", "1"] if "--time-budget" not in flags else []), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_a_resumed_time_budget_continues_the_decay(tmp_path: Path) -> None:
    """The schedule counts the time trained before the resume: half-way through the run, the rate is the
    cosine's half-way value, not the peak again."""
    run = train(TEXT, ModelConfig(hidden=16), _cfg(steps=4), tmp_path)
    ckpt = load_checkpoint(run.checkpoint)
    ckpt["schedule"]["elapsed"] = 1e6
    torch.save(ckpt, run.checkpoint)
    rates = []
    cfg = _cfg(steps=1, time_budget=1e6, min_lr_ratio=0.05)
    train(TEXT, ModelConfig(hidden=16), cfg, tmp_path, resume=run.checkpoint, on_progress=lambda p: rates.append(p.lr))
    assert rates[0] == pytest.approx(cfg.lr * (0.05 + 0.95 * 0.5), rel=1e-3)


def test_a_signal_while_the_last_checkpoint_is_saved_still_stops(tmp_path: Path, monkeypatch) -> None:
    real = trainer.save_checkpoint

    def save(path, payload):
        signal.raise_signal(signal.SIGTERM)  # noted, not raised: the file is written whole
        return real(path, payload)

    monkeypatch.setattr(trainer, "save_checkpoint", save)
    result = train(TEXT, ModelConfig(hidden=16), _cfg(steps=3), tmp_path)
    assert result.interrupted and result.stop_signal == signal.SIGTERM  # no export after it: the user asked to stop
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3


def test_train_db_alone_trains_on_the_configs_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.bot.eval_fixtures import build_store, chat_messages

    db = build_store(tmp_path / "team" / "mimic.db", chat_messages(200))
    config = tmp_path / "mimic.toml"
    config.write_text(f'[storage]\ndatabase = "{db}"\n')
    out = tmp_path / "run"
    assert main(["train", "--db", "--config", str(config), *SMALL, "--steps", "2", "--out", str(out),
                 "--no-export"]) == 0
    assert load_checkpoint(out / "last.pt")["corpus"]["kind"] == "chat"
    assert main(["train", str(tmp_path / "x.txt"), "--db", "--config", str(config), "--steps", "1"]) == 2
    assert "give exactly one of" in capsys.readouterr().err
