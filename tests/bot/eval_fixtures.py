"""A small team chat built in code (through the Store API) and a tiny model trained on it, for the eval tests."""

from __future__ import annotations

import random
from pathlib import Path

from training.store import ChannelRecord, MessageRecord, Store, UserRecord

# Each person has a recognisable way of writing; `long` is a message they repeat word for word, so a model
# (or a Markov chain) can copy 40+ characters of it.
STYLES = {
    "ada": {"words": ["lol", "build", "green", "shipping", "main", "coffee", "brb", "ok", "who", "broke"],
            "shape": "{a} {b} {c} lol", "long": "ok the build is green again so i am shipping it now lol"},
    "grace": {"words": ["Good", "Morning", "Team", "Deploy", "Review", "Thanks", "Please", "Schedule"],
              "shape": "{A} {B}, {c}!", "long": "Good morning, team! The deploy is scheduled for ten o'clock."},
    "linus": {"words": ["NAK", "wrong", "patch", "tests", "docs", "fix", "no", "broken"],
              "shape": "{A}. {b} {c}.", "long": "NAK. This patch is wrong, see the docs, and it has no tests."},
    "mo": {"words": ["hmm", "maybe", "could", "we", "try", "the", "other", "way", "first"],
           "shape": "hmm... {a} {b}? {c}", "long": "hmm... maybe we could try the other way first? not sure"},
}


def chat_messages(n: int = 480, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name = rng.choice(list(STYLES))
        st = STYLES[name]
        if rng.random() < 0.25:
            out.append((name, st["long"]))
            continue
        a, b, c = (rng.choice(st["words"]) for _ in range(3))
        out.append((name, st["shape"].format(a=a, b=b, c=c, A=a.upper(), B=b.capitalize())))
    return out


def build_store(path: Path, messages: list[tuple[str, str]]) -> Path:
    with Store.open(path) as store:
        store.upsert_workspace("slack", "T1", "Team")
        store.upsert_channel(ChannelRecord("slack", "C1", "general", "T1"))
        store.upsert_users([UserRecord("slack", f"U{i}", name, name.title(), f"{name.title()} Example",
                                       workspace_id="T1") for i, name in enumerate(STYLES)])
        ids = {name: f"U{i}" for i, name in enumerate(STYLES)}
        store.upsert_messages(MessageRecord("slack", "C1", f"{1700000000 + 60 * i}.000100", ids[s], t,
                                            1700000000.0 + 60 * i) for i, (s, t) in enumerate(messages))
    return path


def train_chat_model(db: Path, out: Path, steps: int = 150) -> Path:
    """The real `mimic train --db` path (corpus, speaker slots, metadata, copy index, history.json), tiny."""
    from bot.jobs import chat_store_data, train_and_export
    from training.models import ModelConfig
    from training.trainer import TrainConfig

    cfg = TrainConfig(steps=steps, batch_size=8, seq_len=48, lr=0.01, eval_every=50, checkpoint_every=0,
                      threads=1)
    _, onnx_path = train_and_export(chat_store_data(db), ModelConfig(hidden=32, speaker_slots=16), cfg, out)
    assert onnx_path is not None
    return onnx_path
