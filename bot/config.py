"""Mimic's settings: an optional config.toml plus the environment, parsed once into frozen dataclasses.

Precedence, highest first: command-line flags (the CLI applies them with `Settings.override`), the
environment (secrets, `PORT`, `SLACK_API_URL`, `MIMIC_CONFIG` naming the file), the file, the defaults.
Every key is documented in config.example.toml. This is the only module that reads the environment: the
CLI passes `os.environ` in, tests pass a dict.

Each section is a frozen dataclass whose fields are exactly the TOML keys; `_build_section` refuses unknown
keys and wrong types by name, and `__post_init__` checks ranges, so a bad setting is one line naming it:
    config.toml: [limits] user_limit must be 0 or more (got -1)
Secrets (tokens, the signing secret) come only from the environment; one written into the file is refused.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, get_type_hints

from bot.errors import ConfigError, SecretInConfigError

PLATFORMS = ("slack", "discord", "console")
PUBLIC = "public"  # in a channel list: every public channel (the bot must still be in it to hear it)
PUBLIC_KINDS = frozenset({"public", "thread"})  # a "thread" is a public thread; private ones are "private"
# Above this the sampler writes noise, not a person's messages; `mimic impersonate -temp` has the same bound.
MAX_TEMPERATURE = 5.0

# Setting name -> the environment variable it comes from. Never in the file.
SECRET_ENV = {
    "slack_bot_token": "SLACK_BOT_TOKEN",
    "slack_app_token": "SLACK_APP_TOKEN",
    "slack_signing_secret": "SLACK_SIGNING_SECRET",
    "discord_token": "DISCORD_TOKEN",
}
# Key names and values that are secrets whatever section they sit in.
_SECRET_KEY = re.compile(r"token|secret|password|api_key", re.IGNORECASE)
_SECRET_VALUE = re.compile(
    r"^(xox[abposr]-|xapp-)"  # Slack bot/user/app tokens
    r"|^[\w-]{23,28}\.[\w-]{6,7}\.[\w-]{27,}$"  # a Discord bot token's three dotted parts
)
_SNOWFLAKE = re.compile(r"^\d{15,21}$")


def _fail(section: str, key: str, problem: str, source: str = "") -> ConfigError:
    where = f"[{section}] {key}" if section else key
    return ConfigError(f"{source}: {where} {problem}" if source else f"{where} {problem}")


def _check(section: Any, checks: tuple[tuple[str, bool, str], ...]) -> None:
    """Raise for the first (key, ok, problem) of a section's value checks that fails, naming the value."""
    for key, ok, problem in checks:
        if not ok:
            raise _fail(section.SECTION, key, f"{problem} (got {getattr(section, key)})")


# ---- sections ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelRules:
    """Which channels a list allows: "public" (every public channel), channel ids, or "#name"s.

    Private channels, group DMs and DMs are allowed only when listed by id or name."""

    entries: tuple[str, ...] = (PUBLIC,)

    def allows(self, channel_id: str, name: str | None = None, kind: str = "public") -> bool:
        if channel_id in self.entries or (name and f"#{name.lstrip('#')}" in self.entries):
            return True
        return kind in PUBLIC_KINDS and PUBLIC in self.entries

    def describe(self) -> str:
        return ", ".join(self.entries) if self.entries else "none"


@dataclass(frozen=True)
class StorageSettings:
    SECTION: ClassVar[str] = "storage"
    data_dir: str = "data"
    database: str = ""  # "" -> <data_dir>/mimic.db; a path or a sqlite:/// URL
    model: str = ""  # "" -> <data_dir>/models (a registry); or one .onnx file
    watch_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not self.data_dir:
            raise _fail(self.SECTION, "data_dir", "must not be empty")
        if self.database and "://" in self.database and not self.database.startswith("sqlite:///"):
            raise _fail(self.SECTION, "database", f"must be a file path or a sqlite:/// URL (got {self.database!r}); "
                        "Mimic stores messages in SQLite")
        if self.watch_seconds <= 0:
            raise _fail(self.SECTION, "watch_seconds", f"must be positive (got {self.watch_seconds})")

    @property
    def database_path(self) -> Path:
        if not self.database:
            return Path(self.data_dir) / "mimic.db"
        return Path(self.database.removeprefix("sqlite:///")) if self.database.startswith("sqlite:///") \
            else Path(self.database)

    @property
    def model_path(self) -> Path:
        return Path(self.model) if self.model else Path(self.data_dir) / "models"


@dataclass(frozen=True)
class GenerationSettings:
    SECTION: ClassVar[str] = "generation"
    temperature: float = 0.7
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    max_chars: int = 280
    max_attempts: int = 8
    voice_memory: bool = True
    voice_beta: float = 2.0
    drafts: int = 4
    style_ranker: bool = True
    draft_rows: int = 64
    context_lines: int = 12
    batch_window_ms: float = 10.0
    max_batch: int = 64

    def __post_init__(self) -> None:
        checks = (
            ("temperature", 0 < self.temperature <= MAX_TEMPERATURE, f"must be in (0, {MAX_TEMPERATURE:g}]"),
            ("top_k", self.top_k >= 0, "must be 0 (off) or more"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("max_chars", self.max_chars >= 1, "must be at least 1"),
            ("max_attempts", self.max_attempts >= 1, "must be at least 1"),
            ("voice_beta", self.voice_beta > 0, "must be more than 0"),
            ("drafts", 1 <= self.drafts <= 32, "must be in [1, 32]"),
            ("draft_rows", self.draft_rows >= 1, "must be at least 1"),
            ("context_lines", self.context_lines >= 0, "must be 0 or more"),
            ("batch_window_ms", 0 <= self.batch_window_ms <= 1000, "must be in [0, 1000]"),
            ("max_batch", self.max_batch >= 1, "must be at least 1"),
        )
        _check(self, checks)


@dataclass(frozen=True)
class LimitSettings:
    SECTION: ClassVar[str] = "limits"
    user_limit: int = 5  # impersonations per person per window; 0: unlimited
    channel_limit: int = 20  # impersonations per channel per window; 0: unlimited
    window_seconds: float = 60.0
    max_message_chars: int = 2000
    max_prompt_chars: int = 200
    min_messages: int = 30

    def __post_init__(self) -> None:
        checks = (
            ("user_limit", self.user_limit >= 0, "must be 0 (unlimited) or more"),
            ("channel_limit", self.channel_limit >= 0, "must be 0 (unlimited) or more"),
            ("window_seconds", self.window_seconds > 0, "must be positive"),
            ("max_message_chars", 1 <= self.max_message_chars <= 40_000, "must be in [1, 40000]"),
            ("max_prompt_chars", self.max_prompt_chars >= 0, "must be 0 or more"),
            ("min_messages", self.min_messages >= 0, "must be 0 or more"),
        )
        _check(self, checks)


@dataclass(frozen=True)
class PostingSettings:
    SECTION: ClassVar[str] = "posting"
    marker: str = " (mimic)"  # appended to the impersonated person's name on every post

    def __post_init__(self) -> None:
        if not self.marker.strip():
            raise _fail(self.SECTION, "marker", "must say that the bot wrote the message; it cannot be blank")


@dataclass(frozen=True)
class PlatformSettings:
    """What Slack and Discord share: where Mimic learns, where it speaks, who is an admin."""

    SECTION: ClassVar[str] = ""
    learn_channels: tuple[str, ...] = (PUBLIC,)
    speak_channels: tuple[str, ...] = (PUBLIC,)
    admins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in ("learn_channels", "speak_channels"):
            for entry in getattr(self, key):
                if not entry or entry != entry.strip() or (entry.startswith("#") and len(entry) == 1):
                    raise _fail(self.SECTION, key,
                                f"has an empty or padded entry {entry!r}; use \"public\", ids or \"#name\"")

    @property
    def learn(self) -> ChannelRules:
        return ChannelRules(self.learn_channels)

    @property
    def speak(self) -> ChannelRules:
        return ChannelRules(self.speak_channels)


@dataclass(frozen=True)
class SlackSettings(PlatformSettings):
    SECTION: ClassVar[str] = "slack"
    port: int = 3000
    command: str = "/impersonate"
    mimic_command: str = "/mimic"
    # From the environment only (repr=False: never printed or logged).
    api_url: str = field(default="", metadata={"env": "SLACK_API_URL"})
    bot_token: str = field(default="", repr=False, metadata={"env": "SLACK_BOT_TOKEN"})
    app_token: str = field(default="", repr=False, metadata={"env": "SLACK_APP_TOKEN"})
    signing_secret: str = field(default="", repr=False, metadata={"env": "SLACK_SIGNING_SECRET"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.port <= 65535:
            raise _fail(self.SECTION, "port", f"must be in [1, 65535] (got {self.port})")
        for key in ("command", "mimic_command"):
            value = getattr(self, key)
            if not re.fullmatch(r"/[a-z0-9_-]{1,31}", value):
                raise _fail(self.SECTION, key, f"must look like /name in lower case (got {value!r})")

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)


@dataclass(frozen=True)
class DiscordSettings(PlatformSettings):
    SECTION: ClassVar[str] = "discord"
    dev_guild_id: str = ""  # sync slash commands to this guild at start; "" syncs nowhere
    webhook_name: str = "Mimic"
    token: str = field(default="", repr=False, metadata={"env": "DISCORD_TOKEN"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dev_guild_id and not _SNOWFLAKE.match(self.dev_guild_id):
            raise _fail(self.SECTION, "dev_guild_id", f"must be a guild id (digits), got {self.dev_guild_id!r}")
        for admin in self.admins:
            if not _SNOWFLAKE.match(admin):
                raise _fail(self.SECTION, "admins", f"must list Discord user ids (digits), got {admin!r}")
        name = self.webhook_name.casefold()
        if not self.webhook_name.strip() or "discord" in name or "clyde" in name or len(self.webhook_name) > 80:
            raise _fail(self.SECTION, "webhook_name", "must be 1-80 characters without 'discord' or 'clyde'")


@dataclass(frozen=True)
class RetrainSettings:
    """Nightly retraining (issue 5): parsed and checked now so a bad schedule fails at start-up."""

    SECTION: ClassVar[str] = "retrain"
    schedule: str = "0 3 * * *"  # cron: minute hour day-of-month month day-of-week
    timezone: str = "UTC"
    time_budget: float = 600.0
    from_scratch_every_days: int = 30  # 0: always warm-start when a current model exists
    keep_versions: int = 5
    tolerance: float = 0.02  # bits/char the candidate may be worse than current and still be promoted
    report_channel: str = ""  # "slack:C0123", "discord:1234..." or "" for the log only

    def __post_init__(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from bot.scheduler import ScheduleNeverFires, cron_trigger

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise _fail(self.SECTION, "timezone", f"is not a known time zone (got {self.timezone!r}; "
                        "e.g. \"UTC\" or \"Europe/Paris\")") from exc
        try:
            cron_trigger(self.schedule, self.timezone)  # crontab(5)'s meaning, as the worker runs it
        except ScheduleNeverFires as exc:
            raise _fail(self.SECTION, "schedule", f"never fires: no date matches it (got {self.schedule!r}; "
                        "e.g. \"0 3 * * *\" for 03:00 every day)") from exc
        except ValueError as exc:
            raise _fail(self.SECTION, "schedule", f"is not a 5-field cron expression ({exc}; got "
                        f"{self.schedule!r}, e.g. \"0 3 * * *\")") from exc
        inf = float("inf")
        checks = (
            ("time_budget", 0 < self.time_budget < inf, "must be a positive number of seconds"),
            ("from_scratch_every_days", self.from_scratch_every_days >= 0, "must be 0 (never) or more"),
            ("keep_versions", self.keep_versions >= 1, "must be at least 1"),
            ("tolerance", 0 <= self.tolerance < inf, "must be a number, 0 or more"),
        )
        _check(self, checks)
        if self.report_channel and not re.fullmatch(r"(slack|discord):[A-Za-z0-9]+", self.report_channel):
            raise _fail(self.SECTION, "report_channel", "must be \"slack:<channel id>\", \"discord:<channel id>\" "
                        f"or \"\" (got {self.report_channel!r})")


_SECTIONS: dict[str, type] = {
    "storage": StorageSettings,
    "generation": GenerationSettings,
    "limits": LimitSettings,
    "posting": PostingSettings,
    "slack": SlackSettings,
    "discord": DiscordSettings,
    "retrain": RetrainSettings,
}


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings = StorageSettings()
    generation: GenerationSettings = GenerationSettings()
    limits: LimitSettings = LimitSettings()
    posting: PostingSettings = PostingSettings()
    slack: SlackSettings = SlackSettings()
    discord: DiscordSettings = DiscordSettings()
    retrain: RetrainSettings = RetrainSettings()
    source: str = "defaults"  # the file read, for health logs

    def __post_init__(self) -> None:
        if self.generation.max_chars > self.limits.max_message_chars:
            raise ConfigError(f"{self.source}: [generation] max_chars ({self.generation.max_chars}) is more than "
                              f"[limits] max_message_chars ({self.limits.max_message_chars})")

    def override(self, *, model: str | Path | None = None, database: str | Path | None = None,
                 data_dir: str | Path | None = None, port: int | None = None) -> Settings:
        """A copy with command-line flags applied (they win over the file and the environment)."""
        storage, slack = self.storage, self.slack
        if data_dir is not None:
            storage = replace(storage, data_dir=str(data_dir))
        if model is not None:
            storage = replace(storage, model=str(model))
        if database is not None:
            storage = replace(storage, database=str(database))
        if port is not None:
            if not 1 <= port <= 65535:
                raise ConfigError(f"--port must be in [1, 65535] (got {port})")
            slack = replace(slack, port=port)
        return replace(self, storage=storage, slack=slack)

    def admins(self, platform: str) -> frozenset[str]:
        if platform == "slack":
            return frozenset(self.slack.admins)
        if platform == "discord":
            return frozenset(self.discord.admins)
        return frozenset()

    def speak_rules(self, platform: str) -> ChannelRules:
        return {"slack": self.slack.speak, "discord": self.discord.speak}.get(platform, ChannelRules((PUBLIC,)))

    def learn_rules(self, platform: str) -> ChannelRules:
        return {"slack": self.slack.learn, "discord": self.discord.learn}.get(platform, ChannelRules(()))


# ---- loading -------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, "a list of strings")


def _convert(value: Any, tp: Any, where: str, key: str, source: str) -> Any:
    """A TOML value as the field's type, or a ConfigError naming the key."""
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # tuple[str, ...]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        raise _fail(where, key, f"must be {_type_name(tp)}, not {value!r}", source)
    return value


def _refuse_secrets(raw: Mapping[str, Any], where: str, source: str) -> None:
    for key, value in raw.items():
        if isinstance(value, dict):
            _refuse_secrets(value, f"{where}.{key}" if where else key, source)
            continue
        values = value if isinstance(value, list) else [value]
        looks_secret = any(isinstance(v, str) and _SECRET_VALUE.search(v) for v in values)
        if _SECRET_KEY.search(key) or looks_secret:
            envs = ", ".join(sorted(set(SECRET_ENV.values())))
            raise SecretInConfigError(
                f"{source}: {f'[{where}] ' if where else ''}{key} looks like a secret; secrets are read only from "
                f"the environment ({envs}), never from the config file, which tends to end up in git and "
                "backups; remove it from the file and set the variable instead")


def _build_section(cls: type, raw: Any, environ: Mapping[str, str], source: str) -> Any:
    name = cls.SECTION
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    hints = get_type_hints(cls)
    file_keys = {f.name for f in fields(cls) if "env" not in f.metadata}
    for key in raw:
        if key not in file_keys:
            close = difflib.get_close_matches(key, sorted(file_keys), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(sorted(file_keys))}"
            raise _fail(name, key, f"is not a setting{hint}", source)
    kwargs = {key: _convert(value, hints[key], name, key, source) for key, value in raw.items()}
    for f in fields(cls):
        env = f.metadata.get("env")
        if env and environ.get(env):
            kwargs[f.name] = environ[env].strip()
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # the section named the key; add where it came from
        raise ConfigError(f"{source}: {exc}") from None


def load_settings(path: str | Path | None, environ: Mapping[str, str]) -> Settings:
    """Settings from `path` (or $MIMIC_CONFIG, or none: defaults) and the environment."""
    path = path or environ.get("MIMIC_CONFIG") or None
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such config file (copy config.example.toml to start one)") from None
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read it ({exc.strerror})") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: not UTF-8 text ({exc.reason})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML ({exc})") from exc
    _refuse_secrets(raw, "", source)
    for key, value in raw.items():
        if key not in _SECTIONS:
            close = difflib.get_close_matches(key, list(_SECTIONS), n=1)
            hint = f"did you mean [{close[0]}]?" if close else f"sections are {', '.join(f'[{s}]' for s in _SECTIONS)}"
            what = "section" if isinstance(value, dict) else "top-level key"
            raise ConfigError(f"{source}: unknown {what} {key!r}; {hint}")
    sections = {name: _build_section(cls, raw.get(name, {}), environ, source) for name, cls in _SECTIONS.items()}
    port = environ.get("PORT")
    if port:  # the hosting platform (Heroku, Render...) assigns the port: it wins over the file
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"PORT must be a port number in [1, 65535] (got {port!r})")
        sections["slack"] = replace(sections["slack"], port=int(port))
    return Settings(**sections, source=source)


def require(value: str, env: str, why: str) -> str:
    """A secret that this run needs, or a ConfigError naming the variable."""
    if not value:
        raise ConfigError(f"{env} is not set; {why}")
    return value
