"""`mimic scheduler`: the worker process that retrains on a cron schedule and runs admins' retrain requests.

It runs in its own process (the Procfile's `worker: mimic scheduler`), never inside the bot processes, so
several bot workers never each retrain; the run lock in bot/retrain.py also stops a run started by hand
from overlapping a scheduled one.

The bots reach the worker through a mailbox of files in the data directory (no broker to run):
    <data_dir>/retrain-requests/r-<time>-<id>.json         a request, written by `RetrainQueue` in the bot
    <data_dir>/retrain-requests/r-<time>-<id>.status.json  queued | running (progress message) | done | failed
    <data_dir>/retrain-worker.alive                        touched by the worker at every poll (heartbeat)
The worker polls every few seconds (and once at start); one run answers every pending request.
`RetrainQueue` (imported by the bots, so nothing here imports torch, APScheduler or bot/retrain.py at module
level; bot/config.py also checks `[retrain] schedule` with `cron_trigger`) follows the status file and reports
each progress message and the outcome to the requester.

The schedule is a standard crontab line (crontab(5)), not APScheduler's dialect of it:
- day of week 0 or 7 = Sunday, 1 = Monday ... 6 = Saturday, or names (sun, mon, ...), with ranges, lists
  and steps (1-5, 1,3,5, */2); APScheduler 3 numbers 0 = Monday and refuses 7, so the field becomes names;
- when both day of month and day of week are restricted (neither starts with `*`), a day matching *either*
  runs the job ("0 3 1 * 1": the 1st of each month and every Monday), an OrTrigger of two CronTriggers;
  APScheduler alone would need both;
- @yearly, @monthly, @weekly, @daily (@midnight) and @hourly; a schedule that never fires ("0 3 31 2 *") is
  refused rather than logging "next at None".

APScheduler 3 details that matter:
- One cron job with a fixed id and `replace_existing=True` (a restart never adds a second copy),
  `max_instances=1` and `coalesce=True` (runs that piled up while busy become one).
- A generous `misfire_grace_time`: with APScheduler's default of 1 second a run due while the worker was
  busy is silently skipped. A process that was *down* at the due time has lost its in-memory job store, so
  at start-up we look at the registry's run log: if the last due time within the grace period has no run
  started after it, the job is added with that time as its next run, and APScheduler runs it once.
- The request poll is paused while it runs a retraining (no "skipped: maximum number of running instances"
  warning every 5 s; the training steps touch the heartbeat instead), and its "Running job" / "executed
  successfully" INFO lines are filtered out (35,000 a day on an idle worker); its warnings and errors stay.

Stopping: Ctrl-C (SIGINT) or SIGTERM (Procfile, systemd, docker; bot/cli.py makes it a KeyboardInterrupt)
sets the worker's stop event and shuts the scheduler down, waiting for a running retraining. That run stops the way Ctrl-C stops `mimic retrain`: the
training-step hook raises `WorkerStopped` (a KeyboardInterrupt), which the trainer catches after the current
step, saving the checkpoint that the next run resumes from; before or after training, the next stage
announcement raises it instead. Nothing is promoted, the run log records the run as failed (interrupted), an
admin's request is marked failed, and the KeyboardInterrupt reaches the CLI (exit 130; 143 for SIGTERM).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from export.registry import iso, utc_now, version_name, write_json

if TYPE_CHECKING:
    from bot.retrain import EventFn, RetrainOptions, RetrainOutcome

log = logging.getLogger(__name__)

JOB_ID = "mimic-nightly-retrain"
REQUESTS_JOB_ID = "mimic-retrain-requests"
MISFIRE_GRACE_SECONDS = 6 * 3600  # a night's run that was due while the worker was busy or down runs once
REQUEST_POLL_SECONDS = 5.0
REQUESTS_DIR = "retrain-requests"
HEARTBEAT_FILE = "retrain-worker.alive"


def run_retrain(opts: RetrainOptions, **kwargs: Any) -> RetrainOutcome:
    """bot.retrain.run_retrain, imported when a run starts (bot/config.py imports this module)."""
    from bot.retrain import run_retrain as run

    return run(opts, **kwargs)


# ---- the schedule: a standard crontab line -------------------------------------------------------------

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_SPECIAL = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
            "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


class ScheduleNeverFires(ValueError):
    """A well-formed cron line that matches no date ("0 3 31 2 *": February 31st)."""


def _day_number(token: str) -> int:
    token = token.strip().lower()
    if token[:3] in _DAY_NAMES and token.isalpha():
        return _DAY_NAMES.index(token[:3])
    if not token.isdigit() or not 0 <= int(token) <= 7:
        raise ValueError(f"day of week {token!r} is not 0-7 (0 and 7 are Sunday) or a day name")
    return int(token)


def standard_days_of_week(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday, 1 = Monday, as in every cron) as day names.

    APScheduler 3 numbers 0 = Monday (its `from_crontab` passes the field through, so "0 3 * * 0" would run
    on Mondays and "1-5" Tuesday to Saturday) and refuses 7; names mean the same thing to both.
    """
    if field == "*":
        return field
    days: set[int] = set()
    for token in field.split(","):
        span, slash, step_text = token.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"day-of-week step {step_text!r} is not a positive number")
            step = int(step_text)
        if span == "*":
            lo, hi = 0, 6
        else:
            first, dash, last = span.partition("-")
            lo = _day_number(first)
            hi = _day_number(last) if dash else (6 if slash else lo)
            if dash and hi == 0 and lo > 0:  # "fri-sun": Sunday as 7 ends the week
                hi = 7
        if hi < lo:
            raise ValueError(f"day-of-week range {span!r} runs backwards")
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def cron_trigger(schedule: str, timezone: str, now: datetime | None = None) -> Any:
    """`[retrain] schedule` as APScheduler's trigger, with crontab's meaning (see the module docstring).

    Raises ValueError for a line that is not a 5-field cron expression, ScheduleNeverFires for one that
    matches no date after `now`.
    """
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    line = _SPECIAL.get(schedule.strip().lower(), schedule)
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(f"{len(fields)} fields instead of 5: minute hour day month weekday")
    minute, hour, day, month, weekday = fields
    tz = ZoneInfo(timezone)
    days = standard_days_of_week(weekday)

    def cron(day: str, day_of_week: str) -> Any:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week,
                           timezone=tz)

    if day.startswith("*") or weekday.startswith("*"):  # crontab(5): at most one restricted, both must match
        trigger = cron(day, days)
    else:  # both restricted: either may match
        trigger = OrTrigger([cron(day, "*"), cron("*", days)])
    if trigger.get_next_fire_time(None, now or datetime.now(tz)) is None:
        raise ScheduleNeverFires(f"{schedule!r} matches no date, so it would never run")
    return trigger


def missed_run(trigger: Any, last_started: datetime | None, now: datetime,
               grace: float = MISFIRE_GRACE_SECONDS) -> datetime | None:
    """The latest due time in the last `grace` seconds that no recorded run started after, or None."""
    due = None
    t = trigger.get_next_fire_time(None, now - timedelta(seconds=grace))
    while t is not None and t <= now:
        due = t
        t = trigger.get_next_fire_time(t, now)
    if due is None or (last_started is not None and last_started >= due):
        return None
    return due


def last_run_started(registry_dir: Any) -> datetime | None:
    """When the newest run recorded in the registry's run log started."""
    from export.registry import Registry

    times = []
    for record in Registry(registry_dir).runs():
        if record.get("event") == "started":
            try:
                times.append(datetime.fromisoformat(record["at"]))
            except (KeyError, TypeError, ValueError):
                continue
    return max(times) if times else None


# ---- stopping a run: the trainer's own Ctrl-C path -----------------------------------------------------


class WorkerStopped(KeyboardInterrupt):
    """Raised inside a retraining run when the worker is stopping. A KeyboardInterrupt on purpose: the trainer
    turns it into an interrupted result (checkpoint saved for the next run to resume), and bot/retrain.py
    records it and keeps the staging version, exactly as for Ctrl-C on `mimic retrain`."""


# The stage announcements of bot/retrain.py that a stopping worker may interrupt. An outcome's summary
# ("retraining promoted ..."), sent after the run is recorded, must never raise: it is not in this list.
STAGE_PREFIXES = ("catching up", "building the corpus", "training", "exporting", "evaluating", "promoting",
                  "keeping out")


class RunGuard:
    """The hooks a worker's retraining run gets: `progress` (called by the trainer after every step) and
    `events(forward)` (the stage announcements). Both raise WorkerStopped once `stop` is set; they also log
    the start of the run and keep the worker's heartbeat fresh while the request poll is paused."""

    def __init__(self, stop: threading.Event, data_dir: str | Path, what: str):
        self.stop, self.data_dir, self.what = stop, data_dir, what
        self.started = False
        self._beat_at = -float("inf")

    def _check(self) -> None:
        if self.stop.is_set():
            raise WorkerStopped("the worker is stopping")

    def progress(self, p: Any) -> None:
        if time.monotonic() - self._beat_at >= REQUEST_POLL_SECONDS:
            self._beat_at = time.monotonic()
            beat(self.data_dir)
        self._check()

    def events(self, forward: EventFn | None = None) -> EventFn:
        def on_event(message: str) -> None:
            if not self.started:
                self.started = True
                log.info("retraining started (%s)", self.what)
            if message.startswith(STAGE_PREFIXES):
                self._check()
            if forward is not None:
                forward(message)

        return on_event


def nightly_job(opts: RetrainOptions, stop: threading.Event | None = None) -> Callable[[], None]:
    stop = stop if stop is not None else threading.Event()

    def job() -> None:
        from bot.retrain import RetrainBusyError

        if stop.is_set():
            return
        guard = RunGuard(stop, opts.data_dir, "schedule")
        try:
            run_retrain(opts, trigger="schedule", on_event=guard.events(), on_progress=guard.progress)
        except RetrainBusyError as exc:  # a run started by hand or by request: that one counts
            log.warning("scheduled retraining skipped: %s", exc)
        except KeyboardInterrupt:
            log.warning("scheduled retraining interrupted: the worker is stopping; the next run resumes from "
                        "its checkpoint when training had begun")
        except Exception:  # never let one bad night stop the worker
            log.exception("scheduled retraining crashed")

    return job


def requests_job(opts: RetrainOptions, stop: threading.Event | None = None,
                 scheduler: Any = None) -> Callable[[], None]:
    """The request poll. While it runs a retraining it pauses itself on `scheduler`, so APScheduler does not
    try (and warn) every few seconds."""
    stop = stop if stop is not None else threading.Event()

    def run(scratch: bool, events: EventFn) -> RetrainOutcome:
        guard = RunGuard(stop, opts.data_dir, "admin request")
        paused = _pause_poll(scheduler)
        try:
            return run_retrain(replace(opts, from_scratch=opts.from_scratch or scratch), trigger="request",
                               on_event=guard.events(events), on_progress=guard.progress)
        finally:
            if paused and not stop.is_set():
                _resume_poll(scheduler)

    def job() -> None:
        if stop.is_set():
            return
        try:
            process_requests(opts.data_dir, run)
        except KeyboardInterrupt:
            log.warning("requested retraining interrupted: the worker is stopping")
        except Exception:
            log.exception("a requested retraining crashed")

    return job


def _pause_poll(scheduler: Any) -> bool:
    if scheduler is None:
        return False
    try:
        scheduler.pause_job(REQUESTS_JOB_ID)
        return True
    except Exception as exc:  # JobLookupError: not scheduled here (a test, a replaced job)
        log.debug("cannot pause the request poll: %s", exc)
        return False


def _resume_poll(scheduler: Any) -> None:
    try:
        scheduler.resume_job(REQUESTS_JOB_ID)
    except Exception as exc:
        log.warning("cannot resume the request poll: %s", exc)


class _QuietPoll(logging.Filter):
    """Drops APScheduler's INFO lines about the request poll ("Running job ...", "... executed successfully"),
    one of each every 5 s; its warnings (a missed run) and errors pass, and so do the nightly job's lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or not isinstance(record.args, tuple):
            return True
        return not any(getattr(arg, "id", None) == REQUESTS_JOB_ID for arg in record.args)


_QUIET_POLL = _QuietPoll()


def configure(scheduler: Any, trigger: Any, nightly: Callable[[], None], requests: Callable[[], None] | None = None,
              *, missed: datetime | None = None, poll_seconds: float = REQUEST_POLL_SECONDS,
              now: datetime | None = None) -> Any:
    """Add (or replace) the nightly job and the request poller (first poll at `now` when given, so requests
    queued while the worker was down are answered at once). Returns the nightly job."""
    extra = {"next_run_time": missed} if missed is not None else {}
    job = scheduler.add_job(nightly, trigger, id=JOB_ID, name="nightly retraining", replace_existing=True,
                            max_instances=1, coalesce=True, misfire_grace_time=MISFIRE_GRACE_SECONDS, **extra)
    if requests is not None:
        first = {"next_run_time": now} if now is not None else {}
        scheduler.add_job(requests, "interval", seconds=poll_seconds, id=REQUESTS_JOB_ID, name="retrain requests",
                          replace_existing=True, max_instances=1, coalesce=True,
                          misfire_grace_time=max(60, int(poll_seconds * 4)), **first)
        logging.getLogger("apscheduler.executors.default").addFilter(_QUIET_POLL)  # added once: same object
    return job


def stop_worker(scheduler: Any, stop: threading.Event) -> None:
    """Stop a running retraining at its next training step (checkpoint kept) and shut the scheduler down,
    waiting for the run to record itself."""
    stop.set()
    if scheduler.running:
        log.warning("stopping: a running retraining stops at its next step and keeps its checkpoint")
        scheduler.shutdown(wait=True)


def start_worker(opts: RetrainOptions, schedule: str, timezone: str, scheduler: Any = None,
                 now: datetime | None = None, stop: threading.Event | None = None) -> Any:
    """Configure and start the worker; with the default BlockingScheduler this returns only on shutdown.

    Ctrl-C or SIGTERM stops it (`stop_worker`), then the KeyboardInterrupt goes on to the caller (`mimic`
    exits 130, or 143 for SIGTERM).
    """
    from apscheduler.schedulers.blocking import BlockingScheduler

    tz = ZoneInfo(timezone)
    now = now or datetime.now(tz)
    stop = stop if stop is not None else threading.Event()
    trigger = cron_trigger(schedule, timezone, now)
    scheduler = scheduler if scheduler is not None else BlockingScheduler(timezone=tz)
    missed = missed_run(trigger, last_run_started(opts.registry), now)
    if missed is not None:
        log.warning("the retraining due at %s did not run (the worker was down); running it now", missed)
    configure(scheduler, trigger, nightly_job(opts, stop), requests_job(opts, stop, scheduler), missed=missed,
              now=now)
    beat(opts.data_dir)  # the bots can tell at once that a worker is there
    log.info("retraining on schedule %r (%s), next at %s; admin requests polled every %.0f s; registry %s",
             schedule, timezone, missed or trigger.get_next_fire_time(None, now), REQUEST_POLL_SECONDS,
             opts.registry)
    try:
        scheduler.start()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM, which `mimic` (bot/cli.py) turns into one
        stop_worker(scheduler, stop)
        raise
    return scheduler


# ---- the mailbox: admin requests from the bots, status back from the worker --------------------------

FINAL_STATES = ("done", "failed")


def _requests_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / REQUESTS_DIR


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class RetrainQueue:
    """The callable behind the bots' admin `retrain` command.

    `queue(requested_by, report)` writes a request for the worker and returns the immediate reply; a daemon
    thread then follows the request's status file and calls `report(text)` for each progress message and the
    outcome (adapters send it privately to the requester). Never trains and never imports torch.
    """

    def __init__(self, data_dir: str | Path, *, poll_seconds: float = 5.0, give_up_seconds: float = 6 * 3600,
                 worker_stale_seconds: float = 120.0):
        self.dir = _requests_dir(data_dir)
        self.heartbeat = Path(data_dir) / HEARTBEAT_FILE
        self.poll_seconds = poll_seconds
        self.give_up_seconds = give_up_seconds
        self.worker_stale_seconds = worker_stale_seconds
        self._stop = threading.Event()

    def submit(self, requested_by: str, *, from_scratch: bool = False) -> str:
        request_id = "r-" + version_name()
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / f"{request_id}.json", {"id": request_id, "requested_by": requested_by,
                                                      "from_scratch": from_scratch, "at": iso(utc_now())})
        return request_id

    def status(self, request_id: str) -> dict[str, Any] | None:
        return read_json(self.dir / f"{request_id}.status.json")

    def worker_alive(self) -> bool:
        try:
            return time.time() - self.heartbeat.stat().st_mtime < self.worker_stale_seconds
        except OSError:
            return False

    def __call__(self, requested_by: str, report: Callable[[str], None], *, from_scratch: bool = False) -> str:
        request_id = self.submit(requested_by, from_scratch=from_scratch)
        threading.Thread(target=self.follow, args=(request_id, report), name=f"mimic-{request_id}",
                         daemon=True).start()
        reply = f"Retraining queued ({request_id}); I will report progress and the outcome here."
        if not self.worker_alive():
            reply += " Note: no retraining worker has checked in recently; is `mimic scheduler` running?"
        return reply

    def follow(self, request_id: str, report: Callable[[str], None]) -> dict[str, Any] | None:
        """Report each new status message until the request is done, failed or given up on."""
        deadline = time.monotonic() + self.give_up_seconds
        seen = None
        while not self._stop.is_set():
            status = self.status(request_id)
            if status is not None and status.get("message") != seen:
                seen = status.get("message")
                try:
                    report(str(seen))
                except Exception:  # the requester went away; keep following quietly
                    log.exception("reporting retraining progress failed")
            if status is not None and status.get("state") in FINAL_STATES:
                return status
            if time.monotonic() > deadline:
                report(f"No outcome for {request_id} yet; see `mimic models list` on the server.")
                return status
            self._stop.wait(self.poll_seconds)
        return None

    def close(self) -> None:
        self._stop.set()


def pending_requests(data_dir: str | Path) -> list[dict[str, Any]]:
    """Requests not yet done or failed, oldest first."""
    d = _requests_dir(data_dir)
    if not d.is_dir():
        return []
    out = []
    for path in sorted(d.glob("r-*.json")):
        if path.name.endswith(".status.json"):
            continue
        request = read_json(path)
        status = read_json(path.with_name(path.stem + ".status.json")) or {}
        if request is not None and status.get("state") not in FINAL_STATES:
            out.append(request)
    return out


def _set_status(data_dir: str | Path, request_id: str, state: str, message: str, **extra: Any) -> None:
    try:
        write_json(_requests_dir(data_dir) / f"{request_id}.status.json",
                   {"id": request_id, "state": state, "message": message, "at": iso(utc_now()), **extra})
    except OSError as exc:
        log.error("cannot write the status of %s: %s", request_id, exc)


def beat(data_dir: str | Path) -> None:
    """The worker is alive (the bots warn a requester when it is not): the file's mtime, touched each poll."""
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        (Path(data_dir) / HEARTBEAT_FILE).touch()
    except OSError as exc:
        log.error("cannot touch the worker heartbeat: %s", exc)


def process_requests(data_dir: str | Path, run: Callable[[bool, EventFn], RetrainOutcome],
                     keep_days: float = 7.0) -> int:
    """Worker side: one run answers every pending request (from scratch when any asked). Returns how many
    requests it answered; a busy lock leaves them queued for the next poll. A run interrupted because the
    worker is stopping marks them failed (never "running" for ever) and re-raises."""
    from bot.retrain import RetrainBusyError

    beat(data_dir)
    _forget_old(data_dir, keep_days)
    requests = pending_requests(data_dir)
    if not requests:
        return 0
    ids = [r["id"] for r in requests]
    from_scratch = any(r.get("from_scratch") for r in requests)
    for r in requests:
        if read_json(_requests_dir(data_dir) / f"{r['id']}.status.json") is None:  # new: logged once
            log.info("admin retraining request %s from %s picked up%s", r["id"], r.get("requested_by", "?"),
                     " (from scratch)" if r.get("from_scratch") else "")

    def events(message: str) -> None:
        for request_id in ids:
            _set_status(data_dir, request_id, "running", message)

    events("retraining started" + (" (from scratch)" if from_scratch else ""))
    try:
        outcome = run(from_scratch, events)
    except RetrainBusyError:
        for request_id in ids:
            _set_status(data_dir, request_id, "queued", "waiting: another retraining run is in progress")
        return 0
    except KeyboardInterrupt:
        for request_id in ids:
            _set_status(data_dir, request_id, "failed", "retraining interrupted: the worker was stopped; "
                        "nothing was promoted; ask again once it is back")
        raise
    except Exception as exc:
        for request_id in ids:
            _set_status(data_dir, request_id, "failed", f"retraining failed: {type(exc).__name__}: {exc}")
        raise
    for request_id in ids:
        _set_status(data_dir, request_id, "done" if outcome.ok else "failed", outcome.summary(),
                    outcome=outcome.as_dict())
    return len(ids)


def _forget_old(data_dir: str | Path, keep_days: float) -> None:
    d = _requests_dir(data_dir)
    if not d.is_dir():
        return
    limit = time.time() - keep_days * 86400
    for path in d.glob("r-*.json"):
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
        except OSError:
            pass
