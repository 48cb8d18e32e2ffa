"""Forgetting a person everywhere Mimic keeps their words: the message store, and the voice memories of the
models on disk (which hold their recent messages as they wrote them). The network's weights forget them at the
next retraining; until then the bot refuses to write as them."""

from __future__ import annotations

import logging
from pathlib import Path

from engine.errors import ModelLoadError
from engine.voice import forget_speaker, voice_path_for

log = logging.getLogger(__name__)


def voice_memories(model_path: str | Path) -> list[Path]:
    """The voice memories of a model file, or of every version (served, staged, rejected) in a registry."""
    path = Path(model_path)
    if path.is_dir():
        return sorted(path.rglob("*.voice.npz"))
    memory = voice_path_for(path)
    return [memory] if memory.exists() else []


def forget_in_models(model_path: str | Path, speaker: str) -> int:
    """Remove `speaker` from every voice memory under `model_path`; returns how many held them."""
    changed = 0
    for memory in voice_memories(model_path):
        try:
            changed += forget_speaker(memory, speaker)
        except (OSError, ModelLoadError) as exc:  # one unreadable file must not stop the rest
            log.error("%s: could not remove %s from this voice memory (%s)", memory, speaker, exc)
    return changed
