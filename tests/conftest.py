"""Shared fixtures: the environment is reset per test, and a tiny model is trained once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPEATED = "the quick brown fox jumps over the lazy dog. "


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees a real token or a user's Mimic settings."""
    for key in list(os.environ):
        if key.startswith(("SLACK_", "DISCORD_", "MIMIC_")):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def repeated_text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "fox.txt"
    path.write_text(REPEATED * 200)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, repeated_text_file: Path) -> Path:
    """A small GRU overfitted on a repeated sentence, trained and exported through the real CLI."""
    from bot.cli import main

    out = tmp_path_factory.mktemp("run")
    rc = main(["train", str(repeated_text_file), "--hidden", "48", "--steps", "250", "--batch-size", "8",
               "--seq-len", "48", "--lr", "0.01", "--eval-every", "0", "--threads", "1", "--out", str(out)])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_run: Path) -> Path:
    return tiny_run / "model.onnx"
