"""The worker's APScheduler set-up, driven by a fake clock: no sleeps of minutes."""

from __future__ import annotations

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
