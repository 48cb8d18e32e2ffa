"""`mimic demo`: the whole journey offline, on a made-up team, in a couple of minutes on a laptop CPU.

1. Write a synthetic Slack workspace export (users.json, channels.json, one JSON file per channel and day)
   for a small team whose members write in clearly different styles. It is generated here from phrase
   lists with a fixed seed, so no data ships with Mimic and no network is needed.
2. Import it into a message store with the real Slack importer (training/ingest_slack.py).
3. Train a small model on it for a short time budget (progress bar on stderr), export it to ONNX and build
   its copy-check index.
4. Open the console adapter: `who`, `impersonate ada`, `impersonate grace Good morning`, `quit`.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

TEAM_ID = "TDEMO0001"
CHANNELS = (("C0DEMOGEN", "general"), ("C0DEMODEV", "dev"), ("C0DEMORND", "random"))
DEFAULT_TIME_BUDGET = 90.0
DEMO_HIDDEN = 192  # a GRU this wide learns five voices in a minute or two on two CPU cores

# Why messages are assembled from short "bits": Mimic refuses to post anything that shares 40 characters
# with a training message. Fixed sentences would make a well-trained model repeat them and be refused;
# short bits with slots, two to four per message, give every 33-character stretch many possible spellings,
# so the model writes new combinations in each person's voice.
SLOTS: dict[str, tuple[str, ...]] = {
    "thing": ("build", "deploy", "parser", "login page", "tests", "database", "CI", "cache", "release",
              "API", "dashboard", "migration", "linter", "docs", "search", "scheduler", "installer",
              "config", "queue", "backups", "theme", "payments"),
    "verb": ("fixing", "merging", "testing", "shipping", "reviewing", "rebasing", "debugging", "rewriting",
             "profiling", "reverting"),
    "time": ("9:15", "10:00", "11:30", "14:00", "15:45", "16:30", "noon"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "tomorrow"),
    "event": ("standup", "retro", "planning", "demo", "release", "offsite", "all-hands"),
    "doc": ("README", "style guide", "runbook", "wiki", "spec", "changelog", "design doc"),
    "problem": ("race condition", "memory leak", "off-by-one", "typo", "null check", "timeout",
                "deadlock", "flaky test", "bad merge"),
    "food": ("pizza", "tacos", "dumplings", "coffee", "bagels", "ramen", "donuts"),
    "emoji": (":tada:", ":rocket:", ":sparkles:", ":fire:", ":joy:", ":raised_hands:", ":eyes:"),
    "works": ("works", "builds", "passes", "loads", "runs", "deploys"),
    "mood": ("cursed", "haunted", "spicy", "vibing", "chaotic", "cooked"),
    "greeting": ("Good morning", "Hello", "Good afternoon", "Hi all"),
    "thanks": ("Thank you", "Thanks", "Many thanks", "Much appreciated"),
    "verdict": ("NAK.", "No.", "Wrong.", "Rejected.", "Nope."),
    "gloom": ("How wonderful. Not.", "I knew it.", "Naturally.", "Of course.", "Sigh."),
    "hmm": ("Hmm.", "Yes, hmm.", "Mm.", "Herh herh."),
}


@dataclass(frozen=True)
class Member:
    handle: str
    user_id: str
    display_name: str
    real_name: str
    weight: float  # share of the conversation
    bits: tuple[str, ...]  # a message is two to four of these, in any order
    lowercase: bool = False


TEAM = (
    Member("ada", "U0DEMOADA", "Ada", "Ada Okonkwo", 1.0, (
        "omg", "lol", "lmao", "ok so", "ngl", "wait", "yesss", "brb", "tbh", "same", "rn", "{emoji}", "{emoji}",
        "the {thing} {works} now", "who touched the {thing}", "{verb} the {thing}", "{food} after??",
        "kinda {mood} today", "{person} lol", "it's so {mood}", "the {problem}??", "on it!!", "send help",
    ), lowercase=True),
    Member("grace", "U0DEMOGRC", "Grace", "Grace Lindqvist", 0.9, (
        "{greeting}, team.", "{thanks}, {person}.", "Review at {time}.", "The {event} is on {day}.",
        "Please update the {doc}.", "Please file an issue.", "Well done, everyone.", "Could we meet at {time}?",
        "Good effort, all.", "Let us sync on {day}.", "Agenda:\n1. {thing}\n2. {problem}", "Noted.",
        "Kind regards.", "The {thing} is on track.", "Any other business?", "R&D first, then {thing}.",
    )),
    Member("linus", "U0DEMOLIN", "linus", "Linus Brandt", 0.8, (
        "{verdict}", "{verdict}", "no tests.", "read the {doc}.", "fix the {problem}.", "the {thing} is wrong.",
        "garbage.", "who wrote this?", "applied.", "finally.", "stop {verb} it.", "{person}: no.",
        "this is obvious.", "not in my tree.", "revert it.", "the {thing} is fine.",
    )),
    Member("marvin", "U0DEMOMRV", "Marvin", "Marvin Paranoid", 0.7, (
        "{gloom}", "{gloom}", "I suppose the {thing} broke.", "Another {event}.", "Ugh, {food} again.",
        "Brain like a planet.", "It will fail on {day}.", "The {problem} is back.", "Life.", "Nobody asked me.",
        "{person}, I'd cheer, but.", "Here I am, {verb} again.", "Don't talk to me.",
    )),
    Member("yoda", "U0DEMOYDA", "Yoda", "Master Yoda", 0.6, (
        "Broken, the {thing} is.", "Fix it, you must.", "{hmm}", "{hmm}", "Patience, {person}.",
        "Ready, it is not.", "A {problem}, I sense.", "Read the {doc}, you should.", "Done by {day}, it will be.",
        "Strong with {food}, this one is.", "Much to learn, you have.", "Do or do not.", "{verb}, we are.",
    )),
    Member("sam", "U0DEMOSAM", "Sam", "Sam Newcomb", 0.0, (  # joined last week: too few messages to imitate
        "hi all, I'm new here!", "where do I find the {doc}?", "thanks {person}!",
    )),
)
SAM_MESSAGES = 6


def _fill(template: str, rng: random.Random, previous: Member | None, author: Member) -> str:
    def slot(name: str) -> str:
        if name == "person":
            other = previous if previous is not None and previous is not author else \
                rng.choice([m for m in TEAM if m is not author and m.weight > 0])
            return f"<@{other.user_id}>"  # a Slack mention token; the importer turns it into @handle
        return rng.choice(SLOTS[name])

    out, rest = [], template
    while "{" in rest:
        head, _, tail = rest.partition("{")
        name, _, rest = tail.partition("}")
        out.append(head + slot(name))
    out.append(rest)
    return "".join(out)


def compose(author: Member, rng: random.Random, previous: Member | None = None) -> str:
    """One message in `author`'s voice (plain text; mentions as `<@U…>` tokens)."""
    if author.weight == 0:  # the newcomer says one short thing
        return _fill(rng.choice(author.bits), rng, previous, author)
    bits = rng.sample(author.bits, rng.choice((2, 2, 3, 3, 4)))
    text = " ".join(_fill(bit, rng, previous, author) for bit in bits)
    if author.lowercase:
        text = re.sub(r"(<@[^>]+>)|[^<]+", lambda m: m.group(1) or m.group(0).lower(), text)
    return text


def _escape(text: str) -> str:
    """Slack's escaping of `&`, `<`, `>`, leaving `<@U…>` mention tokens as tokens."""
    parts = text.split("<@")
    escaped = [parts[0].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")]
    for part in parts[1:]:
        uid, _, rest = part.partition(">")
        escaped.append(f"<@{uid}>" + rest.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    return "".join(escaped)


def team_messages(n: int = 2400, seed: int = 7, start: datetime | None = None) -> Iterator[tuple[str, str, str, float]]:
    """(channel id, user id, Slack-escaped text, ts) for a made-up month of team chat, in time order."""
    rng = random.Random(seed)
    talkers = [m for m in TEAM if m.weight > 0]
    weights = [m.weight for m in talkers]
    sam = next(m for m in TEAM if m.handle == "sam")
    sam_at = set(rng.sample(range(n // 2, n), SAM_MESSAGES))
    t = (start or datetime(2025, 3, 3, 9, 0, tzinfo=UTC)).timestamp()
    previous: Member | None = None
    channel = CHANNELS[0][0]
    for i in range(n):
        t += rng.expovariate(1 / 600)  # about one message every ten minutes
        if rng.random() < 0.15:
            channel = rng.choice(CHANNELS)[0]
        author = sam if i in sam_at else rng.choices(talkers, weights)[0]
        yield channel, author.user_id, _escape(compose(author, rng, previous)), round(t, 6)
        previous = author


def write_demo_export(out: str | Path, n_messages: int = 2400, seed: int = 7) -> Path:
    """Write the team's chat as an unzipped Slack export under `out` (replacing what is there)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    users = [{"id": m.user_id, "team_id": TEAM_ID, "name": m.handle, "real_name": m.real_name, "is_bot": False,
              "profile": {"display_name": m.display_name, "real_name": m.real_name,
                          "image_192": f"https://avatars.example.invalid/{m.handle}_192.png"}} for m in TEAM]
    users.append({"id": "U0DEMOBOT", "team_id": TEAM_ID, "name": "deploybot", "is_bot": True,
                  "profile": {"display_name": "", "real_name": "Deploy Bot", "bot_id": "B0DEMOBOT"}})
    (out / "users.json").write_text(json.dumps(users, indent=1))
    channels = [{"id": cid, "name": name, "created": 1740990000, "is_general": name == "general",
                 "members": [m.user_id for m in TEAM]} for cid, name in CHANNELS]
    (out / "channels.json").write_text(json.dumps(channels, indent=1))
    days: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for channel, user, text, ts in team_messages(n_messages, seed):
        day = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
        msgs = days.setdefault((channel, day), [])
        msgs.append({"type": "message", "user": user, "text": text, "ts": f"{ts:.6f}"})
        if len(msgs) == 3:  # a little of what real exports hold besides people talking; the importer skips it
            msgs.append({"type": "message", "subtype": "bot_message", "bot_id": "B0DEMOBOT", "username": "deploybot",
                         "text": "Deploy finished: build green", "ts": f"{ts + 0.5:.6f}"})
    names = dict(CHANNELS)
    for (channel, day), msgs in days.items():
        folder = out / names[channel]
        folder.mkdir(exist_ok=True)
        (folder / f"{day}.json").write_text(json.dumps(msgs, indent=1))
    return out


def build_demo_model(data_dir: Path, time_budget: float, *, hidden: int = DEMO_HIDDEN, progress: bool = True,
                     log: TextIO | None = None) -> Path:
    """Synthetic export -> store -> a briefly trained model with its copy index. Returns the .onnx path."""
    from bot.jobs import chat_store_data, train_and_export
    from bot.progress import TrainingBar
    from training.ingest_slack import ingest_slack_export
    from training.models import ModelConfig
    from training.speaker_slots import CHAT_SPEAKER_SLOTS
    from training.store import Store
    from training.trainer import TrainConfig

    log = log or sys.stderr
    export = write_demo_export(data_dir / "team-export")
    db = data_dir / "mimic.db"
    with Store.open(db) as store:
        report = ingest_slack_export(export, store)
    print(f"mimic demo: imported the team's chat into {db}: {report.summary()}", file=log)
    model_dir = data_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)  # a fresh run, not a resume of an older demo
    data = chat_store_data(db)
    train_cfg = TrainConfig(time_budget=time_budget, batch_size=32, seq_len=96, lr=4e-3, eval_every=0,
                            checkpoint_every=10_000, warmup_steps=20)
    bar = TrainingBar(None, time_budget, disable=not progress)
    try:
        model_cfg = ModelConfig(hidden=hidden, speaker_slots=CHAT_SPEAKER_SLOTS)
        result, onnx = train_and_export(data, model_cfg, train_cfg, model_dir, on_progress=bar)
    finally:
        bar.close()
    if onnx is None:
        from bot.errors import UsageError

        raise UsageError("demo training was interrupted before a model was written")
    print(f"mimic demo: trained {result.step} steps in {result.elapsed:.0f} s, held-out {result.val_bpc:.2f} bits/char",
          file=log)
    return onnx


GREETING = """\
Mimic demo: a made-up team (ada, grace, linus, marvin, yoda; sam is new) chatting for a month.
Try:  who  |  impersonate ada  |  impersonate grace Good morning  |  impersonate "Master Yoda"  |  help  |  quit"""


def run_demo(data_dir: str | Path = "data/demo", time_budget: float = DEFAULT_TIME_BUDGET, *,
             retrain: bool = True, stdin: TextIO | None = None, stdout: TextIO | None = None,
             progress: bool = True) -> int:
    """Build (or reuse, with retrain=False) the demo model, then serve the console on it."""
    from bot.capture import StoreAccess
    from bot.commands import Commands, ModelGate
    from bot.config import Settings, StorageSettings
    from bot.console_adapter import run_console

    data_dir = Path(data_dir)
    onnx = data_dir / "model" / "model.onnx"
    if retrain or not onnx.exists():
        onnx = build_demo_model(data_dir, time_budget, progress=progress)
    settings = Settings(storage=StorageSettings(data_dir=str(data_dir), database=str(data_dir / "mimic.db"),
                                                model=str(onnx)))
    gate = ModelGate.from_settings(settings, watch_seconds=None)
    try:
        return run_console(Commands(settings, gate, StoreAccess(settings.storage.database_path)), stdin, stdout,
                           greeting=GREETING)
    finally:
        gate.close()
