"""`[retrain] schedule` means what it means in a crontab (crontab(5)), not APScheduler's dialect of it.

Every check reads fire times from the trigger with fixed datetimes: no clock, no sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import scheduler as worker
from bot.config import RetrainSettings, load_settings
from bot.errors import ConfigError

WEDNESDAY = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # 2026-11-29 is a Sunday, 11-30 a Monday
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order


def fire_times(schedule: str, start: datetime = WEDNESDAY, n: int = 30) -> list[datetime]:
    trigger = worker.cron_trigger(schedule, "UTC", start)
    out, t = [], trigger.get_next_fire_time(None, start)
    while t is not None and len(out) < n:
        out.append(t)
        t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
    return out


def weekdays(schedule: str) -> set[str]:
    """The days of the week a schedule fires on over the next few weeks."""
    return {DAYS[t.weekday()] for t in fire_times(schedule, n=21)}


@pytest.mark.parametrize("schedule", ["0 3 * * 0", "0 3 * * 7", "0 3 * * sun", "0 3 * * SUN", "0 3 * * Sunday"])
def test_sunday_is_0_or_7_as_in_crontab(schedule: str) -> None:
    # APScheduler 3.x's own CronTrigger.from_crontab("0 3 * * 0") fires on Mondays and refuses 7.
    first = fire_times(schedule)[0]
    assert first == datetime(2026, 11, 29, 3, 0, tzinfo=UTC) and first.strftime("%A") == "Sunday"
    assert weekdays(schedule) == {"sun"}


@pytest.mark.parametrize(("field", "days"), [
    ("1", {"mon"}), ("6", {"sat"}), ("1-5", {"mon", "tue", "wed", "thu", "fri"}), ("1,3,5", {"mon", "wed", "fri"}),
    ("*/2", {"sun", "tue", "thu", "sat"}), ("1-5/2", {"mon", "wed", "fri"}), ("5-7", {"fri", "sat", "sun"}),
    ("0-6", set(DAYS)), ("0-7", set(DAYS)), ("mon-fri", {"mon", "tue", "wed", "thu", "fri"}),
    ("fri-sun", {"fri", "sat", "sun"}), ("sat,sun", {"sat", "sun"}), ("0,6", {"sat", "sun"}), ("*", set(DAYS)),
])
def test_day_of_week_numbers_names_ranges_lists_and_steps(field: str, days: set[str]) -> None:
    assert weekdays(f"0 3 * * {field}") == days


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # crontab(5): "the 1st of the month and every Monday"; APScheduler alone would need a Monday the 1st.
    assert fire_times("0 3 1 * 1", n=4) == [datetime(2026, 11, 30, 3, tzinfo=UTC), datetime(2026, 12, 1, 3, tzinfo=UTC),
                                            datetime(2026, 12, 7, 3, tzinfo=UTC), datetime(2026, 12, 14, 3, tzinfo=UTC)]
    assert fire_times("30 4 13 * fri", n=3) == [datetime(2026, 11, 27, 4, 30, tzinfo=UTC),
                                                datetime(2026, 12, 4, 4, 30, tzinfo=UTC),
                                                datetime(2026, 12, 11, 4, 30, tzinfo=UTC)]
    assert datetime(2026, 12, 13, 4, 30, tzinfo=UTC) in fire_times("30 4 13 * fri", n=10)  # a Sunday the 13th
    # Only one restricted (a field starting with *): both must match, as in every cron.
    assert {t.day for t in fire_times("0 3 1 * *", n=3)} == {1}
    assert weekdays("0 3 * * 1") == {"mon"}
    assert all(t.day % 2 == 1 and t.weekday() == 0 for t in fire_times("0 3 */2 * 1", n=5))


def test_the_or_trigger_still_finds_a_missed_run() -> None:
    trigger = worker.cron_trigger("0 3 1 * 1", "UTC", WEDNESDAY)
    monday = datetime(2026, 11, 30, 3, tzinfo=UTC)
    assert worker.missed_run(trigger, None, monday + timedelta(minutes=5)) == monday
    assert worker.missed_run(trigger, monday, monday + timedelta(minutes=5)) is None


def test_other_fields_and_nicknames() -> None:
    assert fire_times("*/15 3 * * *", n=3) == [datetime(2026, 11, 26, 3, m, tzinfo=UTC) for m in (0, 15, 30)]
    assert fire_times("0 0 1 jan *", n=1) == [datetime(2027, 1, 1, tzinfo=UTC)]
    assert fire_times("@daily", n=1) == [datetime(2026, 11, 26, tzinfo=UTC)]
    assert fire_times("@weekly", n=1) == [datetime(2026, 11, 29, tzinfo=UTC)]  # Sunday midnight
    assert fire_times("@hourly", n=2) == [datetime(2026, 11, 25, h, tzinfo=UTC) for h in (12, 13)]  # due now


def test_a_schedule_that_never_fires_is_refused() -> None:
    with pytest.raises(worker.ScheduleNeverFires):
        worker.cron_trigger("0 3 31 2 *", "UTC", WEDNESDAY)
    with pytest.raises(worker.ScheduleNeverFires):
        worker.cron_trigger("0 3 30 2 *", "UTC", WEDNESDAY)
    assert fire_times("0 3 29 2 *", n=1) == [datetime(2028, 2, 29, 3, tzinfo=UTC)]  # leap years only: fine
    assert fire_times("0 3 31 2 1", n=1)[0].weekday() == 0  # either field: the Mondays of February


@pytest.mark.parametrize("schedule", ["0 3 * * 8", "0 3 * * -1", "0 3 * * 1/0", "0 3 * * 5-1", "0 3 * * funday",
                                      "0 3 * *", "0 3 * * * *", "61 3 * * *", "0 3 32 * *", "every night"])
def test_malformed_schedules_are_value_errors(schedule: str) -> None:
    with pytest.raises(ValueError):
        worker.cron_trigger(schedule, "UTC", WEDNESDAY)


def _load(tmp_path: Path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_settings(path, {})


def test_config_accepts_crontab_sunday_and_refuses_a_schedule_that_never_fires(tmp_path: Path) -> None:
    assert _load(tmp_path, '[retrain]\nschedule = "0 3 * * 7"\n').retrain.schedule == "0 3 * * 7"
    assert RetrainSettings(schedule="0 3 1 * mon-fri").schedule == "0 3 1 * mon-fri"
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, '[retrain]\nschedule = "0 3 31 2 *"\n')
    message = str(err.value)
    assert "[retrain] schedule never fires" in message and "\n" not in message
    assert message.startswith(str(tmp_path / "config.toml"))
    with pytest.raises(ConfigError, match=r"\[retrain\] schedule is not a 5-field cron expression"):
        _load(tmp_path, '[retrain]\nschedule = "0 3 * * 8"\n')


@pytest.mark.parametrize(("text", "needle"), [
    ("time_budget = inf", "[retrain] time_budget must be a positive number of seconds (got inf)"),
    ("time_budget = nan", "[retrain] time_budget must be a positive number of seconds (got nan)"),
    ("time_budget = 0.0", "[retrain] time_budget must be a positive number of seconds"),
    ("tolerance = inf", "[retrain] tolerance must be a number, 0 or more (got inf)"),
])
def test_config_refuses_non_finite_retrain_numbers(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f"[retrain]\n{text}\n")
    assert needle in str(err.value) and "\n" not in str(err.value)
