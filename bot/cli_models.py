"""`mimic models list|promote|rollback`, `mimic retrain`, `mimic scheduler`: the model registry and retraining.

Each reads the config (`--config`, or $MIMIC_CONFIG) and takes `--data-dir`, `--db` and `--model` (the
registry directory) flags that win over it, so scripts need no config file. Handlers parse and delegate to
export/registry.py, bot/retrain.py and bot/scheduler.py; torch is loaded only by `retrain` and `scheduler`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from bot.errors import ConfigError, UsageError

log = logging.getLogger(__name__)


def _settings(args: argparse.Namespace) -> Any:
    from bot.config import load_settings

    return load_settings(args.config, os.environ).override(data_dir=args.data_dir, database=args.db,
                                                           model=args.model)


def _registry(args: argparse.Namespace) -> Any:
    from export.registry import Registry

    path = _settings(args).storage.model_path
    if path.suffix.lower() == ".onnx":
        raise ConfigError(f"[storage] model is one file ({path}); the model registry is a directory")
    return Registry.open(path)


def _serving_states(registry: Any, versions: list[Any]) -> dict[str, str]:
    """What each promoted version is to the bots now: serving, was serving (rollback goes back to it), rolled
    back (taken off after it served), or promoted (before the history was kept)."""
    stack, named = registry.promotion_stack(), {e.get("version") for e in registry.history()}
    out = {}
    for v in versions:
        if v.state == "promoted":
            out[v.name] = ("serving" if v.current else "was serving" if v.name in stack
                           else "rolled back" if v.name in named else "promoted")
    return out


def _table(versions: list[Any], problem: str | None, states: dict[str, str]) -> str:
    if not versions:
        return "no model versions yet; run `mimic retrain`"
    rows = [("", "VERSION", "STATE", "CREATED", "PARENT", "BITS/CHAR", "MESSAGES", "TRAINING", "WHY")]
    for v in versions:
        state = states.get(v.name, v.state)
        m = v.manifest
        bpc = m.get("val_bpc")
        training = m.get("training") or {}
        decision = (m.get("decision") or {}).get("reason") or ("in progress or interrupted"
                                                               if v.state == "incomplete" else "")
        messages = ((m.get("data") or {}).get("watermark") or {}).get("messages")
        rows.append(("*" if v.current else "", v.name, state, str(m.get("created", ""))[:16].replace("T", " "),
                     m.get("parent") or "-", f"{bpc:.4f}" if isinstance(bpc, int | float) else "-",
                     f"{messages:,}" if isinstance(messages, int) else "-",
                     f"{training.get('mode', '-')}, {training.get('steps', '?')} steps, {training.get('device', '?')}"
                     if training else "-", decision))  # the last column: shown whole
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    if problem:
        lines.append(f"warning: {problem}; the bots keep serving the model they have loaded")
    return "\n".join(line.rstrip() for line in lines)


def run_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    versions = registry.list_versions()
    if args.json:
        print(json.dumps([v.as_dict() for v in versions], ensure_ascii=False, indent=2))
    else:
        print(_table(versions, registry.pointer_problem() if versions else None, _serving_states(registry, versions)))
    return 0


def _servable(model_path: Path) -> None:
    """Refuse a version the bots could not serve, before `current` moves: load it as they do (the engine
    only, no torch), so a broken or incomplete version is a one-line error here, not a log line in every bot."""
    from engine.errors import ModelLoadError, damage
    from engine.model_source import load_model

    try:
        load_model(model_path)
    except ModelLoadError as exc:
        raise UsageError(f"version {model_path.parent.name} cannot be served ({exc}); `current` is unchanged") from exc
    except Exception as exc:  # a damaged file the engine did not foresee: still the version's fault
        raise UsageError(f"version {model_path.parent.name} cannot be served ({damage(exc)}); "
                         "`current` is unchanged") from exc


def _picked_up(args: argparse.Namespace) -> str:
    """When running bots serve the new pointer: they check it every [storage] watch_seconds."""
    return f"running bots pick it up within {_settings(args).storage.watch_seconds:g} s"


def run_promote(args: argparse.Namespace) -> int:
    registry = _registry(args)
    found = registry.locate(args.version)
    if found is not None and found[0] == "rejected":  # the admin may know better, but should know what it was
        reason = (registry.manifest(args.version).get("decision") or {}).get("reason") or "no reason recorded"
        log.warning("retraining rejected %s: %s; promoting it anyway, as asked", args.version, reason)
    previous = registry.promote(args.version, "promoted by hand (mimic models promote)", check=_servable)
    was = f" (was {previous})" if previous and previous != args.version else ""
    print(f"mimic: promoted {args.version}{was}; {_picked_up(args)}", file=sys.stderr)
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    now, was = _registry(args).rollback("rolled back by hand (mimic models rollback)", check=_servable)
    print(f"mimic: rolled back to {now}" + (f" (was {was})" if was else "") + f"; {_picked_up(args)}",
          file=sys.stderr)
    return 0


# Flags checked before a run starts, so a typo is an error, not a failed (or, for --tolerance, a wrongly
# promoted) run in the registry's history.
_POSITIVE = ("time_budget", "lr", "warm_lr")
_AT_LEAST_ONE = ("steps", "hidden", "layers", "batch_size", "seq_len", "threads")


def _check_retrain_flags(args: argparse.Namespace) -> None:
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    for name in _POSITIVE:
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UsageError(f"{flag(name)} must be a positive number, not {value}")
    for name in _AT_LEAST_ONE:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"{flag(name)} must be at least 1, not {value}")
    if args.tolerance is not None and not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise UsageError(f"--tolerance must be a number of bits/char, 0 or more, not {args.tolerance}")
    if args.speaker_slots is not None and args.speaker_slots < 0:
        raise UsageError(f"--speaker-slots must be 0 (unconditioned) or more, not {args.speaker_slots}")
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be 0 or more, not {args.checkpoint_every}")
    if args.device is not None and args.device not in ("auto", "cpu", "cuda") and not args.device.startswith("cuda:"):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, not {args.device!r}")
    if args.arch is not None:
        from training.models import ARCHS

        if args.arch not in ARCHS:
            raise UsageError(f"--arch must be one of {', '.join(ARCHS)}, not {args.arch!r}")


def _retrain_options(args: argparse.Namespace) -> Any:
    from bot.retrain import options_from_settings

    _check_retrain_flags(args)
    model = {k: v for k, v in (("arch", args.arch), ("hidden", args.hidden), ("layers", args.layers),
                                ("speaker_slots", args.speaker_slots)) if v is not None}
    return options_from_settings(
        _settings(args), time_budget=args.time_budget, steps=args.steps, from_scratch=args.from_scratch or None,
        model=model or None, tolerance=args.tolerance, batch_size=args.batch_size, seq_len=args.seq_len,
        lr=args.lr, warm_lr=args.warm_lr,
        checkpoint_every=args.checkpoint_every, threads=args.threads, device=args.device, seed=args.seed)


class _LazyBar:
    """A training bar that appears when training starts (not during the catch-up)."""

    def __init__(self, steps: int | None, time_budget: float | None):
        self.steps, self.time_budget, self.bar = steps, time_budget, None

    def __call__(self, p: Any) -> None:
        from bot.progress import TrainingBar

        if self.bar is None:
            self.bar = TrainingBar(self.steps, None if self.steps else self.time_budget)
        self.bar(p)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_retrain(args: argparse.Namespace) -> int:
    from bot.retrain import run_retrain as retrain

    opts = _retrain_options(args)
    bar = _LazyBar(opts.steps, opts.time_budget)
    try:
        outcome = retrain(opts, trigger="manual", on_progress=bar, log_outcome=False)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(outcome.as_dict(), ensure_ascii=False, indent=2))
    if not outcome.ok:
        print(f"mimic: {outcome.summary()}", file=sys.stderr)
        # Ctrl-C exits 130 whichever stage it lands in; SIGTERM 143, as everywhere else
        return (143 if outcome.terminated else 130) if outcome.interrupted else 2
    if not args.json:
        print(outcome.summary())
    return 0


def run_scheduler(args: argparse.Namespace) -> int:
    from bot.retrain import options_from_settings
    from bot.scheduler import start_worker

    settings = _settings(args)
    start_worker(options_from_settings(settings), settings.retrain.schedule, settings.retrain.timezone)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help="config file (default $MIMIC_CONFIG, else built-in defaults)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides [storage] data_dir)")
    p.add_argument("--db", metavar="PATH", help="message store (overrides [storage] database)")
    p.add_argument("--model", metavar="DIR", help="model registry directory (overrides [storage] model; default <data dir>/models)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, promote or roll back model versions in the registry")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("list", help="every version, which one is current, and why each was (not) promoted")
    _common(a)
    a.add_argument("--json", action="store_true", help="a JSON list of versions with their manifest fields")
    a.set_defaults(run=run_list)
    a = actions.add_parser("promote", help="serve VERSION (checked to load first; the bots pick it up without "
                                           "a restart)")
    a.add_argument("version", metavar="VERSION")
    _common(a)
    a.set_defaults(run=run_promote)
    a = actions.add_parser("rollback", help="serve the previously promoted version again")
    _common(a)
    a.set_defaults(run=run_rollback)

    p = sub.add_parser("retrain", help="run the retraining job once: catch up, train, evaluate, promote",
                       description="Fetch new messages, train (warm start from the serving model), export with "
                                   "the parity check, and promote the result if it is not worse. Exit code 2 "
                                   "when the run failed or another run is in progress.")
    _common(p)
    p.add_argument("--from-scratch", action="store_true", help="train a new model instead of fine-tuning")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="seconds of training ([retrain] time_budget)")
    p.add_argument("--steps", type=int, metavar="N", help="stop after N steps (or the time budget, if sooner)")
    p.add_argument("--tolerance", type=float, help="bits/char the candidate may be worse ([retrain] tolerance)")
    m = p.add_argument_group("model (default: the serving model's, else Mimic's default; a model other than the "
                             "serving one is trained from scratch)")
    m.add_argument("--arch")
    m.add_argument("--hidden", type=int)
    m.add_argument("--layers", type=int)
    m.add_argument("--speaker-slots", type=int, metavar="N", help="rows of the speaker embedding: one per person "
                   "plus one (default 1024 for gru/lstm; changing it trains from scratch)")
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--seq-len", type=int)
    t.add_argument("--lr", type=float, help="learning rate from scratch (default 3e-3)")
    t.add_argument("--warm-lr", type=float, help="learning rate when fine-tuning (default 1e-3)")
    t.add_argument("--checkpoint-every", type=int, metavar="N", help="steps between checkpoints (default 200)")
    t.add_argument("--threads", type=int)
    t.add_argument("--device", help="auto (CUDA when present), cpu or cuda")
    t.add_argument("--seed", type=int)
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(run=run_retrain)

    p = sub.add_parser("scheduler", help="the worker: retrain on the [retrain] schedule and on admin requests",
                       description="Runs until stopped. Start exactly one (the Procfile's worker process).")
    _common(p)
    p.set_defaults(run=run_scheduler)

