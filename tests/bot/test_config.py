"""bot/config.py: defaults, the documented example, unknown keys, types, ranges, secrets, environment, flags."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from bot.config import _SECTIONS, ChannelRules, Settings, StorageSettings, load_settings
from bot.errors import ConfigError, SecretInConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_no_file_means_defaults_under_data() -> None:
    s = load_settings(None, {})
    assert s == Settings()
    assert s.storage.database_path == Path("data/mimic.db")
    assert s.storage.model_path == Path("data/models")
    assert s.limits.min_messages == 30 and s.slack.port == 3000
    assert s.retrain.schedule == "0 3 * * *"


def test_the_example_file_is_valid_and_states_the_defaults() -> None:
    s = load_settings(EXAMPLE, {})
    assert s == Settings(source=str(EXAMPLE))


def test_every_setting_is_documented_in_the_example() -> None:
    """Each key of each section appears in config.example.toml, under a comment (keys may share one)."""
    raw = tomllib.loads(EXAMPLE.read_text())
    lines = EXAMPLE.read_text().splitlines()
    for name, cls in _SECTIONS.items():
        keys = {f.name for f in fields(cls) if "env" not in f.metadata}
        assert set(raw[name]) == keys, name
        for key in keys:
            at = next(i for i, line in enumerate(lines) if line.startswith(f"{key} =") and i > lines.index(f"[{name}]"))
            while " = " in lines[at - 1] and not lines[at - 1].startswith("#"):
                at -= 1
            assert lines[at - 1].startswith("#"), f"[{name}] {key} has no comment above it"


def test_mimic_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmin_messages = 5\n")
    assert load_settings(None, {"MIMIC_CONFIG": str(path)}).limits.min_messages == 5


@pytest.mark.parametrize(("text", "needle"), [
    ("[limits]\nuser_limt = 3\n", "[limits] user_limt is not a setting; did you mean user_limit?"),
    ("[limitz]\nuser_limit = 3\n", "unknown section 'limitz'; did you mean [limits]?"),
    ("model = 'x.onnx'\n", "unknown top-level key 'model'"),
    ("[limits]\nuser_limit = 'five'\n", "[limits] user_limit must be an integer, not 'five'"),
    ("[limits]\nuser_limit = true\n", "[limits] user_limit must be an integer"),
    ("[slack]\nadmins = 'U1'\n", "[slack] admins must be a list of strings"),
    ("[limits]\nuser_limit = -1\n", "[limits] user_limit must be 0 (unlimited) or more (got -1)"),
    ("[generation]\ntemperature = 0\n", "[generation] temperature must be in (0, 5]"),
    ("[generation]\nmax_chars = 5000\n", "[generation] max_chars (5000) is more than [limits] max_message_chars"),
    ("[storage]\ndatabase = 'postgres://db/mimic'\n", "[storage] database must be a file path or a sqlite:/// URL"),
    ("[slack]\nport = 70000\n", "[slack] port must be in [1, 65535]"),
    ("[slack]\ncommand = 'impersonate'\n", "[slack] command must look like /name"),
    ("[slack]\nspeak_channels = ['']\n", "[slack] speak_channels has an empty or padded entry"),
    ("[discord]\ndev_guild_id = 'my-guild'\n", "[discord] dev_guild_id must be a guild id"),
    ("[discord]\nadmins = ['bob']\n", "[discord] admins must list Discord user ids"),
    ("[posting]\nmarker = ' '\n", "[posting] marker must say that the bot wrote the message"),
    ("[retrain]\nschedule = 'every night'\n", "[retrain] schedule is not a 5-field cron expression"),
    ("[retrain]\ntimezone = 'Mars/Olympus'\n", "[retrain] timezone is not a known time zone"),
    ("[retrain]\nkeep_versions = 0\n", "[retrain] keep_versions must be at least 1"),
    ("[retrain]\nreport_channel = '#general'\n", "[retrain] report_channel must be \"slack:<channel id>\""),
    ("[limits\n", "not valid TOML"),
])
def test_bad_settings_are_one_line_naming_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path, {})
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert message.startswith(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.toml", {})


@pytest.mark.parametrize("text", [
    "[slack]\nbot_token = 'xoxb-" + "123-456-abc'\n",  # a fake, split for secret scanners
    "[slack]\nsigning_secret = 'abc'\n",
    "[discord]\ntoken = 'x'\n",
    "[slack]\nadmins = ['xoxp-1234-5678']\n",  # a token pasted into the wrong key is still a token
    "[retrain]\nreport_channel = 'xapp-" + "1-A1-2-abc'\n",
])
def test_secrets_in_the_file_are_refused_with_an_explanation(tmp_path: Path, text: str) -> None:
    with pytest.raises(SecretInConfigError) as err:
        load_settings(write(tmp_path, text), {})
    assert "read only from the environment" in str(err.value) and "SLACK_BOT_TOKEN" in str(err.value)


def test_secrets_come_from_the_environment_and_are_never_shown() -> None:
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-2", "SLACK_SIGNING_SECRET": "s3",
           "DISCORD_TOKEN": "d4", "SLACK_API_URL": "http://127.0.0.1:9/api/"}
    s = load_settings(None, env)
    assert (s.slack.bot_token, s.slack.app_token, s.slack.signing_secret, s.discord.token) == ("xoxb-1", "xapp-2",
                                                                                                "s3", "d4")
    assert s.slack.socket_mode and s.slack.api_url == "http://127.0.0.1:9/api/"
    assert not any(secret in repr(s) for secret in ("xoxb-1", "xapp-2", "s3", "'d4'"))
    assert not load_settings(None, {"SLACK_BOT_TOKEN": "xoxb-1"}).slack.socket_mode


def test_port_from_the_environment_and_flags_win(tmp_path: Path) -> None:
    path = write(tmp_path, "[slack]\nport = 4000\n[storage]\ndata_dir = 'var'\nmodel = 'a.onnx'\n")
    assert load_settings(path, {}).slack.port == 4000
    assert load_settings(path, {"PORT": "5000"}).slack.port == 5000
    with pytest.raises(ConfigError, match="PORT must be a port number"):
        load_settings(path, {"PORT": "web"})
    s = load_settings(path, {"PORT": "5000"}).override(model="b.onnx", database="x.db", port=6000)
    assert (s.slack.port, s.storage.model_path, s.storage.database_path) == (6000, Path("b.onnx"), Path("x.db"))
    assert s.override(data_dir="elsewhere").storage.data_dir == "elsewhere"


def test_database_url() -> None:
    assert StorageSettings(database="sqlite:////srv/mimic.db").database_path == Path("/srv/mimic.db")
    assert StorageSettings(data_dir="d").database_path == Path("d/mimic.db")


def test_channel_rules() -> None:
    default = ChannelRules()
    assert default.allows("C1", "general", "public") and default.allows("C9", None, "thread")
    assert not default.allows("G1", "secret", "private") and not default.allows("D1", None, "dm")
    listed = ChannelRules(("public", "G1", "#team-leads"))
    assert listed.allows("G1", "secret", "private") and listed.allows("G2", "team-leads", "private")
    assert not listed.allows("D1", None, "dm")
    only = ChannelRules(("C1",))
    assert only.allows("C1", None, "public") and not only.allows("C2", "random", "public")
    assert not ChannelRules(()).allows("C1", "general", "public")
    assert not default.allows("C1", "general", "unknown")  # a channel we could not look up is not public


def test_admins_and_rules_per_platform(tmp_path: Path) -> None:
    path = write(tmp_path, "[slack]\nadmins = ['U1']\nspeak_channels = []\n[discord]\nadmins = ['123456789012345678']\n")
    s = load_settings(path, {})
    assert s.admins("slack") == {"U1"} and s.admins("discord") == {"123456789012345678"}
    assert s.admins("console") == frozenset()
    assert not s.speak_rules("slack").allows("C1", "general", "public")
    assert s.speak_rules("discord").allows("1", "general", "public")


def test_generation_settings_reach_the_engine(tmp_path: Path) -> None:
    from bot.commands import impersonation_config

    default = impersonation_config(load_settings(None, {}))
    assert default.voice and default.style and default.drafts == 4 and default.max_rows == 64
    path = write(tmp_path, "[generation]\nvoice_memory = false\nstyle_ranker = false\ndrafts = 2\nvoice_beta = 3.5\n")
    cfg = impersonation_config(load_settings(path, {}))
    assert (cfg.voice, cfg.style, cfg.drafts, cfg.voice_beta) == (False, False, 2, 3.5)
