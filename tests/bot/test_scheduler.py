"""The worker's APScheduler set-up, driven by a fake clock: no sleeps of minutes."""

from __future__ import annotations

import logging
import os
import queue as queue_module
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import apscheduler.executors.base
import apscheduler.schedulers.base
import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from bot import scheduler as worker
from bot.retrain import RetrainOptions
from export.registry import Registry

NIGHT = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


class FakeClock(datetime):
    """Stands in for `datetime` inside APScheduler's scheduler and executor modules."""

    current = NIGHT

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return cls.current.astimezone(tz) if tz is not None else cls.current.replace(tzinfo=None)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> type[FakeClock]:
    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", FakeClock)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", FakeClock)
    return FakeClock


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.fired = threading.Event()

    def __call__(self) -> None:
        self.n += 1
        self.fired.set()

    def wait(self) -> bool:
        ok = self.fired.wait(10)
        self.fired.clear()
        return ok


@pytest.fixture
def sched() -> Iterator[BackgroundScheduler]:
    s = BackgroundScheduler(timezone=UTC)
    yield s
    if s.running:
        s.shutdown(wait=True)


def _settle(s: BackgroundScheduler) -> None:
    """Let the scheduler thread finish a round (it runs due jobs, then computes the next run times)."""
    done = threading.Event()
    s.add_job(done.set, "date", run_date=FakeClock.current - timedelta(seconds=1), misfire_grace_time=None)
    s.wakeup()
    assert done.wait(10)


def test_cron_expression_and_time_zone() -> None:
    trigger = worker.cron_trigger("0 3 * * *", "Europe/Paris")
    paris = ZoneInfo("Europe/Paris")
    nxt = trigger.get_next_fire_time(None, datetime(2026, 11, 28, 2, 30, tzinfo=paris))
    assert nxt == datetime(2026, 11, 28, 3, 0, tzinfo=paris)
    nxt = worker.cron_trigger("30 1 * * 1", "UTC").get_next_fire_time(None, NIGHT)  # Mondays 01:30
    assert nxt == datetime(2026, 11, 30, 1, 30, tzinfo=UTC) and nxt.weekday() == 0


@pytest.mark.parametrize(("field", "names"), [
    ("1-5", "mon,tue,wed,thu,fri"), ("0", "sun"), ("7", "sun"), ("6,0", "sun,sat"), ("*/2", "sun,tue,thu,sat"),
    ("5-7", "sun,fri,sat"), ("mon-wed", "mon,tue,wed"), ("*", "*")])
def test_day_of_week_uses_crons_numbering(field: str, names: str) -> None:
    # APScheduler 3 counts 0 = Monday; a team's "1-5" means Monday to Friday.
    assert worker.standard_days_of_week(field) == names
    with pytest.raises(ValueError):
        worker.standard_days_of_week("8")


def test_missed_run_is_found_in_the_grace_window() -> None:
    trigger = worker.cron_trigger("0 3 * * *", "UTC")
    later = NIGHT + timedelta(minutes=20)
    assert worker.missed_run(trigger, NIGHT - timedelta(days=1), later) == NIGHT
    assert worker.missed_run(trigger, None, later) == NIGHT
    assert worker.missed_run(trigger, NIGHT + timedelta(seconds=5), later) is None  # it did run
    assert worker.missed_run(trigger, None, later, grace=600) is None  # too long ago
    assert worker.missed_run(trigger, None, NIGHT - timedelta(minutes=1)) is None  # 24 h ago: past the grace


def test_the_cron_job_fires_when_the_clock_reaches_it(clock: type[FakeClock], sched: BackgroundScheduler) -> None:
    clock.current = NIGHT - timedelta(seconds=10)
    job_fn = Counter()
    job = worker.configure(sched, worker.cron_trigger("0 3 * * *", "UTC"), job_fn)
    worker.configure(sched, worker.cron_trigger("0 3 * * *", "UTC"), job_fn)  # a restart: replaced, not doubled
    sched.start()
    _settle(sched)
    assert [j.id for j in sched.get_jobs()] == [worker.JOB_ID]
    assert job.max_instances == 1 and job.coalesce and job.misfire_grace_time >= 3600
    assert sched.get_job(worker.JOB_ID).next_run_time == NIGHT and job_fn.n == 0
    clock.current = NIGHT + timedelta(seconds=1)
    sched.wakeup()
    assert job_fn.wait() and job_fn.n == 1
    _settle(sched)
    assert sched.get_job(worker.JOB_ID).next_run_time == NIGHT + timedelta(days=1)


def test_runs_missed_while_busy_coalesce_into_one(clock: type[FakeClock], sched: BackgroundScheduler) -> None:
    clock.current = NIGHT - timedelta(seconds=10)
    job_fn = Counter()
    worker.configure(sched, worker.cron_trigger("0 3 * * *", "UTC"), job_fn)
    sched.start()
    clock.current = NIGHT + timedelta(days=2, hours=1)  # three due times passed while the worker was stuck
    sched.wakeup()
    assert job_fn.wait()
    _settle(sched)
    assert job_fn.n == 1  # coalesced; and an hour late is well inside the grace time
    assert sched.get_job(worker.JOB_ID).next_run_time == NIGHT + timedelta(days=3)


def test_a_run_missed_while_the_worker_was_down_runs_once_at_start(
        clock: type[FakeClock], sched: BackgroundScheduler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry.open(tmp_path / "models", create=True)
    reg.log_run({"event": "started", "run": "r0", "at": (NIGHT - timedelta(days=1)).isoformat()})
    calls: list[str] = []
    ran = threading.Event()

    def fake_retrain(opts: RetrainOptions, trigger: str = "manual", **kwargs: Any) -> None:
        calls.append(trigger)
        ran.set()

    monkeypatch.setattr(worker, "run_retrain", fake_retrain)
    clock.current = NIGHT + timedelta(minutes=40)  # the worker was restarted after 03:00
    opts = RetrainOptions(data_dir=tmp_path, db=tmp_path / "mimic.db", registry=tmp_path / "models")
    worker.start_worker(opts, "0 3 * * *", "UTC", scheduler=sched, now=clock.current)
    assert ran.wait(10)
    _settle(sched)
    assert calls == ["schedule"]
    assert sched.get_job(worker.JOB_ID).next_run_time == NIGHT + timedelta(days=1)
    assert sched.get_job(worker.REQUESTS_JOB_ID) is not None


def test_a_busy_lock_does_not_crash_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from bot.retrain import RetrainBusyError

    def busy(*args: Any, **kwargs: Any) -> None:
        raise RetrainBusyError("another retraining run is in progress (pid 1)")

    monkeypatch.setattr(worker, "run_retrain", busy)
    opts = RetrainOptions(data_dir=tmp_path, db=tmp_path / "mimic.db", registry=tmp_path / "models")
    worker.nightly_job(opts)()  # logs, does not raise
    assert "scheduled retraining skipped" in caplog.text


# ---- stopping the worker: Ctrl-C and SIGTERM stop a running retraining at its next step -----------------


def _opts(tmp_path: Path) -> RetrainOptions:
    return RetrainOptions(data_dir=tmp_path, db=tmp_path / "mimic.db", registry=tmp_path / "models")


def test_the_run_guard_raises_at_the_next_step_or_stage_but_never_on_the_outcome(tmp_path: Path) -> None:
    from bot.retrain import RetrainOutcome

    stop = threading.Event()
    guard = worker.RunGuard(stop, tmp_path, "schedule")
    heard: list[str] = []
    events = guard.events(heard.append)
    guard.progress(object())
    events("building the corpus")
    assert heard == ["building the corpus"] and (tmp_path / worker.HEARTBEAT_FILE).exists()
    stop.set()
    with pytest.raises(KeyboardInterrupt):  # what the trainer catches: it saves the checkpoint and returns
        guard.progress(object())
    assert issubclass(worker.WorkerStopped, KeyboardInterrupt)
    for stage in ("catching up with Slack history", "building the corpus", "training v1: warm start, 600 s",
                  "training 25% done (step 9, 2.10 bits/char)", "exporting to ONNX (with the parity check)",
                  "evaluating the candidate and the serving model on the held-out slice"):
        with pytest.raises(worker.WorkerStopped):
            events(stage)
    outcomes = [RetrainOutcome("promoted", "not worse", "r", "v2", "v2"),
                RetrainOutcome("kept", "worse", "r", "v2", "v1"),
                RetrainOutcome("failed", "interrupted at step 3", "r", "v2", "v1", "train")]
    for outcome in outcomes:  # sent after the run is recorded: it must reach the requester
        events(outcome.summary())
    assert heard[-3:] == [o.summary() for o in outcomes]


def test_an_interrupted_request_is_marked_failed_not_left_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    queue = worker.RetrainQueue(tmp_path)
    request_id = queue.submit("U-admin")

    def stopped(opts: RetrainOptions, *, on_event: Any, **kwargs: Any) -> None:
        on_event("building the corpus")
        raise worker.WorkerStopped("the worker is stopping")

    monkeypatch.setattr(worker, "run_retrain", stopped)
    with pytest.raises(KeyboardInterrupt):
        worker.process_requests(tmp_path, lambda scratch, events: stopped(_opts(tmp_path), on_event=events))
    status = queue.status(request_id)
    assert status is not None and status["state"] == "failed" and "interrupted" in status["message"]
    assert worker.pending_requests(tmp_path) == []

    request_id = queue.submit("U-admin")
    worker.requests_job(_opts(tmp_path), threading.Event())()  # the job itself logs it and returns
    assert queue.status(request_id)["state"] == "failed"
    assert "requested retraining interrupted" in caplog.text


def test_a_stopped_worker_starts_no_new_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(worker, "run_retrain", lambda opts, **kwargs: calls.append(kwargs["trigger"]))
    stop = threading.Event()
    stop.set()
    worker.RetrainQueue(tmp_path).submit("U-admin")
    worker.nightly_job(_opts(tmp_path), stop)()
    worker.requests_job(_opts(tmp_path), stop)()
    assert calls == [] and len(worker.pending_requests(tmp_path)) == 1  # still queued for the next worker


def test_stopping_interrupts_real_training_keeps_the_checkpoint_and_promotes_nothing(tmp_path: Path) -> None:
    from bot.retrain import run_retrain
    from tests.bot.test_retrain import fill_store, tiny_options

    d = tmp_path / "data"
    fill_store(d / "mimic.db", 400)
    stop = threading.Event()
    queue = worker.RetrainQueue(d, poll_seconds=0.01)
    request_id = queue.submit("U-admin")

    def report(text: str) -> None:  # the admin hears that training began: now Ctrl-C the worker
        if text.startswith("training "):
            stop.set()

    follower = threading.Thread(target=queue.follow, args=(request_id, report), daemon=True)
    follower.start()
    worker.requests_job(tiny_options(d, steps=5000), stop)()  # minutes of training unless it stops
    follower.join(10)
    queue.close()

    status = queue.status(request_id)
    assert status is not None and status["state"] == "failed", status
    assert status["outcome"]["stage"] == "train" and "interrupted at step" in status["outcome"]["reason"]
    stopped_at = int(status["outcome"]["reason"].split("interrupted at step ")[1].split(";")[0])
    assert 1 <= stopped_at < 5000
    reg = Registry(d / "models")
    assert reg.current() is None  # nothing promoted
    staged = reg.staging_versions()
    assert len(staged) == 1 and (staged[0].path / "last.pt").is_file()
    finished = [r for r in reg.runs() if r.get("event") == "finished"]
    assert finished[-1]["status"] == "failed" and "interrupted" in finished[-1]["reason"]

    outcome = run_retrain(tiny_options(d, steps=stopped_at + 5))  # the next run resumes from that checkpoint
    assert outcome.status == "promoted"
    assert reg.manifest(outcome.version)["training"]["resumed_from"] == staged[0].name


_WORKER_SCRIPT = r"""
import sys, time
from types import SimpleNamespace
from bot import scheduler as worker
from bot.retrain import RetrainOutcome

def fake_retrain(opts, *, trigger="manual", on_event=None, on_progress=None, **kwargs):
    on_event = on_event or (lambda message: None)
    on_event("training v1: from scratch")
    for step in range(1, 2001):  # 20 s of "training" unless the step hook stops it
        try:
            if on_progress is not None:
                on_progress(SimpleNamespace(step=step))
        except KeyboardInterrupt:
            outcome = RetrainOutcome("failed", f"interrupted at step {step}", "run", "v1", None, "train")
            break
        if step == 1:
            print("training", flush=True)
        time.sleep(0.01)
    else:
        outcome = RetrainOutcome("promoted", "first model", "run", "v1", "v1")
    on_event(outcome.summary())
    return outcome

worker.run_retrain = fake_retrain
from bot.cli import main
sys.exit(main(["scheduler", "--data-dir", sys.argv[1]]))
"""


@pytest.mark.parametrize(("sig", "code", "said"), [(signal.SIGINT, 130, "mimic: interrupted"),
                                                   (signal.SIGTERM, 143, "mimic: terminated")])
def test_ctrl_c_or_sigterm_stops_the_running_retraining_and_exits(tmp_path: Path, sig: signal.Signals, code: int,
                                                                  said: str) -> None:
    """Before: the process printed "interrupted", trained on to the end of the budget and promoted the model
    (SIGINT), or died leaving the request "running" for ever (SIGTERM)."""
    root = Path(__file__).resolve().parents[2]
    Registry.open(tmp_path / "models", create=True).log_run(
        {"event": "started", "run": "r0", "at": datetime.now(UTC).isoformat()})  # no missed nightly run
    request_id = worker.RetrainQueue(tmp_path).submit("U-admin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIMIC_", "SLACK_", "DISCORD_"))}
    proc = subprocess.Popen([sys.executable, "-c", _WORKER_SCRIPT, str(tmp_path)], cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue_module.Queue[str] = queue_module.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        assert lines.get(timeout=60) == "training\n"  # the worker picked the request up at start
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert said in err and "Traceback" not in err
    status = worker.RetrainQueue(tmp_path).status(request_id)
    assert status is not None and status["state"] == "failed", status
    assert status["outcome"]["reason"].startswith("interrupted at step")  # it did not train on to the end
    assert 'Running job "retrain requests' not in err and "executed successfully" not in err


# ---- log noise --------------------------------------------------------------------------------------


def _executor_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """APScheduler's lines about the worker's jobs (not about `_settle`'s)."""
    return [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name.startswith("apscheduler.executors") and "Event.set" not in r.getMessage()]


def test_the_request_poll_is_quiet_and_pauses_while_it_runs_a_retraining(
        clock: type[FakeClock], sched: BackgroundScheduler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED

    from bot.retrain import RetrainOutcome

    caplog.set_level(logging.INFO)
    inside, release = threading.Event(), threading.Event()

    def fake_retrain(opts: RetrainOptions, *, on_event: Any, on_progress: Any, **kwargs: Any) -> RetrainOutcome:
        on_event("building the corpus")
        on_progress(object())
        inside.set()
        assert release.wait(10)
        return RetrainOutcome("kept", "not better", "run", "v2", "v1")

    monkeypatch.setattr(worker, "run_retrain", fake_retrain)
    finished: queue_module.Queue[str] = queue_module.Queue()
    sched.add_listener(lambda event: finished.put(event.job_id) if event.job_id == worker.REQUESTS_JOB_ID else None,
                       EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    clock.current = NIGHT - timedelta(hours=2)
    stop = threading.Event()
    worker.configure(sched, worker.cron_trigger("0 3 * * *", "UTC"), worker.nightly_job(_opts(tmp_path), stop),
                     worker.requests_job(_opts(tmp_path), stop, sched), now=clock.current)
    sched.start()
    assert finished.get(timeout=10) == worker.REQUESTS_JOB_ID  # the first poll runs at start
    for _ in range(3):  # an idle worker: polls, and says nothing about them
        clock.current += timedelta(seconds=5)
        sched.wakeup()
        assert finished.get(timeout=10) == worker.REQUESTS_JOB_ID
    assert _executor_lines(caplog) == []  # was "Running job ..." and "... executed successfully" every 5 s

    request_id = worker.RetrainQueue(tmp_path).submit("U-admin")
    clock.current += timedelta(seconds=5)
    sched.wakeup()
    assert inside.wait(10)
    assert sched.get_job(worker.REQUESTS_JOB_ID).next_run_time is None  # paused while it trains
    for _ in range(3):
        clock.current += timedelta(seconds=5)
        sched.wakeup()
        _settle(sched)
    release.set()
    assert finished.get(timeout=10) == worker.REQUESTS_JOB_ID
    assert worker.RetrainQueue(tmp_path).status(request_id)["state"] == "done"
    assert sched.get_job(worker.REQUESTS_JOB_ID).next_run_time > clock.current  # polling again
    text = caplog.text
    assert "maximum number of running instances" not in text and _executor_lines(caplog) == []
    assert f"admin retraining request {request_id} from U-admin picked up" in text
    assert "retraining started (admin request)" in text
    assert text.count("picked up") == 1


def test_the_filter_keeps_warnings_and_the_nightly_jobs_lines(sched: BackgroundScheduler,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    worker.configure(sched, worker.cron_trigger("0 3 * * *", "UTC"), lambda: None, lambda: None)
    nightly, poll = sched.get_job(worker.JOB_ID), sched.get_job(worker.REQUESTS_JOB_ID)
    executor_log = logging.getLogger("apscheduler.executors.default")
    executor_log.info('Running job "%s" (scheduled at %s)', poll, NIGHT)
    executor_log.info('Job "%s" executed successfully', poll)
    assert _executor_lines(caplog) == []
    executor_log.info('Running job "%s" (scheduled at %s)', nightly, NIGHT)
    executor_log.warning('Run time of job "%s" was missed by %s', poll, timedelta(minutes=2))
    executor_log.error('Job "%s" raised an exception', poll)
    assert [level for level, _ in _executor_lines(caplog)] == ["INFO", "WARNING", "ERROR"]
