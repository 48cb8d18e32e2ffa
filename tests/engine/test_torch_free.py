"""The serving path runs with numpy + onnxruntime only: importing and using the engine never imports torch."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def test_engine_generates_with_torch_blocked(tiny_model: Path) -> None:
    probe = BLOCK_TORCH + f"""
from engine import Generator, ModelSession
text = Generator(ModelSession({str(tiny_model)!r})).generate(length=20, srand=1)
assert isinstance(text, str)
assert "torch" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=ROOT)


def test_cli_generate_never_imports_torch(tiny_model: Path) -> None:
    probe = BLOCK_TORCH + f"""
from bot.cli import main
rc = main(["generate", {str(tiny_model)!r}, "-len", "10", "-srand", "1"])
assert rc == 0, rc
assert "torch" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=ROOT)
