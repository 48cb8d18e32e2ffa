"""The retraining job's Discord catch-up: configured by `[discord] learn_channels` and DISCORD_TOKEN, run against
the fake Discord REST API on 127.0.0.1, incremental, and a failure that is recorded and tried again."""

from __future__ import annotations

from pathlib import Path

from bot.config import load_settings
from bot.retrain import DiscordCatchUp, RetrainOptions, catch_up, options_from_settings, run_retrain
from export.registry import Registry
from tests.training.fake_discord import GENERAL, GRACE, SECRET, TOKEN, message, serve, snowflake
from training.store import Store


def options(tmp_path: Path, channels: tuple[str, ...] = ("public",)) -> RetrainOptions:
    data = tmp_path / "data"
    return RetrainOptions(data_dir=data, db=data / "mimic.db", registry=data / "models",
                          discord=DiscordCatchUp(TOKEN, channels))


def test_catch_up_fetches_the_learn_channels_then_only_what_is_new(tmp_path: Path) -> None:
    opts = options(tmp_path, ("public", "#secret"))
    events: list[str] = []
    with serve() as fake:
        notes = catch_up(opts, events.append)
        assert events == ["catching up with Discord history"]
        assert notes == ["Discord: 127 messages from 5 files: 127 new, 0 updated, 0 unchanged, 0 deleted; "
                         "skipped 3 (bot 2, type new_member 1)"]
        with Store.open(opts.db) as store:
            assert store.channel("discord", SECRET).kind == "private"  # listed, so fetched
        fake.requests.clear()
        fake.add(GENERAL, message(900, GRACE, "good morning"))
        assert catch_up(opts, events.append)[0].startswith("Discord: 1 messages from 5 files: 1 new")
        assert [q["after"] for q in fake.history_calls(GENERAL)] == [snowflake(205)]


def test_options_follow_the_discord_settings(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[discord]\nlearn_channels = ["public", "#leads"]\n')
    with_token = load_settings(config, {"DISCORD_TOKEN": TOKEN})
    assert options_from_settings(with_token).discord == DiscordCatchUp(TOKEN, ("public", "#leads"))
    assert options_from_settings(load_settings(config, {})).discord is None  # no token: live capture only
    config.write_text("[discord]\nlearn_channels = []\n")
    assert options_from_settings(load_settings(config, {"DISCORD_TOKEN": TOKEN})).discord is None  # learning off


def test_discord_api_down_fails_the_run_at_catch_up_and_is_recorded(tmp_path: Path) -> None:
    opts = options(tmp_path)
    with serve() as fake:
        fake.down = True
        outcome = run_retrain(opts)
    assert outcome.status == "failed" and outcome.stage == "catch-up"
    assert outcome.reason.startswith("Discord API GET /api/v10/users/@me failed: HTTP 503")
    assert outcome.reason.endswith("will try again next run")
    registry = Registry(opts.registry)
    assert registry.current() is None and not list(registry.staging.iterdir())
    last = [r for r in registry.runs() if r.get("event") == "finished"][-1]
    assert last["stage"] == "catch-up" and "HTTP 503" in last["reason"]
