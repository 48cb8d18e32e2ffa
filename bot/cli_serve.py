"""`mimic serve slack|discord|console`, `mimic impersonate NAME`, `mimic who`, `mimic demo`.

Handlers only parse, build the parts (settings, store, model gate, command layer) and hand them to an
adapter. Chat SDKs are imported inside the handler that needs them, and nothing here imports torch except
through `mimic demo`, which trains.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import UsageError

if TYPE_CHECKING:
    from bot.capture import StoreAccess
    from bot.commands import Commands, ModelGate, Retrain
    from bot.config import Settings

log = logging.getLogger("bot.serve")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help="a config.toml (default: $MIMIC_CONFIG, else built-in defaults)")
    p.add_argument("--model", metavar="PATH", help="an .onnx model or a model registry dir (overrides the config)")
    p.add_argument("--db", metavar="PATH", help="the message store (overrides the config)")
    p.add_argument("--data-dir", metavar="DIR", help="the data directory (overrides the config)")


def load(args: argparse.Namespace, port: int | None = None) -> Settings:
    from bot.config import load_settings

    settings = load_settings(args.config, os.environ)
    return settings.override(model=args.model, database=args.db, data_dir=args.data_dir, port=port)


def retrain_hook(settings: Settings) -> Retrain | None:
    """What the admin `retrain` command calls: `(requested_by, report) -> first reply` (bot.commands.Retrain).
    It queues a request for the worker process (`mimic scheduler`); the bot process never trains."""
    from bot.scheduler import RetrainQueue

    return RetrainQueue(settings.storage.data_dir)


def build_commands(settings: Settings, *, watch: bool = True,
                   one_shot: bool = False) -> tuple[Commands, ModelGate, StoreAccess | None]:
    """The command layer over the configured model and store: (commands, gate, stores or None).

    A bot creates its store when there is none, to capture messages into it; but a store is also where
    opt-outs and forget requests are kept, and a model's people who are missing from it count as forgotten.
    So a model that knows people with no store where one was named (--db, or [storage] database) is a wrong
    path, refused; a bot would refuse everyone from a new empty store, so that is refused too. `one_shot`
    (`mimic impersonate`, `mimic who`): the model must be there, and without a store (none named, the
    default path empty) nobody's opt-out can be checked, which is said on stderr."""
    from bot.capture import StoreAccess
    from bot.commands import Commands, ModelGate

    db = settings.storage.database_path
    gate = ModelGate.from_settings(settings, **({} if watch else {"watch_seconds": None}))
    try:
        service = gate.loaded()
        if one_shot and service is None:
            gate.service()  # raises the one-line reason the model could not be loaded
        people = len(service.holder.get().speakers) if service is not None else 0
        if people and not db.is_file():
            if settings.storage.database or not one_shot:
                raise UsageError(f"{db}: no such message store, but the model knows {people} people; is the path "
                                 "right? (--db, or [storage] database in the config: opt-outs are kept there)")
            log.warning("no message store at %s: opt-outs are not checked (--db PATH names the store)", db)
        elif people and _holds_no_messages(db):  # made by an earlier wrong path: everyone would be "forgotten"
            raise UsageError(f"{db} holds no messages, but the model knows {people} people; is the path right? "
                             "(--db, or [storage] database in the config)")
    except BaseException:
        gate.close()
        raise
    stores = StoreAccess(db) if not one_shot or db.is_file() else None
    return Commands(settings, gate, stores, retrain=retrain_hook(settings)), gate, stores


def _holds_no_messages(db: Path) -> bool:
    from training.store import Store

    with Store.open(db, create=False) as store:
        return store.message_count() == 0


def log_health(platform: str, settings: Settings, gate: ModelGate, stores: StoreAccess | None) -> None:
    """One look at what this bot will serve, logged at start (no message text, no secrets)."""
    service = gate.loaded()
    if service is None:
        log.warning("no model at %s yet; impersonation answers 'no model loaded' until one appears there",
                    settings.storage.model_path)
    else:
        model = service.holder.get()
        log.info("model %s (%s): %d people, %s, %s", model.version, model.path, len(model.speakers),
                 "copy check on" if model.copy_index is not None else "no copy index",
                 f"voice memory of {len(model.voice)} people"
                 f"{' with its style ranker' if model.voice.style is not None else ''}"
                 if model.voice is not None else "no voice memory")
    if stores is not None:
        log.info("message store %s: %d messages stored (opted-out people's included; `mimic stats` leaves "
                 "them out)", stores.path, stores.store().message_count())
    if platform in ("slack", "discord"):
        section = getattr(settings, platform)
        log.info("%s: learning from %s; speaking in %s; %d admins", platform, section.learn.describe(),
                 section.speak.describe(), len(section.admins))
    limits = (f"rate limits {settings.limits.user_limit}/person, {settings.limits.channel_limit}/channel per "
              f"{settings.limits.window_seconds:.0f} s" if platform in ("slack", "discord")
              else "no rate limits on the console")
    log.info("settings from %s; %s", settings.source, limits)


def run_serve(args: argparse.Namespace) -> int:
    from bot.capture import Capture

    settings = load(args, port=args.port)
    _check_secrets(args.platform, settings)  # before the model and store are loaded
    commands, gate, stores = build_commands(settings)
    log_health(args.platform, settings, gate, stores)
    capture = Capture(stores, settings.slack.learn, settings.discord.learn) if stores is not None else None
    try:
        if args.platform == "console":
            from bot.console_adapter import run_console

            return run_console(commands)
        if args.platform == "slack":
            from bot import slack_adapter

            slack_adapter.run(slack_adapter.build_app(settings, commands, capture=capture), settings)
            return 0
        from bot.discord_adapter import MimicDiscordBot

        bot = MimicDiscordBot(settings=settings, commands=commands, capture=capture, sync_global=args.sync_global)
        bot.run(settings.discord.token, log_handler=None)  # the token was checked first (_check_secrets)
        return 0
    finally:
        gate.close()


def _check_secrets(platform: str, settings: Settings) -> None:
    if platform == "slack":
        from bot.slack_adapter import check_secrets

        check_secrets(settings)
    elif platform == "discord":
        from bot.config import require

        require(settings.discord.token, "DISCORD_TOKEN", "the Discord bot logs in with it")


def check_temperature(temp: float | None) -> None:
    """The config's range for [generation] temperature, for `-temp` too: above it every message is noise.
    (`mimic generate` keeps Darknet's freedom; impersonation writes as a person.)"""
    from bot.config import MAX_TEMPERATURE

    if temp is not None and not 0 < temp <= MAX_TEMPERATURE:
        raise UsageError(f"-temp must be in (0, {MAX_TEMPERATURE:g}], as [generation] temperature in the config "
                         f"(got {temp:g})")


def run_impersonate(args: argparse.Namespace) -> int:
    check_temperature(args.temp)  # before the model is loaded
    settings = load(args)
    commands, gate, _ = build_commands(settings, watch=False, one_shot=True)
    try:
        reply = commands.write_as(" ".join(args.name), args.prompt, temperature=args.temp, srand=args.srand)
    finally:
        gate.close()
    print(reply.text)
    return 0


def run_who(args: argparse.Namespace) -> int:
    from bot.commands import CONSOLE, Invocation

    settings = load(args)
    commands, gate, _ = build_commands(settings, watch=False, one_shot=True)
    try:
        reply = commands.handle(Invocation(CONSOLE, "cli", CONSOLE, "who", "all" if args.all else ""))
    finally:
        gate.close()
    print(reply.text)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from bot.demo import run_demo as demo

    if args.time_budget <= 0:
        raise UsageError("--time-budget must be positive")
    return demo(Path(args.data_dir), args.time_budget, retrain=not args.reuse)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the bot on Slack, Discord or the console",
                       description="Serve Mimic's commands. Secrets come from the environment: SLACK_BOT_TOKEN and "
                                   "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode); DISCORD_TOKEN.")
    p.add_argument("platform", choices=["slack", "discord", "console"])
    _config_args(p)
    p.add_argument("--port", type=int, help="Slack HTTP mode port (default $PORT, else [slack] port, else 3000)")
    p.add_argument("--sync-global", action="store_true",
                   help="Discord: publish the slash commands to every guild at start (slow; do it once)")
    p.set_defaults(run=run_serve)

    p = sub.add_parser("impersonate", help="print one message written as NAME (for scripts)")
    p.add_argument("name", metavar="NAME", nargs="+", help="a speaker, handle, display or real name (King Henry: "
                                                            "its words need no quotes)")
    _config_args(p)
    p.add_argument("--prompt", metavar="TEXT", help="the message's opening words")
    p.add_argument("-srand", "--srand", type=int, default=None, help="random seed (repeatable output)")
    p.add_argument("-temp", "--temp", type=float, default=None, help="temperature (default from the config)")
    p.set_defaults(run=run_impersonate)

    p = sub.add_parser("who", help="list the people the model can write as")
    _config_args(p)
    p.add_argument("--all", action="store_true", help="everyone (otherwise the list is cut short)")
    p.set_defaults(run=run_who)

    p = sub.add_parser("demo", help="try Mimic offline: a made-up team, a model trained for 90 s, a console",
                       description="Generate a synthetic team chat, import it, train a small model briefly on the "
                                   "CPU, then open the console (works with piped input too).")
    p.add_argument("--time-budget", type=float, default=90.0, metavar="SECONDS", help="training time (default 90)")
    p.add_argument("--data-dir", default="data/demo", metavar="DIR", help="where the demo keeps its files")
    p.add_argument("--reuse", action="store_true", help="reuse the demo model from an earlier run if there is one")
    p.set_defaults(run=run_demo)
