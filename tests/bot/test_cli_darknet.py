"""`mimic export` / `mimic generate` with Darknet files, through bot.cli.main: outputs, bytes, exit codes."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.cli import main
from tests.engine.test_torch_free import BLOCK_TORCH
from tests.export.darknet_reference import (
    cfg_for,
    forward,
    greedy,
    net_from_state_dict,
    pack_weights,
    random_net,
)

ROOT = Path(__file__).resolve().parents[2]
TEXT = b"the quick brown fox jumps over the lazy dog. " * 100


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small darknet-rnn trained on a sentence, and the same weights as Darknet files from the test's writer."""
    from training.checkpoint import load_checkpoint
    from training.models import ModelConfig
    from training.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("darknet")
    result = train(TEXT, ModelConfig(arch="darknet-rnn", hidden=32, layers=2),
                   TrainConfig(steps=300, batch_size=8, seq_len=32, lr=0.02, eval_every=0, checkpoint_every=0,
                               threads=1, seed=0), out / "run")
    state = {k: v.numpy() for k, v in load_checkpoint(result.checkpoint)["model"].items()}
    net = net_from_state_dict(state)
    (out / "fox.cfg").write_text(cfg_for(net))
    (out / "fox.weights").write_bytes(pack_weights(net, seen=76_800))
    return {"ckpt": result.checkpoint, "net": net, "cfg": out / "fox.cfg", "weights": out / "fox.weights"}


def generate(capsysbinary: pytest.CaptureFixture, *args: str) -> bytes:
    assert main(["generate", *map(str, args)]) == 0
    return capsysbinary.readouterr().out


def test_tiny_temperature_prints_the_greedy_decode(trained: dict, capsysbinary) -> None:
    """`./darknet rnn generate -temp 0.000001` is argmax decoding; ours must print the same bytes."""
    want = greedy(trained["net"], b"the", 150)
    assert len(set(want)) >= 8  # a real sequence, not one repeated byte
    out = generate(capsysbinary, trained["cfg"], trained["weights"], "-srand", "0", "-seed", "the", "-len", "150",
                   "-temp", "0.000001")
    assert out == b"the" + want + b"\n"


def test_export_to_onnx_then_generate_gives_the_same_bytes(trained: dict, tmp_path: Path, capsysbinary) -> None:
    onnx_path = tmp_path / "fox.onnx"
    assert main(["export", str(trained["cfg"]), str(trained["weights"]), str(onnx_path)]) == 0
    capsysbinary.readouterr()
    args = ["-srand", "11", "-seed", "the q", "-len", "200"]
    from_files = generate(capsysbinary, trained["cfg"], trained["weights"], *args)
    from_onnx = generate(capsysbinary, onnx_path, *args)
    assert from_onnx == from_files and len(from_files) == 5 + 200 + 1
    greedy_onnx = generate(capsysbinary, onnx_path, "-seed", "the", "-len", "150", "-temp", "0.000001")
    assert greedy_onnx == b"the" + greedy(trained["net"], b"the", 150) + b"\n"


def test_same_srand_same_bytes_different_srand_different(trained: dict, capsysbinary) -> None:
    args = [trained["cfg"], trained["weights"], "-seed", "fox", "-len", "300", "-temp", "1.5"]
    a = generate(capsysbinary, *args, "-srand", "0")
    assert generate(capsysbinary, *args, "-srand", "1") == a  # glibc: srand(0) is srand(1)
    assert generate(capsysbinary, *args, "-srand", "2") != a


def darknet_sampled(net, seed: bytes, length: int, temp: float, srand: int, skip: int) -> bytes:
    """Darknet's rnn generate, from the test's forward pass and this machine's glibc rand(), line by line."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        pytest.skip("needs glibc")
    f = np.float32
    libc.srand(ctypes.c_uint(srand))
    for _ in range(skip):  # weight initialisation: one rand() per weight
        libc.rand()
    logits, h = forward(net, list(seed))
    made = []
    for _ in range(length):
        z, t = logits[-1], f(temp)
        e = [f(math.exp(float(f(x / t) - f(z.max() / t)))) for x in z]
        total = f(0)
        for v in e:
            total = f(total + v)
        p = [f(v / total) for v in e]
        p = [f(0) if float(v) < 0.0001 else v for v in p]
        s = f(0)
        for v in p:
            s = f(s + v)
        p = [f(v * f(1.0 / float(s))) for v in p]
        r, c = f(f(libc.rand()) / f(2147483647)), 255
        for i, v in enumerate(p):
            r = f(r - v)
            if r <= 0:
                c = i
                break
        made.append(c)
        logits, h = forward(net, [c], h)
    return bytes(made)


def test_srand_reproduces_darknets_own_sampler(trained: dict, capsysbinary) -> None:
    net = trained["net"]
    skip = 256 * 32 + 5 * 32 * 32 + 32 * 256  # one rand() per weight of this 2 x [rnn] 32 net
    want = darknet_sampled(net, b"the", 120, 0.8, 7, skip)
    out = generate(capsysbinary, trained["cfg"], trained["weights"], "-srand", "7", "-seed", "the", "-len", "120",
                   "-temp", "0.8")
    assert out == b"the" + want + b"\n"


def test_raw_bytes_empty_seed_and_length(tmp_path: Path, capsysbinary) -> None:
    net = random_net(hidden=8, layers=1, seed=3)
    cfg, weights = tmp_path / "r.cfg", tmp_path / "r.weights"
    cfg.write_text(cfg_for(net))
    weights.write_bytes(pack_weights(net))
    out = generate(capsysbinary, cfg, weights, "-srand", "5", "-seed", "", "-len", "400", "-temp", "3")
    assert out[:1] == b"\0" and out.endswith(b"\n") and len(out) == 1 + 400 + 1  # Darknet prints a NUL seed
    assert any(b >= 0x80 for b in out)  # arbitrary bytes pass through undecoded
    assert generate(capsysbinary, cfg, weights, "-srand", "5", "-seed", "ab", "-len", "0") == b"ab\n"


def test_seed_is_fed_as_darknet_feeds_it(tmp_path: Path, capsysbinary) -> None:
    """Default two newlines; backslashes and non-UTF-8 bytes as typed (Darknet reads argv as bytes)."""
    net = random_net(hidden=8, layers=1, seed=3)
    cfg, weights = tmp_path / "r.cfg", tmp_path / "r.weights"
    cfg.write_text(cfg_for(net))
    weights.write_bytes(pack_weights(net))
    skip = 256 * 8 + 2 * 8 * 8 + 8 * 256
    assert generate(capsysbinary, cfg, weights, "-srand", "3", "-len", "30", "-temp", "0.9") == \
        b"\n\n" + darknet_sampled(net, b"\n\n", 30, 0.9, 3, skip) + b"\n"
    assert generate(capsysbinary, cfg, weights, "-srand", "3", "-seed", "JON\\n", "-len", "30") == \
        b"JON\\n" + darknet_sampled(net, b"JON\\n", 30, 0.7, 3, skip) + b"\n"
    raw = b"J\xffO"
    assert generate(capsysbinary, cfg, weights, "-srand", "3", "-seed", os.fsdecode(raw), "-len", "30") == \
        raw + darknet_sampled(net, raw, 30, 0.7, 3, skip) + b"\n"


def test_cfg_found_by_content_and_swapped_order_named(tmp_path: Path, capsysbinary) -> None:
    net = random_net(hidden=8, layers=1, seed=3)
    cfg, weights = tmp_path / "rnn_cfg.txt", tmp_path / "grrm.bin"  # Darknet takes any names
    cfg.write_text("# a comment first\n\n" + cfg_for(net))
    weights.write_bytes(pack_weights(net))
    assert generate(capsysbinary, cfg, weights, "-srand", "1", "-seed", "ab", "-len", "0") == b"ab\n"
    for argv in (["generate", str(weights), str(cfg)], ["export", str(weights), str(cfg), str(tmp_path / "o.onnx")]):
        assert main(argv) == 2
        err = capsysbinary.readouterr().err.decode().strip().splitlines()
        assert len(err) == 1 and "the order is CFG WEIGHTS" in err[0] and str(cfg) in err[0], err


def test_checkpoint_to_darknet_files_and_back(trained: dict, tmp_path: Path, capsysbinary) -> None:
    out = tmp_path / "mine.weights"
    assert main(["export", str(trained["ckpt"]), str(out), "--darknet"]) == 0
    # byte for byte what the test's own struct.pack writer made of the same checkpoint (seen = 300 x 8 x 32)
    assert out.read_bytes() == trained["weights"].read_bytes()
    assert (tmp_path / "mine.cfg").is_file()
    greedy_bytes = generate(capsysbinary, tmp_path / "mine.cfg", out, "-seed", "the", "-len", "100",
                            "-temp", "0.000001")
    assert greedy_bytes == b"the" + greedy(trained["net"], b"the", 100) + b"\n"


def test_gru_checkpoint_cannot_become_darknet_files(tmp_path: Path, capsys) -> None:
    import torch  # noqa: F401 - the checkpoint below is a torch file

    from training.checkpoint import save_checkpoint
    from training.models import ModelConfig, build_model

    cfg = ModelConfig(arch="gru", hidden=8)
    ckpt = save_checkpoint(tmp_path / "g.pt", {"model_config": cfg.to_dict(), "model": build_model(cfg).state_dict()})
    assert main(["export", str(ckpt), str(tmp_path / "g.weights"), "--darknet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a gru model; only darknet-rnn checkpoints" in err[0]


@pytest.mark.parametrize("mutate,args,needle", [
    (lambda c, w: w.write_bytes(w.read_bytes()[:-4]), ["generate", "{c}", "{w}"], "truncated"),
    (lambda c, w: c.write_text(c.read_text().replace("[softmax]", "[dropout]")), ["generate", "{c}", "{w}"],
     "layer type [dropout] is not supported"),
    (lambda c, w: None, ["generate", "{c}"], "give the .weights file too"),
    (lambda c, w: None, ["export", "{c}", "{w}", "{c}.onnx.txt"], "should end in .onnx"),
    (lambda c, w: None, ["generate", "{c}", "{w}", "-temp", "0"], "temperature must be a positive number"),
])
def test_bad_darknet_input_is_one_line_and_exit_2(tmp_path: Path, capsys, mutate, args, needle) -> None:
    net = random_net(hidden=8, layers=1, seed=1)
    cfg, weights = tmp_path / "b.cfg", tmp_path / "b.weights"
    cfg.write_text(cfg_for(net))
    weights.write_bytes(pack_weights(net))
    mutate(cfg, weights)
    assert main([a.format(c=cfg, w=weights) for a in args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mimic:")]
    assert len(err) == 1 and needle in err[0], err


def test_generate_from_darknet_files_never_imports_torch(tmp_path: Path) -> None:
    net = random_net(hidden=8, layers=2, seed=4)
    cfg, weights = tmp_path / "t.cfg", tmp_path / "t.weights"
    cfg.write_text(cfg_for(net))
    weights.write_bytes(pack_weights(net))
    probe = BLOCK_TORCH + f"""
from bot.cli import main
assert main(["generate", {str(cfg)!r}, {str(weights)!r}, "-len", "10", "-srand", "1"]) == 0
assert "torch" not in sys.modules
assert main(["export", {str(cfg)!r}, {str(weights)!r}, {str(tmp_path / "t.onnx")!r}]) == 2  # parity needs torch
"""
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(proc.stdout) == 2 + 10 + 1  # Darknet's default seed "\n\n", ten bytes, "\n"
    assert b"needs torch: pip install 'mimic[train]'" in proc.stderr


def test_negative_srand_with_and_without_top_k(tmp_path: Path, capsysbinary) -> None:
    """Darknet's srand is unsigned: -1 is 2^32 - 1 for its sampler; with --top-k/--top-p Mimic's sampler
    draws, taking srand modulo 2^64. Neither may fail (numpy's PCG64 refuses negatives)."""
    net = random_net(hidden=8, layers=1, seed=3)
    cfg, weights = tmp_path / "r.cfg", tmp_path / "r.weights"
    cfg.write_text(cfg_for(net))
    weights.write_bytes(pack_weights(net))
    args = [cfg, weights, "-seed", "ab", "-len", "60", "-temp", "2"]
    assert generate(capsysbinary, *args, "-srand", "-1") == generate(capsysbinary, *args, "-srand", str(2**32 - 1))
    top_k = generate(capsysbinary, *args, "--top-k", "5", "-srand", "-1")
    assert top_k == generate(capsysbinary, *args, "--top-k", "5", "-srand", str(2**64 - 1)) and len(top_k) == 63
    assert len(generate(capsysbinary, *args, "--top-p", "0.9", "-srand", "-7")) == 63
