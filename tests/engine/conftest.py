"""A tiny speaker-tagged chat model, trained once for the engine tests."""

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


def chat_messages(n: int = 600, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    names = list(STYLES)
    return [(name, rng.choice(STYLES[name])) for name in (rng.choice(names) for _ in range(n))]


@pytest.fixture(scope="session")
def chat_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.copyindex import build_copy_index, index_path_for
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
    speakers["newbie"] = {"messages": 3, "display_name": "New Person", "real_name": ""}
    out = tmp_path_factory.mktemp("chat")
    result = train(text, ModelConfig(hidden=48), TrainConfig(steps=300, batch_size=8, seq_len=48, lr=0.01,
                                                             eval_every=0, checkpoint_every=0, threads=1), out,
                   corpus_info={"kind": "chat", "line_break": LB, "speakers": speakers})
    report = export_checkpoint(result.checkpoint, out / "model.onnx")
    build_copy_index((t for _, t in messages), index_path_for(report.path))
    return out
