"""`mimic ingest`, `history slack|discord`, `optout|optin|forget|link|unlink`, `stats`: chat history in.

Handlers parse, call one function in training/, print. Progress bars are drawn here from the callbacks
training/ reports through; warnings come through logging on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bot.errors import ConfigError, UsageError

log = logging.getLogger(__name__)


class _ProgressBar:
    """One tqdm bar per source (an export, a file, the Slack API), fed by IngestProgress events."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.bar: Any = None
        self.source: str | None = None

    def __call__(self, p: Any) -> None:  # p: training.ingest_batch.IngestProgress
        from bot.progress import counter

        if p.source != self.source:
            self.close()
            self.source = p.source
            self.bar = counter(os.path.basename(p.source.rstrip("/")) or p.source, self.unit, p.files_total)
        self.bar.set_postfix(messages=p.messages, refresh=False)
        self.bar.update(p.files_done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_ingest(args: argparse.Namespace) -> int:
    from training.ingest import ingest_paths

    with _store_or_none(_db(args)) as store, _ProgressBar("files") as bar:
        report = ingest_paths(store, args.paths, fmt=args.format, speaker=args.speaker,
                              include_bots=args.include_bots, include_private=args.include_private, progress=bar)
    print(report.summary())
    return 0


@contextlib.contextmanager
def _store_or_none(db: Path) -> Iterator[Any]:
    """The store, created when missing; a run that fails leaves no new empty store behind, to be mistaken
    for a real one (`serve` would take everyone for forgotten)."""
    from training.store import Store

    new_store = not db.exists()
    try:
        with Store.open(db) as store:
            yield store
    except BaseException:
        if new_store:
            for leftover in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                leftover.unlink(missing_ok=True)
        raise


def run_history_slack(args: argparse.Namespace) -> int:
    from training.history_slack import DEFAULT_API_URL, fetch_slack_history, slack_client

    token = os.environ.get(args.token_env)  # secrets come from the environment only, never a flag
    if not token:
        raise ConfigError(f"{args.token_env} is not set; put the bot token (xoxb-...) in it")
    api_url = args.api_url or os.environ.get("SLACK_API_URL") or DEFAULT_API_URL
    channels = [c for c in args.channels.split(",") if c.strip()] if args.channels else None
    with _store_or_none(_db(args)) as store, _ProgressBar("channels") as bar:
        report = fetch_slack_history(slack_client(token, api_url), store, channels=channels, out_zip=args.out,
                                     progress=bar)
    print(report.summary() + (f"; wrote {args.out}" if args.out else ""))
    return 0


def run_history_discord(args: argparse.Namespace) -> int:
    from training.history_discord import fetch_discord_history

    token = os.environ.get("DISCORD_TOKEN")  # secrets come from the environment only, never a flag
    if not token:
        raise ConfigError("DISCORD_TOKEN is not set; put the bot token in it")
    channels = [c.strip() for c in args.channels.split(",") if c.strip()] if args.channels else None
    with _store_or_none(_db(args)) as store, _ProgressBar("channels") as bar:
        report = fetch_discord_history(token, store, channels=channels, progress=bar)
    print(report.summary())
    return 0


def _set_opted_out(args: argparse.Namespace, opted_out: bool) -> int:
    from training.store import Store

    with Store.open(_db(args), create=False) as store:
        user = store.set_opted_out(args.name, opted_out)
        accounts, namesakes = store.accounts(args.name), store.namesakes(args.name)
    print(f"mimic: {_person(accounts)} {'is' if len(accounts) == 1 else 'are'} opted "
          f"{'out of' if opted_out else 'back into'} learning and impersonation")
    _warn_namesakes(user.speaker, namesakes, "optout" if opted_out else "optin")
    return 0


def _person(accounts: list[Any]) -> str:
    """A person's accounts for a message: "viola", or "viola and viola_2 (the same person)"."""
    names = [a.speaker or a.platform_id for a in accounts]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]} (the same person)"


def _warn_namesakes(speaker: str | None, namesakes: list[Any], verb: str) -> None:
    """Other accounts going by the same name may be the same person on another platform, whom an opt-out or
    forget does not cover until they are linked: say so, with the command that covers them."""
    if not namesakes:
        return
    others = ", ".join(f"{a.speaker} ({a.platform})" for a in namesakes[:5])
    more = f" and {len(namesakes) - 5} more" if len(namesakes) > 5 else ""
    if verb == "forget":  # the person is gone: linking is no longer possible, forgetting the others is
        fix = f"forget them too (`mimic forget {namesakes[0].speaker}`)"
    else:
        fix = f"link them (`mimic link {speaker} {namesakes[0].speaker}`), then this covers them too"
    log.warning("%s%s go by the same name as %s but are separate accounts, not covered by this %s; if they are "
                "the same person, %s", others, more, speaker, verb, fix)


def run_optout(args: argparse.Namespace) -> int:
    return _set_opted_out(args, True)


def run_optin(args: argparse.Namespace) -> int:
    return _set_opted_out(args, False)


def run_forget(args: argparse.Namespace) -> int:
    from bot.forget import forget_in_models
    from training.store import Store

    with Store.open(_db(args), create=False) as store:
        if not args.yes:
            _confirm(f"Delete everything stored about '{args.name}' (every linked account) and opt them out for "
                     "good? [y/N] ")
        accounts, namesakes = store.accounts(args.name), store.namesakes(args.name)
        learned = store.learned_names(args.name)
        deleted = store.forget(args.name)
    model = args.model or _storage(args).model_path
    memories = sum(forget_in_models(model, name) for name in learned)
    print(f"mimic: forgot {_person(accounts)}: {deleted} messages deleted, removed from {memories} voice "
          "memories; they stay opted out")
    _warn_namesakes(accounts[0].speaker, namesakes, "forget")
    return 0


def run_link(args: argparse.Namespace) -> int:
    from training.store import Store

    with Store.open(_db(args), create=False) as store:
        for other in args.others:
            accounts = store.link(args.name, other)
    print(f"mimic: {_person(accounts)}: learned as {accounts[0].speaker} from the next training on; an opt-out "
          f"or forget of any of them covers all" + (" (all opted out, as one was)" if accounts[0].opted_out else ""))
    return 0


def run_unlink(args: argparse.Namespace) -> int:
    from training.store import Store

    with Store.open(_db(args), create=False) as store:
        user = store.unlink(args.name)
    print(f"mimic: {user.speaker} is a person of their own again (opted {'out' if user.opted_out else 'in'})")
    return 0


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise UsageError("forget deletes a person's data for good; pass --yes to confirm")
    if input(question).strip().lower() not in ("y", "yes"):
        raise UsageError("not confirmed; nothing deleted")


def run_stats(args: argparse.Namespace) -> int:
    from training.store import Store

    with Store.open(_db(args), create=False) as store:
        stats = store.stats()
    print(json.dumps(stats, ensure_ascii=False, indent=2) if args.json else _format_stats(stats))
    return 0


def _format_stats(stats: dict[str, Any]) -> str:
    lines = [
        f"{stats['messages']:,} messages, {stats['chars']:,} characters, {len(stats['users'])} speakers, "
        f"{len(stats['channels'])} channels" + (f", {stats['first'][:10]} to {stats['last'][:10]}" if stats["first"] else "")
        + (f" ({stats['opted_out']} opted-out or forgotten people left out)" if stats.get("opted_out") else ""),
        "",
    ]
    who = max([len("speaker"), *map(len, stats["users"])])  # as wide as the longest name: columns stay aligned
    lines.append(f"{'speaker':<{who}} {'messages':>10} {'chars':>12}")
    lines += [f"{name:<{who}} {u['messages']:>10,} {u['chars']:>12,}" for name, u in stats["users"].items()]
    where = max([len("channel"), *map(len, stats["channels"])])
    lines += ["", f"{'channel':<{where}} {'messages':>10}"]
    lines += [f"{name:<{where}} {c['messages']:>10,}" for name, c in stats["channels"].items()]
    return "\n".join(lines)


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="PATH", help="message store (default: [storage] of the config, else data/mimic.db)")
    p.add_argument("--config", metavar="PATH", help="a config.toml (default: $MIMIC_CONFIG, else built-in defaults)")


def _storage(args: argparse.Namespace) -> Any:
    """The config's [storage] (from --config or $MIMIC_CONFIG), so these commands use the store the bot serves."""
    from bot.config import load_settings

    return load_settings(args.config, os.environ).storage


def _db(args: argparse.Namespace) -> Path:
    return Path(args.db) if args.db else _storage(args).database_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="import chat history (Slack export, DiscordChatExporter JSON, text)",
                       description="Import chat exports into the message store; the format is detected.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a Slack export (zip or folder), DCE .json files, or text")
    _db_arg(p)
    p.add_argument("--format", choices=["slack", "discord", "text"], help="force the format of every PATH")
    p.add_argument("--speaker", metavar="NAME", help="text format: every line is a message by NAME")
    p.add_argument("--include-bots", action="store_true", help="also store messages from bots and apps")
    p.add_argument("--include-private", action="store_true",
                   help="also import private channels, DMs and group DMs present in the export")
    p.set_defaults(run=run_ingest)

    p = sub.add_parser("history", help="fetch chat history through a platform's API")
    platforms = p.add_subparsers(dest="platform", metavar="PLATFORM", required=True)
    p = platforms.add_parser("slack", help="fetch Slack history with a bot token (incremental)",
                             description="Fetch the public channels the bot is in (or --channels) through the "
                                         "Slack Web API; each run fetches only what is newer than the last.")
    _db_arg(p)
    p.add_argument("--token-env", default="SLACK_BOT_TOKEN", metavar="VAR",
                   help="environment variable holding the bot token (default SLACK_BOT_TOKEN)")
    p.add_argument("--api-url", metavar="URL", help="Web API base URL (default $SLACK_API_URL or Slack's)")
    p.add_argument("--channels", metavar="C1,C2", help="exactly these channels (names or ids; private ones too)")
    p.add_argument("--out", metavar="FILE.zip", help="also write what was fetched as a Slack export zip")
    p.set_defaults(run=run_history_slack)
    p = platforms.add_parser("discord", help="fetch Discord history with DISCORD_TOKEN (incremental)",
                             description="Fetch the public channels the bot can read in its guilds (text, "
                                         "announcement, voice and stage chat, with their public threads and "
                                         "forum posts; or --channels) through Discord's REST API, with the bot "
                                         "token in DISCORD_TOKEN; each run fetches only what is newer than the "
                                         "last. The bot needs the Message Content Intent.")
    _db_arg(p)
    p.add_argument("--channels", metavar="ID,ID", help="exactly these channels: ids or #names (private ones and "
                                                       "threads too), and \"public\" for every public one")
    p.set_defaults(run=run_history_discord)

    for name, run, text in (("optout", run_optout, "never learn from or impersonate NAME"),
                            ("optin", run_optin, "undo optout for NAME")):
        p = sub.add_parser(name, help=text)
        p.add_argument("name", metavar="NAME", help="speaker name, handle, display name, real name or user id")
        _db_arg(p)
        p.set_defaults(run=run)

    p = sub.add_parser("link", help="NAME and OTHER are the same person (Slack and Discord accounts, say)",
                       description="Make OTHER's account the same person as NAME's: their messages are learned "
                                   "under NAME's speaker name from the next training on, and an opt-out, opt-in "
                                   "or forget of either covers both (if either is opted out, both are).")
    p.add_argument("name", metavar="NAME", help="the person, by any name `mimic stats` or `who` shows")
    p.add_argument("others", metavar="OTHER", nargs="+", help="their other account(s)")
    _db_arg(p)
    p.set_defaults(run=run_link)
    p = sub.add_parser("unlink", help="undo link: NAME's account is a person of its own again")
    p.add_argument("name", metavar="NAME", help="the account to separate")
    _db_arg(p)
    p.set_defaults(run=run_unlink)

    p = sub.add_parser("forget", help="delete everything stored about NAME and opt them out")
    p.add_argument("name", metavar="NAME", help="speaker name, handle, display name, real name or user id")
    _db_arg(p)
    p.add_argument("--model", metavar="PATH", help="model file or registry whose voice memories forget them too "
                                                   "(default: [storage] of the config, else data/models)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(run=run_forget)

    p = sub.add_parser("stats", help="messages and characters per speaker and per channel")
    _db_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run_stats)
