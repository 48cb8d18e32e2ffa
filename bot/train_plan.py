"""What a `mimic train` run is, from its flags and, when it resumes, from its checkpoint.

A fresh run takes the flags, and the defaults for what is not given. A resumed run is the same run: its
model is the checkpoint's (a model flag that asks for another is refused: the weights have one shape), its
training settings are the checkpoint's unless given again (then they are used, with a warning that the run no
longer continues exactly), and with no new limit it stops where it was planned to (the checkpoint's last
step and time budget; the time already trained counts). `--steps N` and `--time-budget S` on a resume train
N more steps or S more seconds. Its run directory is the checkpoint's unless `--out` names another; a fresh
run never writes over another run's checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from bot.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_TIME_BUDGET = 600.0  # seconds, when a fresh run is given neither --steps nor --time-budget
# Training settings a resume takes from its checkpoint unless given again (flag name: TrainConfig field).
TRAIN_FLAGS = {"--batch-size": "batch_size", "--seq-len": "seq_len", "--lr": "lr",
               "--valid-fraction": "valid_fraction", "--eval-every": "eval_every",
               "--checkpoint-every": "checkpoint_every", "--seed": "seed", "--precision": "precision"}


def model_config(args: argparse.Namespace, ckpt: dict[str, Any] | None) -> Any:
    """The ModelConfig: the flags' (defaults filled in) for a fresh run, the checkpoint's for a resume."""
    from training.models import ModelConfig
    from training.speaker_slots import CHAT_SPEAKER_SLOTS

    if args.speaker_slots and not args.db:
        raise UsageError("--speaker-slots needs --db: a text file names no speakers")
    if ckpt is not None:
        return _resumed_model(args, ModelConfig.from_dict(ckpt["model_config"]))
    arch = args.arch or "gru"
    slots = args.speaker_slots
    if slots is None:
        slots = CHAT_SPEAKER_SLOTS if args.db and arch in ("gru", "lstm") else 0
    try:
        return ModelConfig(arch=arch, hidden=args.hidden or 256,
                           layers=args.layers if args.layers is not None else (3 if arch == "darknet-rnn" else 1),
                           dropout=args.dropout or 0.0, batch_norm=not args.no_batch_norm, speaker_slots=slots)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _resumed_model(args: argparse.Namespace, cfg: Any) -> Any:
    asked = {"--arch": (args.arch, cfg.arch), "--hidden": (args.hidden, cfg.hidden),
             "--layers": (args.layers, cfg.layers), "--dropout": (args.dropout, cfg.dropout),
             "--no-batch-norm": (not args.no_batch_norm if args.no_batch_norm else None, cfg.batch_norm),
             "--speaker-slots": (args.speaker_slots, cfg.speaker_slots)}
    clash = [f"{flag} (the run has {theirs})" for flag, (ours, theirs) in asked.items()
             if ours is not None and ours != theirs]
    if clash:
        raise UsageError(f"{args.resume}: a resumed run keeps its model; {', '.join(clash)} asks for another. "
                         "Leave the model flags out to resume, or start a new run without --resume")
    return cfg


def train_config(args: argparse.Namespace, ckpt: dict[str, Any] | None) -> Any:
    """The TrainConfig: the flags' for a fresh run; for a resume the checkpoint's settings, with what was given
    again, and the rest of the planned run unless --steps or --time-budget asks for more."""
    from training.trainer import TrainConfig

    given = {field: getattr(args, field) for field in TRAIN_FLAGS.values() if getattr(args, field) is not None}
    machine = {"device": args.device, "threads": args.threads}  # where it runs now, not where it ran
    if ckpt is None:
        budget = args.time_budget if (args.steps is not None or args.time_budget is not None) else DEFAULT_TIME_BUDGET
        return TrainConfig(steps=args.steps, time_budget=budget, **given, **machine)
    saved = {f.name: ckpt.get("train_config", {}).get(f.name) for f in fields(TrainConfig)}
    for flag, field in TRAIN_FLAGS.items():
        if field in given and saved[field] is not None and given[field] != saved[field]:
            log.warning("%s %s differs from the run's %s: the run goes on with it, not exactly as it would have",
                        flag, given[field], saved[field])
    # Everything the run trained with (warm-up, decay, clipping too), but where and how long it runs now.
    settings = {k: v for k, v in saved.items() if v is not None and k not in ("steps", "time_budget", *machine)}
    settings |= given
    steps, budget = args.steps, args.time_budget
    if steps is None and budget is None:
        steps, budget = _rest_of_plan(args.resume, ckpt)
    return TrainConfig(steps=steps, time_budget=budget, **settings, **machine)


def _rest_of_plan(resume: str, ckpt: dict[str, Any]) -> tuple[int | None, float | None]:
    """The steps and seconds left of the run the checkpoint belongs to."""
    plan = ckpt.get("plan") or {}
    saved = ckpt.get("train_config") or {}
    last_step = plan.get("last_step")
    total = plan.get("time_budget", saved.get("time_budget"))
    steps = last_step - ckpt["step"] if last_step is not None else saved.get("steps")
    seconds = total - ckpt["schedule"]["elapsed"] if total else None
    if (steps is not None and steps <= 0) or (seconds is not None and seconds <= 0) or (steps, seconds) == (None, None):
        raise UsageError(f"{resume}: that run already trained all it was planned to (step {ckpt['step']}); "
                         "give --steps N or --time-budget SECONDS to train it further")
    return steps, seconds


def run_dir(args: argparse.Namespace) -> Path:
    """The run directory, made now (so that one that cannot be made fails before training). A fresh run may
    not take a directory holding another run's checkpoint; a resume writes over its own."""
    if args.out:
        out = Path(args.out)
    elif args.resume:
        out = Path(args.resume).parent
    else:
        return _new_default_dir()
    held = out / "last.pt"
    if held.exists() and not (args.resume and held.resolve() == Path(args.resume).resolve()):
        raise UsageError(f"{out}: already holds a run ({held}); resume it with --resume {held}, or choose another "
                         "--out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _new_default_dir() -> Path:
    """runs/<timestamp>, or runs/<timestamp>-2, ... when another run started in the same second (under torchrun
    every rank names the same one: only rank 0 writes there)."""
    base = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        base.mkdir(parents=True, exist_ok=True)
        return base
    for n in range(1, 1000):
        out = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            out.mkdir(parents=True)
            return out
        except FileExistsError:
            continue
    raise UsageError(f"{base}: too many runs started in the same second; give --out")


def check_same_text(resume: str, ckpt: dict[str, Any], digest: str) -> None:
    """Warn when a resume trains on another text than its run did: it goes on, but not exactly."""
    corpus = ckpt.get("corpus") or {}
    if corpus.get("digest") and corpus["digest"] != digest:
        log.warning("%s: the run was trained on another text (%s, %s bytes); it goes on with this one, not "
                    "exactly as it would have", resume, corpus.get("source", "a chat store"),
                    f"{corpus['train_chars']:,}" if isinstance(corpus.get("train_chars"), int) else "?")
