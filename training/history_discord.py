"""`mimic history discord`: fetch a guild's history through Discord's REST API, incrementally.

The Discord twin of training/history_slack.py. With a bot token, discord.py's client logs in over HTTP only
(`Client.login`: no gateway connection, no events), picks the channels, and pages through each channel's
messages oldest first from its watermark (`channel.history(after=<watermark>, oldest_first=True)`, 100 per
request, the API's maximum). Each message goes through the conversion live capture uses
(training/discord_objects.py `dce_message`, then training/ingest_discord.py `DiscordConverter`), so a
message fetched here, captured live, or imported from a DiscordChatExporter file is stored as the same row.

Channels: by default every public text, announcement or forum (and media) channel the bot can read (View
Channel and Read Message History) in every guild it is in, or in `guilds`, each followed by its public
threads: the guild's active ones (`Guild.active_threads()`) and the channel's archived ones
(`archived_threads(limit=None)`), oldest first. A forum has no messages of its own: its posts are public
threads whose parent it is, so only they are fetched. `channels` lists what to fetch instead, as `[discord]
learn_channels` does: "public" for that default, channel or thread ids, "#names" (a channel's, or an active
or archived public thread's of a channel the bot can read); a forum listed by id or name stands for all its
public posts. Private channels, private threads and DMs are fetched only when listed, private threads by id.
A thread is a channel of its own here, as in a DiscordChatExporter export of it: stored under its own id
and name, kind "thread", with its own watermark. A 403 or 404 on listing threads is a warning.

Watermarks: the newest message id seen in a channel, stored or skipped. Messages are stored in batches of
`batch_size` fetched messages, each batch and the watermark it reaches in one transaction (when the API
fails midway, what was fetched before the failure is stored the same way), so the next run resumes there.
The store is written from the event loop: SQLite is synchronous and a Store stays on its own thread.

Errors: a refused token (401) and an unreachable or failing API raise ApiError (one line); a channel that is
unknown (404) or that the bot may not read (403 Missing Access) is skipped with a warning and the others
are fetched. Rate limits (HTTP 429) are discord.py's: its HTTP client keeps per-route buckets and sleeps for
`retry_after` before retrying, so a long history is slow, never refused.

Known limits of the API: edits and deletions of messages older than the watermark are not seen (live capture
sees them while the bot runs), and a message read through the API names its author as a user, so each
author's guild member (nickname, roles) is fetched once per run. Discord sends empty text for other people's
messages unless the bot has the message-content intent (developer portal), as the live bot needs anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import discord

from training.discord_objects import channel_kind, channel_record, dce_message
from training.errors import ApiError
from training.ingest_batch import IngestProgress, IngestReport, ProgressFn
from training.ingest_discord import PLATFORM, ChannelHeader, DiscordConverter
from training.store import MessageRecord, Store

log = logging.getLogger(__name__)

PUBLIC = "public"  # in `channels`: every public channel the bot can read (as in bot/config.py's lists)
PAGE_SIZE = 100  # messages per request, what discord.py asks for with limit=None
BATCH_SIZE = 1000  # fetched messages per stored batch: an interrupted run fetches at most this many again
_TEXT_TYPES = (discord.MessageType.default, discord.MessageType.reply)
_READABLE_TYPES = (discord.TextChannel,)  # by default text and announcement channels, not voice-channel chat
_FORUM_TYPES = (discord.ForumChannel,)  # forum and media channels: no history of their own, only their posts
_PARENT_TYPES = _READABLE_TYPES + _FORUM_TYPES  # what `_select` picks from a guild: the channels and the forums
_PUBLIC_THREADS = (discord.ChannelType.public_thread, discord.ChannelType.news_thread)


@contextlib.contextmanager
def _api_errors() -> Iterator[None]:
    """discord.py's and aiohttp's failures as one-line ApiErrors naming the request. A 403 or 404 that means
    "skip this one" is caught where it happens, inside this."""
    try:
        yield
    except discord.LoginFailure as exc:
        raise ApiError("Discord refused the bot token (HTTP 401 Unauthorized); check DISCORD_TOKEN") from exc
    except discord.HTTPException as exc:
        response = exc.response
        where = f"{response.method} {response.url.path}" if hasattr(response, "url") else "request"
        reason = f" {response.reason}" if getattr(response, "reason", None) else ""
        raise ApiError(f"Discord API {where} failed: HTTP {exc.status}{reason}"
                       + (f" ({exc.text})" if exc.text else "")) from exc
    except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
        raise ApiError(f"Discord API: cannot connect ({exc or type(exc).__name__})") from exc


class _Guilds:
    """The guilds met on the way, each fetched once: roles and channel names (how `<@&id>` and `<#id>` read),
    its channels, the bot's own member (what it may read) and the members who wrote (nickname, roles)."""

    def __init__(self, client: discord.Client) -> None:
        self.client = client
        self._guilds: dict[int, discord.Guild | None] = {}
        self._channels: dict[int, list[Any]] = {}
        self._members: dict[tuple[int, int], discord.Member | None] = {}

    async def get(self, guild_id: int, report: IngestReport) -> discord.Guild | None:
        if guild_id not in self._guilds:
            try:
                self._guilds[guild_id] = await self.client.fetch_guild(guild_id, with_counts=False)
            except (discord.NotFound, discord.Forbidden) as exc:
                report.warn(f"Discord guild {guild_id}: {_why(exc)}; skipped")
                self._guilds[guild_id] = None
        return self._guilds[guild_id]

    async def channels(self, guild: discord.Guild) -> list[Any]:
        if guild.id not in self._channels:
            found = await guild.fetch_channels()
            self._channels[guild.id] = sorted(found, key=lambda c: (c.position, c.id))
        return self._channels[guild.id]

    async def member(self, guild: discord.Guild, user_id: int) -> discord.Member | None:
        """The member, or None when they left (or the bot may not look)."""
        key = (guild.id, user_id)
        if key not in self._members:
            try:
                self._members[key] = await guild.fetch_member(user_id)
            except (discord.NotFound, discord.Forbidden):
                self._members[key] = None
        return self._members[key]

    def names(self, converter: DiscordConverter, guild: discord.Guild) -> None:
        """Teach the converter this guild's channel and role names, as an export renders them."""
        for channel in self._channels.get(guild.id, ()):
            converter.channels.setdefault(str(channel.id), channel.name)
        converter.roles.update({str(r.id): r.name for r in guild.roles if not r.is_default()})


def _why(exc: discord.HTTPException) -> str:
    what = "not found" if isinstance(exc, discord.NotFound) else "no access"
    return f"{what} (HTTP {exc.status}{f' {exc.text}' if exc.text else ''})"


def _readable(channel: Any, me: discord.Member | None) -> bool:
    if me is None:  # the bot's member could not be fetched: try, a 403 is skipped with a warning
        return True
    perms = channel.permissions_for(me)
    return perms.view_channel and perms.read_message_history


async def _select(client: discord.Client, guilds: _Guilds, wanted: list[str] | None, guild_ids: list[int] | None,
                  report: IngestReport) -> list[Any]:
    """The channels and threads to fetch, in guild order then channel order, each thread right after its
    parent channel, each once. A forum chosen stands for its posts, which follow it; it is left out itself."""
    entries = [e.strip() for e in (wanted if wanted is not None else [PUBLIC]) if e.strip()]
    names = {e.removeprefix("#") for e in entries if e != PUBLIC and not e.isdigit()}  # "#public" is a name
    chosen: dict[int, Any] = {}
    if PUBLIC in entries or names:  # the default, or names to resolve
        if guild_ids is None:
            guild_ids = [g.id async for g in client.fetch_guilds(limit=None, with_counts=False)]
        for guild_id in guild_ids:
            guild = await guilds.get(guild_id, report)
            if guild is not None:
                for channel in await _from_guild(client, guilds, guild, PUBLIC in entries, names, report):
                    chosen.setdefault(channel.id, channel)
        for name in sorted(names - {c.name for c in chosen.values()}):
            report.warn(f"Discord channel '#{name}' not found in the bot's guilds; skipped")
    for channel_id in (int(e) for e in entries if e.isdigit()):
        if channel_id in chosen:
            continue
        try:
            channel = await client.fetch_channel(channel_id)
        except (discord.NotFound, discord.Forbidden) as exc:
            report.warn(f"Discord channel {channel_id}: {_why(exc)}; skipped")
            continue
        if isinstance(channel, _FORUM_TYPES):
            chosen[channel_id] = channel
            for post in await _forum_posts(guilds, channel, report):
                chosen.setdefault(post.id, post)
            continue
        if not hasattr(channel, "history"):  # a category: its messages are in its channels
            report.warn(f"Discord channel {channel_id} ({getattr(channel, 'name', '?')}) has no messages of its "
                        "own; skipped")
            continue
        chosen[channel_id] = channel
    # The forums stay in `chosen` until here so that their names count as found and a forum listed twice (by
    # name and id, or "public" and id) is listed once; they have no history to fetch.
    return [c for c in chosen.values() if not isinstance(c, _FORUM_TYPES)]


async def _from_guild(client: discord.Client, guilds: _Guilds, guild: discord.Guild, public: bool, names: set[str],
                      report: IngestReport) -> list[Any]:
    """One guild's share of the selection: the public channels and forums the bot can read (when `public`) with
    their public threads, the channels and public threads named in `names`, and the forums named there with
    all their public threads (posts)."""
    channels = [c for c in await guilds.channels(guild) if isinstance(c, _PARENT_TYPES)]
    me = await guilds.member(guild, client.user.id) if client.user else None
    readable = {c.id for c in channels if _readable(c, me)}
    defaults = {c.id for c in channels if public and c.id in readable and channel_kind(c) == "public"}
    for channel in channels:
        if public and channel_kind(channel) == "public" and channel.id not in defaults:
            log.info("Discord channel #%s (%s): the bot may not read its history; skipped", channel.name, channel.id)
    # Every thread of these: a forum named is tried even when the bot seems not to read it, as a channel named
    # is, so that a refusal is a warning rather than silence.
    whole = defaults | {c.id for c in channels if isinstance(c, _FORUM_TYPES) and c.name in names}
    # A name may be a thread's, so names look through the threads of every channel the bot can read.
    listed = [c for c in channels if c.id in whole or (names and c.id in readable)]
    threads = await _public_threads(guild, listed, report)
    selected: list[Any] = []
    for channel in channels:
        if channel.id in defaults or channel.name in names:
            selected.append(channel)  # a forum too: `_select` leaves it out once its posts are placed
        selected += [t for t in threads if t.parent_id == channel.id and (channel.id in whole or t.name in names)]
    return selected


async def _forum_posts(guilds: _Guilds, forum: discord.ForumChannel, report: IngestReport) -> list[discord.Thread]:
    """A listed forum's public posts. `fetch_channel` gives the forum a placeholder guild (no name, no gateway),
    so the threads are listed through the guild fetched."""
    guild = await guilds.get(forum.guild.id, report)
    return await _public_threads(guild, [forum], report) if guild is not None else []


async def _public_threads(guild: discord.Guild, parents: list[Any], report: IngestReport) -> list[discord.Thread]:
    """The public threads of `parents`, active and archived, each once, oldest first. Private threads are left
    out even when the bot may see them: like private channels, they are fetched only when listed."""
    if not parents:
        return []
    wanted = {c.id for c in parents}
    found: dict[int, discord.Thread] = {}
    with _or_warn(report, f"Discord guild {guild.name} ({guild.id}): cannot list its active threads"):
        found.update({t.id: t for t in await guild.active_threads() if t.parent_id in wanted})
    for channel in parents:
        with _or_warn(report, f"Discord channel #{channel.name} ({channel.id}): cannot list its archived threads"):
            async for thread in channel.archived_threads(limit=None):  # public ones: private=False
                found.setdefault(thread.id, thread)
    return sorted((t for t in found.values() if t.type in _PUBLIC_THREADS), key=lambda t: t.id)


@contextlib.contextmanager
def _or_warn(report: IngestReport, what: str) -> Iterator[None]:
    """A 403 or 404 while listing is a warning: the threads listed before it, and everything else, are fetched."""
    try:
        yield
    except (discord.NotFound, discord.Forbidden) as exc:
        report.warn(f"{what}: {_why(exc)}; skipped")


async def fetch_discord_history_async(
    client: discord.Client,
    store: Store,
    *,
    channels: list[str] | None = None,
    guilds: list[int] | None = None,
    include_bots: bool = False,
    progress: ProgressFn | None = None,
    batch_size: int = BATCH_SIZE,
) -> IngestReport:
    """Fetch and store everything newer than each channel's watermark, with a client that is logged in
    (`await client.login(token)`; a gateway connection is not needed)."""
    report = IngestReport()
    with _api_errors():
        known = _Guilds(client)
        selected = await _select(client, known, channels, guilds, report)
        converter = DiscordConverter(store, report, store.channel_names(PLATFORM), include_bots)
        # Every name up front, as the importer reads every file's header first: a `<#id>` in a channel can
        # name a thread fetched after it, and guild channel lists leave threads out.
        converter.channels.update({r.platform_id: r.name for r in map(channel_record, selected)})
        fetched, texts = 0, _Texts()
        for done, channel in enumerate(selected, 1):
            header = await _prepare(channel, known, converter, store)
            name = str(header.path)
            tick = _Ticker(progress, name, done - 1, len(selected), fetched)
            try:
                fetched += await _fetch_channel(channel, known, header, converter, store, batch_size, tick, texts)
            except discord.Forbidden as exc:  # listed, or readable by its permissions, and still refused
                report.warn(f"Discord channel {name} ({header.channel.platform_id}): {_why(exc)}; skipped")
                continue
            report.files += 1
            if progress is not None:
                progress(IngestProgress(name, done, len(selected), fetched))
    if texts.humans and texts.blank == texts.humans:
        report.warn(f"all {texts.humans} messages from people came without text: the bot needs the message "
                    "content intent (Discord developer portal, Bot page)")
    return report


async def _prepare(channel: Any, known: _Guilds, converter: DiscordConverter, store: Store) -> ChannelHeader:
    """Record the channel and its guild; teach the converter the guild's names. Returns its header."""
    record = channel_record(channel)
    guild = await known.get(channel.guild.id, converter.report) if getattr(channel, "guild", None) else None
    if guild is not None:
        await known.channels(guild)
        known.names(converter, guild)
        store.upsert_workspace(PLATFORM, str(guild.id), guild.name)
    store.upsert_channel(record)
    converter.channels[record.platform_id] = record.name
    return ChannelHeader(Path(f"#{record.name}"), record.workspace_id or "0", guild.name if guild else None, record)


@dataclass
class _Texts:
    """People's messages seen, and how many came with no text: all of them means Discord withheld it."""

    humans: int = 0
    blank: int = 0


class _Ticker:
    """Progress every page: channels done before this one, messages fetched in this run."""

    def __init__(self, progress: ProgressFn | None, source: str, done: int, total: int, before: int) -> None:
        self.progress, self.source, self.done, self.total, self.before = progress, source, done, total, before

    def __call__(self, fetched: int) -> None:
        if self.progress is not None and fetched % PAGE_SIZE == 0:
            self.progress(IngestProgress(self.source, self.done, self.total, self.before + fetched))


async def _fetch_channel(channel: Any, known: _Guilds, header: ChannelHeader, converter: DiscordConverter,
                         store: Store, batch_size: int, tick: _Ticker, texts: _Texts) -> int:
    """Store one channel's new messages batch by batch, each with its watermark; returns how many were fetched."""
    report = converter.report
    channel_id = header.channel.platform_id
    pending: list[MessageRecord] = []
    newest: str | None = None
    fetched = 0
    guild = await known.get(int(header.guild_id), report) if header.guild_id != "0" else None
    watermark = store.get_watermark(PLATFORM, channel_id)
    after = discord.Object(id=int(watermark)) if watermark else None

    def commit() -> None:
        with store.transaction():
            if pending:
                result = store.upsert_messages(pending)
                report.new += result.new
                report.updated += result.updated
                report.unchanged += result.unchanged
            if newest is not None:
                store.set_watermark(PLATFORM, channel_id, newest)
        pending.clear()

    try:
        async for message in channel.history(limit=None, after=after, oldest_first=True):
            fetched += 1
            author = message.author
            if guild is not None and not isinstance(author, discord.Member) and not author.bot \
                    and message.webhook_id is None:
                author = await known.member(guild, author.id) or author
            if not author.bot and message.type in _TEXT_TYPES:
                texts.humans += 1
                texts.blank += not message.content
            record = converter.record(dce_message(message, author), header)
            if record is not None:
                pending.append(record)
            newest = str(message.id)  # only now: a failure above must not move the watermark past it
            if fetched % batch_size == 0:
                commit()
            tick(fetched)
    except (discord.HTTPException, aiohttp.ClientError, ConnectionError, TimeoutError):
        commit()  # the messages fetched before the failure are whole: keep them, and the watermark they reach
        raise
    commit()
    return fetched


async def _fetch_with_token(token: str, store: Store, **options: Any) -> IngestReport:
    discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # it never joins voice: no warnings
    client = discord.Client(intents=discord.Intents.default())  # intents matter to a gateway only
    try:
        with _api_errors():
            await client.login(token)
        return await fetch_discord_history_async(client, store, **options)
    finally:
        await client.close()


def fetch_discord_history(
    token: str,
    store: Store,
    *,
    channels: list[str] | None = None,
    guilds: list[int] | None = None,
    include_bots: bool = False,
    progress: ProgressFn | None = None,
    batch_size: int = BATCH_SIZE,
) -> IngestReport:
    """Log in with a bot token, fetch and store everything newer than each channel's watermark, log out.
    Runs its own event loop: call it from synchronous code (the CLI, the retraining job)."""
    return asyncio.run(_fetch_with_token(token, store, channels=channels, guilds=guilds, include_bots=include_bots,
                                         progress=progress, batch_size=batch_size))
