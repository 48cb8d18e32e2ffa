"""`mimic scheduler`: the worker process that retrains on a cron schedule and runs admins' retrain requests.

It runs in its own process (the Procfile's `worker: mimic scheduler`), never inside the bot processes, so
several bot workers never each retrain; the run lock in bot/retrain.py also stops a run started by hand
from overlapping a scheduled one.

The bots reach the worker through a mailbox of files in the data directory (no broker to run):
    <data_dir>/retrain-requests/r-<time>-<id>.json         a request, written by `RetrainQueue` in the bot
    <data_dir>/retrain-requests/r-<time>-<id>.status.json  queued | running (progress message) | done | failed
    <data_dir>/retrain-worker.alive                        touched by the worker at every poll (heartbeat)
The worker polls every few seconds; one run answers every pending request. `RetrainQueue` (imported by the
bots, so nothing here imports torch or APScheduler at module level) follows the status file and reports each
progress message and the outcome to the requester.

APScheduler 3 details that matter:
- One cron job with a fixed id and `replace_existing=True` (a restart never adds a second copy),
  `max_instances=1` and `coalesce=True` (runs that piled up while busy become one).
- A generous `misfire_grace_time`: with APScheduler's default of 1 second a run due while the worker was
  busy is silently skipped. A process that was *down* at the due time has lost its in-memory job store, so
  at start-up we look at the registry's run log: if the last due time within the grace period has no run
  started after it, the job is added with that time as its next run, and APScheduler runs it once.
- `from_crontab` keeps APScheduler's own day-of-week numbering (0 = Monday); `cron_trigger` translates the
  field to day names first, so "0 3 * * 1-5" means Monday to Friday as in every crontab.
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
from typing import Any
from zoneinfo import ZoneInfo

from bot.retrain import EventFn, RetrainBusyError, RetrainOptions, RetrainOutcome, run_retrain
from export.registry import iso, utc_now, version_name, write_json

log = logging.getLogger(__name__)

JOB_ID = "mimic-nightly-retrain"
REQUESTS_JOB_ID = "mimic-retrain-requests"
MISFIRE_GRACE_SECONDS = 6 * 3600  # a night's run that was due while the worker was busy or down runs once
REQUEST_POLL_SECONDS = 5.0
REQUESTS_DIR = "retrain-requests"
HEARTBEAT_FILE = "retrain-worker.alive"


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _day_number(token: str) -> int:
    token = token.strip().lower()
    if token[:3] in _DAY_NAMES and not token.isdigit():
        return _DAY_NAMES.index(token[:3])
    number = int(token)
    if not 0 <= number <= 7:
        raise ValueError(f"day of week {token!r} is not in 0-7")
    return number


def standard_days_of_week(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday, 1 = Monday, as in every cron) as day names.

    APScheduler 3's `from_crontab` passes the field through to its own numbering, where 0 is Monday, so
    "0 3 * * 1-5" would run Tuesday to Saturday; names mean the same thing to both.
    """
    if field == "*":
        return field
    days: set[int] = set()
    for token in field.split(","):
        span, _, step = token.partition("/")
        if span == "*":
            lo, hi = 0, 6
        else:
            first, _, last = span.partition("-")
            lo = _day_number(first)
            hi = _day_number(last) if last else (6 if step else lo)
        if hi < lo:
            raise ValueError(f"day-of-week range {span!r} runs backwards")
        days.update(d % 7 for d in range(lo, hi + 1, int(step) if step else 1))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def cron_trigger(schedule: str, timezone: str) -> Any:
    """`[retrain] schedule` as APScheduler's trigger, with cron's day-of-week numbering. (Like APScheduler,
    and unlike Vixie cron, a schedule naming both days of the month and of the week needs both to match.)"""
    from apscheduler.triggers.cron import CronTrigger

    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"{schedule!r} is not a 5-field cron expression (minute hour day month weekday)")
    fields[4] = standard_days_of_week(fields[4])
    return CronTrigger.from_crontab(" ".join(fields), timezone=ZoneInfo(timezone))


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


def nightly_job(opts: RetrainOptions) -> Callable[[], None]:
    def job() -> None:
        try:
            run_retrain(opts, trigger="schedule")
        except RetrainBusyError as exc:  # a run started by hand or by request: that one counts
            log.warning("scheduled retraining skipped: %s", exc)
        except Exception:  # never let one bad night stop the worker
            log.exception("scheduled retraining crashed")

    return job


def requests_job(opts: RetrainOptions) -> Callable[[], None]:
    def job() -> None:
        try:
            process_requests(opts.data_dir, lambda scratch, events: run_retrain(
                replace(opts, from_scratch=opts.from_scratch or scratch), trigger="request", on_event=events))
        except Exception:
            log.exception("a requested retraining crashed")

    return job


def configure(scheduler: Any, trigger: Any, nightly: Callable[[], None], requests: Callable[[], None] | None = None,
              *, missed: datetime | None = None, poll_seconds: float = REQUEST_POLL_SECONDS) -> Any:
    """Add (or replace) the nightly job and the request poller. Returns the nightly job."""
    extra = {"next_run_time": missed} if missed is not None else {}
    job = scheduler.add_job(nightly, trigger, id=JOB_ID, name="nightly retraining", replace_existing=True,
                            max_instances=1, coalesce=True, misfire_grace_time=MISFIRE_GRACE_SECONDS, **extra)
    if requests is not None:
        scheduler.add_job(requests, "interval", seconds=poll_seconds, id=REQUESTS_JOB_ID, name="retrain requests",
                          replace_existing=True, max_instances=1, coalesce=True,
                          misfire_grace_time=max(60, int(poll_seconds * 4)))
    return job


def start_worker(opts: RetrainOptions, schedule: str, timezone: str, scheduler: Any = None,
                 now: datetime | None = None) -> Any:
    """Configure and start the worker; with the default BlockingScheduler this returns only on shutdown."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    tz = ZoneInfo(timezone)
    now = now or datetime.now(tz)
    trigger = cron_trigger(schedule, timezone)
    scheduler = scheduler if scheduler is not None else BlockingScheduler(timezone=tz)
    missed = missed_run(trigger, last_run_started(opts.registry), now)
    if missed is not None:
        log.warning("the retraining due at %s did not run (the worker was down); running it now", missed)
    configure(scheduler, trigger, nightly_job(opts), requests_job(opts), missed=missed)
    beat(opts.data_dir)  # the bots can tell at once that a worker is there
    log.info("retraining on schedule %r (%s), next at %s; admin requests polled every %.0f s; registry %s",
             schedule, timezone, missed or trigger.get_next_fire_time(None, now), REQUEST_POLL_SECONDS,
             opts.registry)
    scheduler.start()
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
    requests it answered; a busy lock leaves them queued for the next poll."""
    beat(data_dir)
    _forget_old(data_dir, keep_days)
    requests = pending_requests(data_dir)
    if not requests:
        return 0
    ids = [r["id"] for r in requests]
    from_scratch = any(r.get("from_scratch") for r in requests)

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
