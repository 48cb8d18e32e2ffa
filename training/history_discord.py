"""`mimic history discord`: fetch a guild's history through Discord's REST API, incrementally.

The Discord twin of training/history_slack.py. With a bot token, discord.py's client logs in over HTTP only
(`Client.login`: no gateway connection, no events), picks the channels, and pages through each channel's
messages oldest first from its watermark (`channel.history(after=<watermark>, oldest_first=True)`, 100 per
request, the API's maximum). Each message goes through the conversion live capture uses
(training/discord_objects.py `dce_message`, then training/ingest_discord.py `DiscordConverter`), so a
message fetched here, captured live, or imported from a DiscordChatExporter file is stored as the same row.

Message content: Discord sends other people's messages with empty text unless the application has the
Message Content Intent (developer portal, Bot page). Login reads the application's flags
(`/oauth2/applications/@me`); with neither GATEWAY_MESSAGE_CONTENT nor GATEWAY_MESSAGE_CONTENT_LIMITED the
fetch refuses before fetching anything (ApiError), because the watermarks would move past messages that came
without their text and no later run would fetch them again. A client whose flags are unknown is not refused.

Channels: by default every public text, announcement, voice or stage (their text chat) and forum (and
media) channel the bot can read (View Channel and Read Message History, and Connect for voice and stage) in
every guild it is in, or in `guilds`; each text, announcement or forum channel is followed by its public
threads: the guild's active ones (`Guild.active_threads()`) and the channel's archived ones, oldest first.
Archived threads are listed 100 a page, each page starting 1 ms after the last thread's archive time, repeats
dropped, until a page brings nothing new: discord.py's own paging (an exclusive `before` at that time) loses
the threads archived at the same moment across a page boundary (only more than 100 archived in one
millisecond still lose some). A forum has no messages of its own: its posts are public threads whose parent
it is, so only they are fetched. `channels` lists what to fetch instead, as `[discord] learn_channels` does:
"public" for that default, channel or thread ids, "#names" (a channel's, or an active or archived public
thread's of a channel the bot can read); a channel listed by id or name is fetched without its threads, and a
forum listed stands for all its public posts. Private channels, private threads and DMs are fetched only when
listed, private threads by id. A thread is a channel of its own here, as in a DiscordChatExporter export of
it: stored under its own id and name, kind "thread", with its own watermark. A 403 or 404 on listing threads
is a warning.

Watermarks: the newest message id seen in a channel, stored or skipped. A channel or thread whose
`last_message_id` is known and not newer than its watermark has nothing new: its messages are not asked for
(it still counts as fetched). Messages are stored in batches of `batch_size` fetched messages, each batch and
the watermark it reaches in one transaction (when the API fails midway, what was fetched before the failure is
stored the same way), so a retry or the next run resumes there. The store is written from the event loop:
SQLite is synchronous and a Store stays on its own thread.

Errors: a refused token (401, at login or later), an unreachable API and any other failure not named here
raise ApiError (one line). One channel's trouble is a warning, that channel is skipped and the others are
fetched: the bot may view it but lacks Read Message History (Discord answers that with no messages rather
than an error, so the bot's permissions are checked first); Discord refuses its history (403); it is gone
(404 Unknown Channel: deleted during the run, and its stored messages are removed, as live capture removes a
deleted channel's); or it keeps failing. Rate limits (HTTP 429) are first discord.py's: it keeps per-route
buckets and waits out `retry_after`, up to 5 tries a request. A 429 it gives up on, or a 5xx (discord.py
retries 500, 502, 504 and 524 itself, not 503), is retried from the channel's watermark, ATTEMPTS tries in
all, waiting RETRY_WAIT seconds doubled each time, or the Retry-After Discord sent when longer, at most
MAX_WAIT.

Known limits of the API: edits and deletions of messages older than the watermark are not seen, nor channels
deleted between runs (live capture sees both while the bot runs); a message read through the API names its
author as a user, so each author's guild member (nickname, roles) is fetched once per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
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
PAGE_SIZE = 100  # messages (and archived threads) per request, the API's maximum
BATCH_SIZE = 1000  # fetched messages per stored batch: an interrupted run fetches at most this many again
ATTEMPTS = 4  # tries of one channel in all when Discord fails transiently; then it waits for the next run
RETRY_WAIT = 2.0  # seconds before the first retry, doubled before each next one
MAX_WAIT = 60.0  # the longest wait before a retry, whatever Retry-After asks (a resource limit can ask for
# half an hour): the other channels should not wait that long for one, which the next run tries again
_sleep = asyncio.sleep  # the wait before a retry; tests replace it
_UNKNOWN_CHANNEL = 10003  # Discord's error code for a channel or thread that does not exist (any more)
_VOICE_TYPES = (discord.VoiceChannel, discord.StageChannel)  # their text chat; reading it also needs Connect
_READABLE_TYPES = (discord.TextChannel, *_VOICE_TYPES)  # text and announcement channels, voice and stage chat
_FORUM_TYPES = (discord.ForumChannel,)  # forum and media channels: no history of their own, only their posts
_THREAD_PARENTS = (discord.TextChannel, *_FORUM_TYPES)  # voice and stage channels have no threads
_PARENT_TYPES = _READABLE_TYPES + _FORUM_TYPES  # what `_select` picks from a guild: the channels and the forums
_PUBLIC_THREADS = (discord.ChannelType.public_thread, discord.ChannelType.news_thread)


def _http(exc: discord.HTTPException) -> str:
    """The status in words, as "HTTP 503 Service Unavailable"."""
    reason = getattr(exc.response, "reason", None)
    return f"HTTP {exc.status}{f' {reason}' if reason else ''}"


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
        raise ApiError(f"Discord API {where} failed: {_http(exc)}" + (f" ({exc.text})" if exc.text else "")) from exc
    except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
        raise ApiError(f"Discord API: cannot connect ({exc or type(exc).__name__})") from exc


def _require_message_content(client: discord.Client) -> None:
    """Refuse an application Discord withholds message text from, before anything is fetched: its messages
    would be stored without text, or skipped as empty, and the watermarks would move past them for good.
    discord.py reads the flags at login (`/oauth2/applications/@me`); a client without them is not refused."""
    flags = getattr(client, "application_flags", None)
    if not isinstance(flags, discord.ApplicationFlags):  # None, or discord.py's MISSING before login
        return
    if not (flags.gateway_message_content or flags.gateway_message_content_limited):
        raise ApiError("the Discord bot lacks the message content intent, so Discord would send messages without "
                       "their text: enable Message Content Intent on the Bot page of the Discord developer portal "
                       "and run again")


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
    connects = perms.connect or not isinstance(channel, _VOICE_TYPES)
    return perms.view_channel and perms.read_message_history and connects


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
    listed = [c for c in channels if isinstance(c, _THREAD_PARENTS) and (c.id in whole or (names and c.id in readable))]
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
            async for thread in _archived_threads(channel):
                found.setdefault(thread.id, thread)
    return sorted((t for t in found.values() if t.type in _PUBLIC_THREADS), key=lambda t: t.id)


async def _archived_threads(channel: Any) -> AsyncIterator[discord.Thread]:
    """A channel's archived public threads, each once. Discord lists them latest archive first, `before` an
    archive time, exclusive; discord.py pages with `before` = the last thread's time, which loses the threads
    archived at that same moment that did not fit on the page. So each page here starts 1 ms after the last
    thread's time (the threads of that millisecond come again), the threads seen are dropped, and a page with
    nothing new ends the listing (only more than a page of threads archived in one millisecond is cut short)."""
    seen: set[int] = set()
    before: datetime | None = None
    while True:
        page = [t async for t in channel.archived_threads(limit=PAGE_SIZE, before=before)]  # public: private=False
        new = [t for t in page if t.id not in seen]
        for thread in new:
            seen.add(thread.id)
            yield thread
        if len(page) < PAGE_SIZE or not new:
            return
        before = page[-1].archive_timestamp + timedelta(milliseconds=1)


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
    (`await client.login(token)`; a gateway connection is not needed). Raises ApiError, before fetching
    anything, when the application lacks the message content intent."""
    report = IngestReport()
    with _api_errors():
        _require_message_content(client)
        known = _Guilds(client)
        selected = await _select(client, known, channels, guilds, report)
        converter = DiscordConverter(store, report, store.channel_names(PLATFORM), include_bots)
        # Every name up front, as the importer reads every file's header first: a `<#id>` in a channel can
        # name a thread fetched after it, and guild channel lists leave threads out.
        converter.channels.update({r.platform_id: r.name for r in map(channel_record, selected)})
        selected = await _with_history(client, known, selected, report)
        fetched = 0
        for done, channel in enumerate(selected, 1):
            header = await _prepare(channel, known, converter, store)
            tick = _Ticker(progress, str(header.path), done - 1, len(selected), fetched)
            fetch = functools.partial(_fetch_channel, channel, known, header, converter, store, batch_size, tick)
            complete = await _fetch_or_skip(fetch, header, store, report)
            fetched += tick.fetched
            if complete:
                report.files += 1
                if progress is not None:
                    progress(IngestProgress(tick.source, done, len(selected), fetched))
    return report


async def _with_history(client: discord.Client, known: _Guilds, channels: list[Any], report: IngestReport
                        ) -> list[Any]:
    """`channels` less those the bot may view but not read the history of, each with a warning: Discord answers
    their history with no messages rather than an error, so a listed one would give nothing, silently."""
    kept = []
    for channel in channels:
        if await _lacks_history(client, known, channel, report):
            report.warn(f"Discord channel #{channel.name} ({channel.id}): the bot lacks the Read Message History "
                        "permission there; skipped")
        else:
            kept.append(channel)
    return kept


async def _lacks_history(client: discord.Client, known: _Guilds, channel: Any, report: IngestReport) -> bool:
    """Whether the bot may view `channel` but not read its history. Judged on the channel as its guild lists it,
    which knows the guild's roles (one fetched by id does not); a thread on its parent, whose permissions it
    has. A channel the bot may not view answers 403, a warning where it is fetched."""
    guild_id = getattr(getattr(channel, "guild", None), "id", None)
    guild = await known.get(guild_id, report) if guild_id is not None and client.user else None
    if guild is None:  # a DM, or a guild the bot cannot look at: let Discord answer
        return False
    ruling_id = channel.parent_id if isinstance(channel, discord.Thread) else channel.id
    ruling = next((c for c in await known.channels(guild) if c.id == ruling_id), None)
    me = await known.member(guild, client.user.id)
    if ruling is None or me is None:
        return False
    perms = ruling.permissions_for(me)
    return perms.view_channel and not perms.read_message_history


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


async def _fetch_or_skip(fetch: Callable[[], Awaitable[None]], header: ChannelHeader, store: Store,
                         report: IngestReport) -> bool:
    """Fetch one channel, trying again after transient failures; True when it is done. A channel Discord
    refuses (403) or no longer has (404) is skipped with a warning."""
    what = f"Discord channel {header.path} ({header.channel.platform_id})"
    try:
        return await _retrying(fetch, what, report)
    except (discord.Forbidden, discord.NotFound) as exc:
        if isinstance(exc, discord.NotFound) and exc.code == _UNKNOWN_CHANNEL:
            report.warn(f"{what}: deleted during the run (HTTP 404 {exc.text}); skipped{_forget(store, header)}")
        else:
            report.warn(f"{what}: {_why(exc)}; skipped")
        return False


def _forget(store: Store, header: ChannelHeader) -> str:
    """Remove a deleted channel from the store with its messages, as live capture does when Discord reports a
    deletion: a deleted channel's messages must not stay in training. Says what went, for the warning."""
    removed = store.delete_channel(PLATFORM, header.channel.platform_id)
    return f", and its {removed} stored messages removed from the store" if removed else ""


async def _retrying(fetch: Callable[[], Awaitable[None]], what: str, report: IngestReport) -> bool:
    """`fetch()`, tried again after a transient failure (a 5xx, or a 429 discord.py gave up on) up to ATTEMPTS
    times in all, each resuming from the watermark the last one committed. True when a try succeeds; False,
    with a warning, when every one failed. Any other failure is raised."""
    attempt = 1
    while True:
        try:
            await fetch()
            return True
        except (discord.HTTPException, discord.RateLimited) as exc:
            if not _transient(exc):
                raise
            failure = "rate limited" if isinstance(exc, discord.RateLimited) else _http(exc)
            if attempt == ATTEMPTS:
                report.warn(f"{what}: {failure}, {ATTEMPTS} tries; skipped until the next run")
                return False
            wait = _wait(exc, attempt)
            log.warning("%s: %s; trying again in %.0f s", what, failure, wait)
            await _sleep(wait)
            attempt += 1


def _transient(exc: discord.HTTPException | discord.RateLimited) -> bool:
    return isinstance(exc, discord.RateLimited) or exc.status == 429 or exc.status >= 500


def _wait(exc: discord.HTTPException | discord.RateLimited, attempt: int) -> float:
    """Seconds before the try after `attempt`: RETRY_WAIT doubled each time, or what Discord asked for when
    longer (Retry-After, or discord.py's RateLimited), at most MAX_WAIT."""
    if isinstance(exc, discord.RateLimited):
        asked = exc.retry_after
    else:
        try:
            asked = float(getattr(exc.response, "headers", {}).get("Retry-After", 0))
        except (TypeError, ValueError):
            asked = 0.0
    return min(MAX_WAIT, max(RETRY_WAIT * 2 ** (attempt - 1), asked))


class _Ticker:
    """Progress every page: channels done before this one, messages fetched in this run (this channel's are
    counted here, across tries)."""

    def __init__(self, progress: ProgressFn | None, source: str, done: int, total: int, before: int) -> None:
        self.progress, self.source, self.done, self.total, self.before = progress, source, done, total, before
        self.fetched = 0

    def __call__(self) -> None:
        self.fetched += 1
        if self.progress is not None and self.fetched % PAGE_SIZE == 0:
            self.progress(IngestProgress(self.source, self.done, self.total, self.before + self.fetched))


def _nothing_new(channel: Any, watermark: str | None) -> bool:
    """Whether the channel's newest message, as Discord reports it on the channel (`last_message_id`), was seen
    already: then its history is not asked for, which spares a request per archived thread every run."""
    last = getattr(channel, "last_message_id", None)
    return watermark is not None and last is not None and last <= int(watermark)


async def _fetch_channel(channel: Any, known: _Guilds, header: ChannelHeader, converter: DiscordConverter,
                         store: Store, batch_size: int, tick: _Ticker) -> None:
    """Store one channel's new messages batch by batch, each with its watermark."""
    report = converter.report
    channel_id = header.channel.platform_id
    watermark = store.get_watermark(PLATFORM, channel_id)
    if _nothing_new(channel, watermark):
        return
    pending: list[MessageRecord] = []
    newest: str | None = None
    fetched = 0
    guild = await known.get(int(header.guild_id), report) if header.guild_id != "0" else None
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
            record = converter.record(dce_message(message, author), header)
            if record is not None:
                pending.append(record)
            newest = str(message.id)  # only now: a failure above must not move the watermark past it
            if fetched % batch_size == 0:
                commit()
            tick()
    except (discord.HTTPException, aiohttp.ClientError, ConnectionError, TimeoutError):
        commit()  # the messages fetched before the failure are whole: keep them, and the watermark they reach
        raise
    commit()


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
