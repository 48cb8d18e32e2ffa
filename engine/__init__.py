"""Generation with ONNX Runtime and numpy only: importing the engine never imports torch."""

from engine.generate import Generator
from engine.session import ModelSession

__all__ = ["Generator", "ModelSession"]
