"""The trainer under torchrun with DistributedDataParallel: 2 CPU processes, gloo backend."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question. " * 200)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "bot.cli", "train", str(text),
           "--hidden", "16", "--steps", "8", "--batch-size", "4", "--seq-len", "16", "--device", "cpu",
           "--threads", "1", "--eval-every", "4", "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 8 and ckpt["world_size"] == 2
    assert ckpt["hidden"].shape[0] == 2  # every rank's carried state is saved, for an exact resume
    assert (tmp_path / "run" / "model.onnx").is_file()
