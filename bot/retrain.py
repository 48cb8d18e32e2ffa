"""The nightly retraining job: catch up, build the corpus, train, export, evaluate, promote or keep, report.

`mimic retrain` runs it once and `mimic scheduler` (bot/scheduler.py) on a cron schedule; both call
`run_retrain`. It crosses every room (training/, export/, engine/), which is why it lives in bot/, next to
the shared helpers of bot/jobs.py. torch is imported only inside functions, so the bot processes can import
this module (and bot/scheduler.py's `RetrainQueue`) without loading it.

Safety, in order of what can go wrong:
- One run at a time: `RunLock` holds flock on `<data_dir>/retrain.lock`; a second run (scheduled or by hand)
  exits at once with RetrainBusyError (one line, exit 2).
- Nothing touches `current` until a candidate is complete, parity-checked, evaluated and judged not worse
  than the serving model by more than `tolerance` bits/char; the registry then switches it atomically.
- A failure at any step (Slack or Discord API down, parity, disk full, a worse candidate) keeps `current`,
  records the reason in the run log (`<registry>/runs.jsonl`) and, for a finished candidate, its manifest; the
  next run simply tries again. A killed run leaves only `staging/<name>/`, which the next run resumes from
  (same parent and mode) or deletes.

Admin `retrain` in the bots goes through the worker's mailbox in bot/scheduler.py (`RetrainQueue`): the bot
process never trains.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import signal
import sqlite3
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.errors import ConfigError, UsageError
from engine.errors import EngineError
from export.errors import ExportError, ParityError, RegistryError
from export.registry import CHECKPOINT_FILE, MODEL_FILE, Registry, iso, utc_now, version_name
from training.errors import ApiError, TrainingError

log = logging.getLogger(__name__)

LOCK_FILE = "retrain.lock"
EventFn = Callable[[str], None]


class RetrainBusyError(UsageError):
    """Another retraining run holds the lock."""


# ---- options -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlackCatchUp:
    token: str = field(repr=False)
    api_url: str = ""  # "" -> Slack's
    channel_sets: tuple[tuple[str, ...] | None, ...] = (None,)  # None: the public channels the bot is in
    max_rate_limit_retries: int = 5


@dataclass(frozen=True)
class DiscordCatchUp:
    token: str = field(repr=False)
    channels: tuple[str, ...] = ("public",)  # as [discord] learn_channels: "public", channel ids, "#names"


@dataclass(frozen=True)
class ReportTarget:
    """Where the outcome goes besides the log: a Slack or Discord channel."""

    platform: str  # slack | discord
    channel: str
    token: str = field(repr=False)
    api_url: str = ""  # "" -> the platform's


@dataclass(frozen=True)
class RetrainOptions:
    data_dir: Path
    db: Path
    registry: Path
    time_budget: float | None = 600.0  # seconds of training per run ...
    steps: int | None = None  # ... or steps, whichever ends first
    from_scratch: bool = False
    from_scratch_every_days: int = 30  # 0: warm-start whenever there is a current model
    keep_versions: int = 5
    tolerance: float = 0.02  # bits/char the candidate may be worse than current and still be promoted
    copy_tolerance: float = 0.25  # how much more often its sample may copy training messages
    model: dict[str, Any] = field(default_factory=dict)  # arch/hidden/layers for a from-scratch model
    valid_fraction: float = 0.05
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 3e-3  # from scratch
    warm_lr: float = 1e-3  # fine-tuning: a smaller step keeps what the model knew
    checkpoint_every: int = 200  # a killed run loses at most this many steps
    eval_every: int = 0  # periodic validation costs training time; the final one always runs
    threads: int | None = None
    device: str = "auto"  # CUDA when present
    seed: int = 1337
    sample_messages: int = 16  # generated per model for the copy-rate check
    sample_chars: int = 160
    slack: SlackCatchUp | None = None
    discord: DiscordCatchUp | None = None
    report: ReportTarget | None = None


def options_from_settings(settings: Any, **overrides: Any) -> RetrainOptions:
    """RetrainOptions from bot.config.Settings; keyword arguments (CLI flags) win."""
    storage, retrain, slack = settings.storage, settings.retrain, settings.slack
    registry = storage.model_path
    if registry.suffix.lower() == ".onnx":
        raise ConfigError(f"[storage] model is one file ({registry}); retraining needs a registry directory "
                          "(set model = \"\" for <data_dir>/models, or a directory)")
    catch_up = None
    if slack.bot_token:
        entries = tuple(slack.learn_channels)
        explicit = tuple(e for e in entries if e != "public")
        sets: tuple[tuple[str, ...] | None, ...] = ((None,) if "public" in entries else ()) + \
            ((explicit,) if explicit else ())
        catch_up = SlackCatchUp(slack.bot_token, slack.api_url, sets) if sets else None
    learn = settings.discord.learn_channels  # [] turns learning, and so the catch-up, off
    discord_catch_up = DiscordCatchUp(settings.discord.token, tuple(learn)) if settings.discord.token and learn \
        else None
    report = None
    if retrain.report_channel:
        platform, _, channel = retrain.report_channel.partition(":")
        token = slack.bot_token if platform == "slack" else settings.discord.token
        if token:
            report = ReportTarget(platform, channel, token, slack.api_url if platform == "slack" else "")
        else:
            log.warning("[retrain] report_channel is %s but no %s token is set; reporting to the log only",
                        retrain.report_channel, platform)
    base = RetrainOptions(
        data_dir=Path(storage.data_dir), db=storage.database_path, registry=registry,
        time_budget=retrain.time_budget, from_scratch_every_days=retrain.from_scratch_every_days,
        keep_versions=retrain.keep_versions, tolerance=retrain.tolerance, slack=catch_up,
        discord=discord_catch_up, report=report)
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


# ---- the lock ------------------------------------------------------------------------------------------


class RunLock:
    """flock on `<data_dir>/retrain.lock`, taken without waiting; the holder's pid and start time are written
    into the file so the second run can say who holds it. The kernel drops it when the holder dies."""

    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / LOCK_FILE
        self._file: Any = None

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+")  # noqa: SIM115 - held for the whole run
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot create the retraining lock ({exc.strerror}); "
                              "check [storage] data_dir") from exc
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RetrainBusyError(f"another retraining run is in progress ({holder}; lock {self.path}); "
                                   "this one exits, try again when it has finished") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, started {iso(utc_now())}")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.truncate(0)
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


# ---- outcome -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    bpc: float
    copy_rate: float | None  # share of sampled messages that copy a training message
    samples: int


INTERRUPTED = "interrupted"  # how a run stopped by Ctrl-C during training says so


@dataclass(frozen=True)
class RetrainOutcome:
    status: str  # promoted | kept | failed
    reason: str
    run: str
    version: str | None = None  # the candidate, when one was trained
    current: str | None = None  # the serving version after the run
    stage: str | None = None  # where a failed run stopped
    candidate_bpc: float | None = None
    current_bpc: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    @property
    def interrupted(self) -> bool:
        """Stopped by Ctrl-C (or SIGTERM) during training, its checkpoint kept for the next run."""
        return self.status == "failed" and self.stage == "train" and self.reason.startswith(INTERRUPTED)

    @property
    def terminated(self) -> bool:
        """Interrupted by SIGTERM (a service manager stopping it) rather than Ctrl-C."""
        return self.interrupted and self.reason.startswith(f"{INTERRUPTED} by SIGTERM")

    def summary(self) -> str:
        if self.status == "promoted":
            return f"retraining promoted {self.version}: {self.reason}"
        if self.status == "kept":
            return f"retraining kept {self.current or 'no model'}; candidate {self.version} not promoted: {self.reason}"
        return f"retraining failed at {self.stage}: {self.reason}; still serving {self.current or 'no model'}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "notes": list(self.notes), "summary": self.summary()}


class _Failed(Exception):
    """A step failed for a reason worth recording; current stays."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage, self.reason = stage, reason


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"disk full ({exc.strerror or 'no space left on device'}{f': {exc.filename}' if exc.filename else ''})"
    if isinstance(exc, OSError):
        return f"I/O error: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}"
    if isinstance(exc, ParityError):
        return f"export parity check failed: {exc}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


_EXPECTED = (TrainingError, ExportError, EngineError, OSError, sqlite3.Error)


# ---- the steps -----------------------------------------------------------------------------------------


def catch_up(opts: RetrainOptions, events: EventFn) -> list[str]:
    """Fetch what is newer than the watermarks, on top of what live capture stored."""
    notes: list[str] = []
    if opts.slack is not None:
        from training.history_slack import DEFAULT_API_URL, fetch_slack_history, slack_client
        from training.store import Store

        events("catching up with Slack history")
        client = slack_client(opts.slack.token, opts.slack.api_url or DEFAULT_API_URL,
                              max_rate_limit_retries=opts.slack.max_rate_limit_retries)
        with Store.open(opts.db) as store:
            for channels in opts.slack.channel_sets:
                report = fetch_slack_history(client, store, channels=list(channels) if channels else None)
                notes.append(f"Slack: {report.summary()}")
    if opts.discord is not None:
        from training.history_discord import fetch_discord_history
        from training.store import Store

        events("catching up with Discord history")
        with Store.open(opts.db) as store:  # the learn channels' history through the REST API, no gateway
            report = fetch_discord_history(opts.discord.token, store, channels=list(opts.discord.channels))
        notes.append(f"Discord: {report.summary()}")
    return notes


@dataclass(frozen=True)
class Plan:
    baseline: str | None  # the version the candidate is compared with (current, or the last good one)
    from_scratch: bool
    why: str
    model: dict[str, Any]  # ModelConfig as a dict
    lineage_started: str
    init_from: Path | None = None
    resume_from: str | None = None  # a killed run's staging version to continue
    resume_ckpt: Path | None = None
    steps: int | None = None
    time_budget: float | None = None
    pointer: str | None = None  # what `current` said when the run began


def _age_days(started: str | None, now: datetime) -> float:
    try:
        return (now - datetime.fromisoformat(started or "")).total_seconds() / 86400
    except (TypeError, ValueError):
        return math.inf


def plan_training(registry: Registry, opts: RetrainOptions, now: datetime) -> Plan:
    """Warm start from the serving version, or from scratch when there is none, when asked, or every N days.

    A warm start keeps the serving model's config (its speaker slots too: the trainer extends its slot table
    for new people). A from-scratch GRU or LSTM is speaker-conditioned (CHAT_SPEAKER_SLOTS) unless
    `opts.model` says otherwise, so an older unconditioned lineage gains conditioning at its next restart.
    """
    from training.models import ModelConfig
    from training.speaker_slots import CHAT_SPEAKER_SLOTS

    baseline = registry.current() or registry.last_good()
    manifest = registry.manifest(baseline) if baseline else {}
    base_model = manifest.get("model") if isinstance(manifest.get("model"), dict) else None
    wanted = {**(base_model or ModelConfig().to_dict()), **opts.model}
    if wanted.get("arch") == "darknet-rnn" and "speaker_slots" not in opts.model:
        wanted["speaker_slots"] = 0  # Darknet's model is never speaker-conditioned
    try:
        ModelConfig.from_dict(wanted)
    except (TypeError, ValueError) as exc:
        raise _Failed("train", f"bad model settings: {exc}") from exc
    lineage = manifest.get("lineage_started") or manifest.get("created")
    age = _age_days(lineage, now)
    if baseline is None:
        scratch, why = True, "no current model"
    elif opts.from_scratch:
        scratch, why = True, "asked for (--from-scratch)"
    elif opts.from_scratch_every_days and age >= opts.from_scratch_every_days:
        scratch, why = True, f"the last from-scratch training was {age:.0f} days ago (every " \
                             f"{opts.from_scratch_every_days} days)"
    elif base_model is None:
        scratch, why = True, f"{baseline}'s manifest does not say what model it is"
    elif ModelConfig.from_dict(wanted).to_dict() != ModelConfig.from_dict(base_model).to_dict():
        scratch, why = True, f"the model asked for differs from {baseline}'s"
    elif not registry.checkpoint(baseline).is_file():
        scratch, why = True, f"{baseline} has no checkpoint"
    else:
        scratch, why = False, f"warm start from {baseline}"
    if scratch and "speaker_slots" not in opts.model and wanted.get("arch", "gru") in ("gru", "lstm"):
        wanted = {**wanted, "speaker_slots": wanted.get("speaker_slots") or CHAT_SPEAKER_SLOTS}
    model = ModelConfig.from_dict(wanted).to_dict()
    return Plan(baseline, scratch, why, model, iso(now) if scratch or not lineage else str(lineage),
                None if scratch else registry.checkpoint(baseline), steps=opts.steps, time_budget=opts.time_budget,
                pointer=registry.pointer())


def find_resumable(registry: Registry, plan: Plan) -> Plan:
    """Continue a killed run's last checkpoint when it was training the same thing from the same parent."""
    from training.checkpoint import load_checkpoint

    for v in sorted(registry.staging_versions(), key=lambda v: v.name, reverse=True):
        m = v.manifest
        ckpt_path = v.path / "last.pt"
        same = (m.get("parent") == (None if plan.from_scratch else plan.baseline)
                and m.get("model") == plan.model and ckpt_path.is_file())
        if not same:
            continue
        try:
            ckpt = load_checkpoint(ckpt_path)
        except TrainingError as exc:
            log.warning("cannot resume %s: %s", v.name, exc)
            continue
        done, spent = int(ckpt.get("step", 0)), float((ckpt.get("schedule") or {}).get("elapsed", 0.0))
        steps = max(1, plan.steps - done) if plan.steps else None
        budget = max(0.1 * plan.time_budget, plan.time_budget - spent) if plan.time_budget else None
        return replace(plan, resume_from=v.name, resume_ckpt=ckpt_path, steps=steps, time_budget=budget,
                       why=f"{plan.why}; resuming {v.name} at step {done}")
    return plan


def score_model(model_path: Path, eval_bytes: bytes, index: Any, speakers: list[str], opts: RetrainOptions) -> Score:
    """Bits/char on the evaluation bytes and the copy rate of a fixed sample (same prompts and seeds for
    every model, checked against the same index), with the serving engine's own code."""
    from engine.evaluate import bits_per_char
    from engine.generate import Request
    from engine.impersonate import END_OF_MESSAGE, build_prompt, finish_text
    from engine.model_source import load_model
    from engine.sampling import SamplingConfig
    from training.speaker_slots import speaker_ids

    model = load_model(model_path, require_copy_index=False)  # scored, not served: `index` is given
    slots = model.speakers.slots()  # a speaker-conditioned model reads the slice as it was trained: writers' slots
    bpc = bits_per_char(model.session, eval_bytes, speakers=speaker_ids(eval_bytes, slots) if slots else None)
    people = [sp for sp in (model.speakers.find(s) for s in speakers) if sp is not None]
    if index is None or not people or opts.sample_messages < 1:
        return Score(bpc, None, 0)
    prompts = [build_prompt(model, people[i % len(people)], None, None, 0) for i in range(opts.sample_messages)]
    requests = [Request(p.text, opts.sample_chars * 4, (opts.seed, i), END_OF_MESSAGE, p.speakers, p.speaker)
                for i, p in enumerate(prompts)]
    raw = model.generator.generate_bytes(requests, SamplingConfig(0.7))
    texts = [finish_text(model, None, r, opts.sample_chars) for r in raw]  # 0.7: the serving default
    copies = sum(1 for t in texts if t and index.copies(t))
    return Score(bpc, copies / len(texts), len(texts))


def decide(candidate: Score, baseline: str | None, current: Score | None, problem: str | None,
           opts: RetrainOptions) -> tuple[bool, str]:
    """(promote?, why) — the candidate may be worse by at most `tolerance` bits/char."""
    if not math.isfinite(candidate.bpc):
        return False, f"its bits/char on the evaluation slice is {candidate.bpc}"
    if baseline is None:
        return True, f"first model ({candidate.bpc:.4f} bits/char on the evaluation slice)"
    if current is None:
        return True, f"the serving model {baseline} cannot be evaluated ({problem}); candidate " \
                     f"{candidate.bpc:.4f} bits/char"
    delta = candidate.bpc - current.bpc
    versus = f"{candidate.bpc:.4f} vs {current.bpc:.4f} bits/char for {baseline} (tolerance {opts.tolerance})"
    if delta > opts.tolerance:
        return False, f"worse than {baseline}: {versus}"
    if (candidate.copy_rate is not None and current.copy_rate is not None
            and candidate.copy_rate > current.copy_rate + opts.copy_tolerance):
        return False, f"copies training messages too often: {candidate.copy_rate:.0%} of its sample vs " \
                      f"{current.copy_rate:.0%} for {baseline}"
    return True, f"not worse than {baseline}: {versus}"


def _watermark(db: Path) -> dict[str, Any]:
    from training.store import Store

    with Store.open(db, create=False) as store:
        stats = store.stats()
    return {"last_message": stats.get("last"), "messages": stats.get("messages")}


# ---- the run -------------------------------------------------------------------------------------------


def run_retrain(opts: RetrainOptions, *, trigger: str = "manual", on_event: EventFn | None = None,
                on_progress: Callable[[Any], None] | None = None, now: datetime | None = None,
                log_outcome: bool = True) -> RetrainOutcome:
    """One retraining run under the lock. Raises RetrainBusyError when another run holds it; every other
    failure is an outcome with status "failed" (recorded in the run log), never a changed `current`.
    The outcome is logged (the worker's report) unless `log_outcome` is False (the CLI prints it itself)."""
    events = on_event or (lambda message: None)
    with RunLock(opts.data_dir):
        try:
            if _nothing_to_learn_from(opts):  # a typo'd path must not leave a new, empty registry behind
                outcome = RetrainOutcome("failed", f"{opts.db}: no message store here; run `mimic ingest` first",
                                         version_name(now), stage="corpus")
            else:
                registry = Registry.open(opts.registry, create=True)
                outcome = _run_locked(registry, opts, trigger, events, on_progress, now or utc_now())
        except RegistryError as exc:
            outcome = RetrainOutcome("failed", str(exc), version_name(now), stage="registry")
    if log_outcome:
        log.log(logging.INFO if outcome.ok else logging.ERROR, "%s", outcome.summary())
    events(outcome.summary())
    if opts.report is not None:
        report_outcome(opts.report, outcome)
    return outcome


def _nothing_to_learn_from(opts: RetrainOptions) -> bool:
    """No store, no catch-up that would fill one, and no registry yet to record the failed run in."""
    return not opts.db.is_file() and opts.slack is None and opts.discord is None and not opts.registry.exists()


def _safe_log(registry: Registry, record: dict[str, Any]) -> None:
    try:
        registry.log_run(record)
    except OSError as exc:  # a full disk must not turn a recorded failure into a crash
        log.error("cannot write the run log %s: %s", registry.root, _reason(exc))


def _run_locked(registry: Registry, opts: RetrainOptions, trigger: str, events: EventFn,
                on_progress: Callable[[Any], None] | None, now: datetime) -> RetrainOutcome:
    run = version_name(now)
    _safe_log(registry, {"event": "started", "run": run, "trigger": trigger, "at": iso(utc_now())})
    state: dict[str, Any] = {"stage": "catch-up", "name": None, "notes": []}
    try:
        outcome = _steps(registry, opts, run, events, on_progress, now, state)
    except _Failed as exc:
        outcome = RetrainOutcome("failed", exc.reason, run, state["name"], registry.current(), exc.stage,
                                 notes=tuple(state["notes"]))
    except _EXPECTED as exc:
        outcome = RetrainOutcome("failed", _reason(exc), run, state["name"], registry.current(), state["stage"],
                                 notes=tuple(state["notes"]))
    except BaseException as exc:  # a bug or Ctrl-C: record it, keep the staging dir for a resume, re-raise
        _safe_log(registry, {"event": "finished", "run": run, "status": "failed", "stage": state["stage"],
                             "reason": f"{type(exc).__name__}: {exc}", "at": iso(utc_now())})
        raise
    if outcome.status == "failed" and state["name"] and not state.get("keep_staging"):
        try:
            registry.discard(state["name"])  # frees the space a full disk needs back
        except OSError as exc:
            log.error("cannot remove %s: %s", state["name"], _reason(exc))
    _safe_log(registry, {"event": "finished", "run": run, "at": iso(utc_now()), **outcome.as_dict()})
    return outcome


def _steps(registry: Registry, opts: RetrainOptions, run: str, events: EventFn,
           on_progress: Callable[[Any], None] | None, now: datetime, state: dict[str, Any]) -> RetrainOutcome:
    from bot.jobs import chat_store_data, export_for_serving, train_and_export
    from training.models import ModelConfig
    from training.trainer import TrainConfig

    try:
        state["notes"] += catch_up(opts, events)
    except ApiError as exc:
        raise _Failed("catch-up", f"{exc}; will try again next run") from exc

    state["stage"] = "corpus"
    events("building the corpus")
    data = chat_store_data(opts.db, opts.valid_fraction)
    if not data.valid:
        raise _Failed("corpus", "too few messages to hold out an evaluation slice")
    watermark = _watermark(opts.db)

    state["stage"] = "train"
    plan = find_resumable(registry, plan_training(registry, opts, now))
    name = version_name(now)
    staging = registry.start(name, {
        "created": iso(now), "parent": None if plan.from_scratch else plan.baseline, "run": run,
        "lineage_started": plan.lineage_started, "model": plan.model,
        "data": {"watermark": watermark, "train_chars": len(data.train), "valid_chars": len(data.valid),
                 "train_messages": data.info.get("train_messages"), "valid_messages": data.info.get("valid_messages")},
        "speakers": {s: v.get("messages") if isinstance(v, dict) else v for s, v in data.info["speakers"].items()},
    })
    state["name"] = name
    stale = [v.name for v in registry.staging_versions() if v.name not in (name, plan.resume_from)]
    for old in stale:  # a crashed run that cannot be resumed: its half-written version goes
        registry.discard(old)
    budget = " and ".join(x for x in (f"{plan.steps} steps" if plan.steps else "",
                                      f"{plan.time_budget:.0f} s" if plan.time_budget else "") if x)
    events(f"training {name}: {'from scratch' if plan.from_scratch else 'warm start'} ({plan.why}), {budget}")
    train_cfg = TrainConfig(
        steps=plan.steps, time_budget=plan.time_budget, batch_size=opts.batch_size, seq_len=opts.seq_len,
        lr=opts.lr if plan.from_scratch else opts.warm_lr, eval_every=opts.eval_every,
        checkpoint_every=opts.checkpoint_every, seed=opts.seed, device=opts.device, threads=opts.threads)
    result, _ = train_and_export(data, ModelConfig.from_dict(plan.model), train_cfg, staging, export=False,
                                 resume=plan.resume_ckpt, init_from=None if plan.resume_ckpt else plan.init_from,
                                 on_progress=_progress_events(events, on_progress))
    if result.interrupted:
        state["keep_staging"] = True  # Ctrl-C: the checkpoint is there to resume from
        by = " by SIGTERM" if result.stop_signal == signal.SIGTERM else ""
        raise _Failed("train", f"{INTERRUPTED}{by} at step {result.step}; the next run resumes from its checkpoint")

    state["stage"] = "export"
    events("exporting to ONNX (with the parity check)")
    try:
        export_for_serving(data, result.checkpoint, staging / MODEL_FILE)
    except ExportError as exc:
        raise _Failed("export", _reason(exc)) from exc
    os.replace(staging / "last.pt", staging / CHECKPOINT_FILE)
    if plan.resume_from:
        registry.discard(plan.resume_from)

    state["stage"] = "evaluate"
    events("evaluating the candidate and the serving model on the held-out slice")
    outcome = _evaluate_and_commit(registry, opts, run, name, plan, data, result, state, events)
    state["stage"] = "prune"
    try:
        registry.prune(opts.keep_versions)
    except OSError as exc:
        log.error("could not delete old versions: %s", _reason(exc))
    return outcome


def _progress_events(events: EventFn, on_progress: Callable[[Any], None] | None) -> Callable[[Any], None]:
    """Forward trainer progress to a bar, and every quarter of the run to the event stream (a requester)."""
    last = [0]

    def hook(p: Any) -> None:
        if on_progress is not None:
            on_progress(p)
        quarter = int(p.fraction_done * 4)
        if quarter > last[0]:
            last[0] = quarter
            events(f"training {quarter * 25}% done (step {p.step}, {p.bpc:.2f} bits/char)")

    return hook


def _evaluate_and_commit(registry: Registry, opts: RetrainOptions, run: str, name: str, plan: Plan, data: Any,
                         result: Any, state: dict[str, Any], events: EventFn) -> RetrainOutcome:
    from engine.copyindex import CopyIndex, index_path_for

    staging = registry.staging / name
    index_file = index_path_for(staging / MODEL_FILE)
    index = CopyIndex(index_file) if index_file.exists() else None
    speakers = list(data.info.get("speakers", {}))[:8]  # most messages first
    candidate = score_model(staging / MODEL_FILE, data.valid, index, speakers, opts)
    problem = registry.pointer_problem()
    current_score, current_problem = None, None
    if plan.baseline is not None:
        try:
            current_score = score_model(registry.model_path(plan.baseline), data.valid, index, speakers, opts)
        except EngineError as exc:
            current_problem = str(exc)
    promote, why = decide(candidate, plan.baseline, current_score, current_problem, opts)
    moved = registry.pointer()
    if promote and moved != plan.pointer:  # an admin promoted or rolled back by hand meanwhile: theirs wins
        promote, why = False, f"current was changed to {moved} during this run; not promoting over it ({why})"
    manifest = {**registry.manifest(name), "val_bpc": candidate.bpc, "parameters": result.parameters,
                "training": {"mode": "from-scratch" if plan.from_scratch else "warm-start", "why": plan.why,
                             "init_from": None if plan.from_scratch else plan.baseline,
                             "resumed_from": plan.resume_from, "steps": result.step, "elapsed": result.elapsed,
                             "chars_per_sec": result.chars_per_sec, "device": result.device,
                             "time_budget": plan.time_budget, "step_budget": plan.steps,
                             "train_val_bpc": result.val_bpc},
                "evaluation": {"eval_chars": len(data.valid), "bpc": candidate.bpc, "copy_rate": candidate.copy_rate,
                               "samples": candidate.samples, "current": plan.baseline,
                               "current_bpc": current_score.bpc if current_score else None,
                               "current_copy_rate": current_score.copy_rate if current_score else None}}
    if promote and problem and plan.baseline and moved is not None:
        why += f" (the current pointer was broken: {problem})"
    # The last stage before the registry changes: a worker told to stop (bot/scheduler.py) stops here too.
    events(f"{'promoting' if promote else 'keeping out'} {name}")
    registry.commit(name, manifest, promote=promote, reason=why)
    if not promote and problem and plan.baseline and moved == plan.pointer:
        registry.repair_pointer(plan.baseline, f"current was broken ({problem}); restored the last good version")
    state["name"] = None  # committed: nothing left to discard
    # current_bpc is the serving model's score only while it is the one compared (not one promoted by hand)
    current_bpc = current_score.bpc if current_score and moved == plan.pointer else None
    return RetrainOutcome("promoted" if promote else "kept", why, run, name, registry.current(), None,
                          candidate.bpc, current_bpc, tuple(state["notes"]))


# ---- reporting -----------------------------------------------------------------------------------------


def report_outcome(target: ReportTarget, outcome: RetrainOutcome) -> None:
    """Post the outcome to the admin channel; a failure here is logged, never raised."""
    text = f"Mimic: {outcome.summary()}"
    try:
        if target.platform == "slack":
            from slack_sdk import WebClient

            url = target.api_url or "https://slack.com/api/"
            WebClient(token=target.token, base_url=url if url.endswith("/") else url + "/") \
                .chat_postMessage(channel=target.channel, text=text)
        else:
            base = (target.api_url or "https://discord.com/api/v10").rstrip("/")
            body = json.dumps({"content": text[:2000], "allowed_mentions": {"parse": []}}).encode()
            req = urllib.request.Request(f"{base}/channels/{target.channel}/messages", data=body, method="POST",
                                         headers={"Authorization": f"Bot {target.token}",
                                                  "Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=15).close()
    except Exception as exc:  # the run is recorded in the registry; a lost report must not fail it
        log.warning("could not report the retraining outcome to %s:%s: %s", target.platform, target.channel, exc)
