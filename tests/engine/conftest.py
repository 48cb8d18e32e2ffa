"""Tiny speaker-tagged chat models, trained once for the engine tests.

Besides people with short, distinctive messages (ada, grace, linus), ann and bea write the same filler words
and differ only in their sign-off, 70+ bytes after their name: past the 48-byte training window, so only a
model fed who is speaking at every byte (speaker slots) can tell which sign-off comes, or the speaker's voice
memory, which knows what follows "-- " in their own messages. Both models are exported as `mimic train --db`
exports them: with a copy index and a voice memory.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

LB = "\x1e"
STYLES = {
    "ada": ["lol the build is green again", "ok shipping it lol", "lol who broke main", "brb coffee lol"],
    "grace": ["Good morning, team!", "The deploy is scheduled for 10:00.", "Thank you all for the review!",
              "Please file an issue.\nThen ping me."],
    "linus": ["NAK.", "fix the patch first.", "this is wrong, see the docs.", "NAK, no tests."],
}
FILLER = ["the", "build", "deploy", "patch", "review", "main", "docs", "tests", "coffee", "team", "issue", "branch"]
SIGN_OFF = {"ann": "-- ann lol", "bea": "-- BEA NAK"}


def chat_messages(n: int = 600, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    names = [*STYLES, *SIGN_OFF]
    out = []
    for name in (rng.choice(names) for _ in range(n)):
        if name in SIGN_OFF:
            out.append((name, " ".join(rng.choice(FILLER) for _ in range(rng.randint(14, 22))) + " " + SIGN_OFF[name]))
        else:
            out.append((name, rng.choice(STYLES[name])))
    return out


def _train_chat(out: Path, speaker_slots: int, steps: int) -> Path:
    from engine.copyindex import build_copy_index, index_path_for
    from engine.voice import build_voice_memory, voice_path_for
    from export.onnx_export import export_checkpoint
    from training.models import ModelConfig
    from training.trainer import TrainConfig, train

    messages = chat_messages()
    text = "".join(f"{s}: {t.replace(chr(10), LB)}\n" for s, t in messages).encode()
    counts: dict[str, int] = {}
    for s, _ in messages:
        counts[s] = counts.get(s, 0) + 1
    speakers = {s: {"messages": n, "display_name": s.title(), "real_name": f"{s.title()} Example"}
                for s, n in counts.items()}
    speakers["newbie"] = {"messages": 3, "display_name": "New Person", "real_name": ""}  # in no training text
    result = train(text, ModelConfig(hidden=48, speaker_slots=speaker_slots),
                   TrainConfig(steps=steps, batch_size=8, seq_len=48, lr=0.01, eval_every=0, checkpoint_every=0,
                               threads=1), out, speakers=sorted(counts, key=lambda s: -counts[s]),
                   corpus_info={"kind": "chat", "line_break": LB, "speakers": speakers})
    report = export_checkpoint(result.checkpoint, out / "model.onnx")
    build_copy_index((t for _, t in messages), index_path_for(report.path))
    build_voice_memory(messages, voice_path_for(report.path), LB)
    return out


@pytest.fixture(scope="session")
def chat_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A speaker-conditioned GRU (as `mimic train --db` makes by default)."""
    return _train_chat(tmp_path_factory.mktemp("chat"), speaker_slots=16, steps=700)


@pytest.fixture(scope="session")
def unconditioned_chat_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chat model from before speaker slots: the engine must keep serving it."""
    return _train_chat(tmp_path_factory.mktemp("chat0"), speaker_slots=0, steps=300)
