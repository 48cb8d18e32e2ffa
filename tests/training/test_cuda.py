"""Training on a GPU: bf16 autocast, cuDNN kernels, and a checkpoint that serves on the CPU.

Skipped where torch sees no CUDA device (CI has none); run them on a GPU machine with
`pytest tests/training/test_cuda.py`.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.session import ModelSession
from export.onnx_export import export_checkpoint
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.models import ModelConfig, build_model, initial_state
from training.trainer import TrainConfig, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CHAT = "".join(f"{who}: {text}\n" for who, text in [("ada", "lol the build is green"), ("bob", "NAK. no tests."),
                                                      ("cy", "Good morning, team!")] * 60).encode()
ARCHS = [("gru", 2, True), ("lstm", 2, True), ("darknet-rnn", 3, True)]


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=60, batch_size=8, seq_len=32, eval_every=20, checkpoint_every=0, lr=1e-2, device="cuda")
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("arch,layers,bn", ARCHS)
def test_cuda_forward_matches_cpu_in_fp32(arch: str, layers: int, bn: bool) -> None:
    cfg = ModelConfig(arch=arch, hidden=64, layers=layers, batch_norm=bn)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    tokens = torch.randint(0, 256, (4, 50))
    state = initial_state(cfg, 4, torch.device("cpu"))
    with torch.no_grad():
        want, want_state = model(tokens, state)
        got, got_state = model.cuda()(tokens.cuda(), state.cuda())
    assert (got.cpu() - want).abs().max() <= 1e-3
    assert (got_state.cpu() - want_state).abs().max() <= 1e-3


@pytest.mark.parametrize("arch,layers,bn", ARCHS)
def test_bf16_training_on_cuda_learns_and_checkpoints_for_the_cpu(tmp_path: Path, arch: str, layers: int,
                                                                  bn: bool) -> None:
    cfg = ModelConfig(arch=arch, hidden=64, layers=layers, batch_norm=bn)
    result = train(CHAT, cfg, _cfg(), tmp_path)
    assert result.device.startswith("cuda")
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last < first * 0.6
    assert 0 < result.val_bpc < 6  # 8 bits is a uniform guess
    ckpt = load_checkpoint(result.checkpoint)  # maps to the CPU
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())
    model, _ = model_from_checkpoint(ckpt)
    with torch.no_grad():
        logits, _ = model(torch.tensor([list(b"ada: lol")]), initial_state(cfg, 1, torch.device("cpu")))
    assert torch.isfinite(logits).all()


def test_resume_on_cuda_continues_the_run(tmp_path: Path) -> None:
    cfg = ModelConfig(hidden=48)
    first = train(CHAT, cfg, _cfg(steps=15), tmp_path / "a")
    more = train(CHAT, cfg, _cfg(steps=15), tmp_path / "a", resume=first.checkpoint)
    assert more.step == 30
    assert load_checkpoint(more.checkpoint)["step"] == 30


def test_cuda_trained_speaker_model_exports_with_parity(tmp_path: Path) -> None:
    cfg = ModelConfig(hidden=64, layers=2, speaker_slots=8)
    result = train(CHAT, cfg, _cfg(), tmp_path, speakers=["ada", "bob", "cy"])
    report = export_checkpoint(result.checkpoint, tmp_path / "m.onnx")
    assert report.max_abs_diff <= 1e-4
    session = ModelSession(report.path)
    assert session.conditioned
    tokens = np.array([list(b"bob: NAK")], dtype=np.int64)
    state = np.zeros((cfg.state_rows, 1, 64), dtype=np.float32)
    logits, _ = session.run(tokens, state, np.full((1, 8), 2, dtype=np.int64))
    assert np.isfinite(logits).all()
