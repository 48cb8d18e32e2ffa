"""Discord: slash commands and live capture, translated to and from the command layer (discord.py 2.x).

    /impersonate person:<user> [prompt]     defer at once, generate in a worker thread, post through the
                                            channel's webhook as the member (their name + marker, their avatar)
    /mimic who|help|optout|optin|forget|retrain
    messages, edits, deletions (bulk too)   captured into the store in learn channels (message-content intent)

The commands are guild-only. Posting as someone needs Manage Webhooks; without it (Forbidden), or when
Discord refuses the webhook (any other HTTP error: 15 webhooks already, a name it rejects), Mimic falls back
to a normal bot message that says who is being impersonated. Every send carries AllowedMentions.none().
Slash commands are synced to `dev_guild_id` at start when set; a global sync is an explicit `--sync-global`,
never a side effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands as ext

from bot.capture import Capture
from bot.commands import Commands, Invocation, Reply
from bot.config import Settings
from bot.errors import ConfigError, ConnectError
from bot.safety import discord_username
from training.discord_objects import channel_kind, channel_record, dce_message  # shared with history_discord

log = logging.getLogger(__name__)

NO_PINGS = discord.AllowedMentions.none()
DISCORD_MAX_CHARS = 2000


class WebhookCache:
    """One webhook per channel, found or created once, then reused; None where Manage Webhooks is missing or
    Discord refuses one (15 per channel): that answer is kept for `retry_seconds`, so each impersonation there
    does not ask again."""

    def __init__(self, bot: discord.Client, session: aiohttp.ClientSession, name: str,
                 retry_seconds: float = 600.0, clock: Callable[[], float] = time.monotonic):
        self.bot = bot
        self.session = session
        self.name = name
        self.retry_seconds, self.clock = retry_seconds, clock
        self._hooks: dict[int, discord.Webhook] = {}
        self._refused: dict[int, float] = {}  # channel id -> when to ask again
        self._lock = asyncio.Lock()  # two first requests in one channel must not create two webhooks

    @staticmethod
    def _target(channel: Any) -> Any:
        return channel.parent if isinstance(channel, discord.Thread) else channel  # threads use their parent's

    async def get(self, channel: Any) -> discord.Webhook | None:
        target = self._target(channel)
        if target is None or not hasattr(target, "create_webhook"):
            return None  # DMs and group DMs have no webhooks
        async with self._lock:
            if target.id in self._hooks:
                return self._hooks[target.id]
            if self.clock() < self._refused.get(target.id, 0.0):
                return None
            me = self.bot.user
            try:
                hook = next((h for h in await target.webhooks() if h.token and h.name == self.name
                             and (me is None or h.user is None or h.user.id == me.id)), None)
                if hook is None:
                    hook = await target.create_webhook(name=self.name, reason="Mimic posts impersonations here")
            except discord.Forbidden:
                log.info("no Manage Webhooks in channel %s; posting impersonations as plain bot messages", target.id)
                self._refused[target.id] = self.clock() + self.retry_seconds
                return None
            except discord.HTTPException as exc:  # e.g. 400/30007: the channel already holds 15 webhooks
                log.warning("no webhook in channel %s (HTTP %s, code %s: %s); posting as a plain bot message",
                            target.id, exc.status, exc.code, exc.text)
                self._refused[target.id] = self.clock() + self.retry_seconds
                return None
            # Sent through the bot's own session, which the bot closes (a library never closes one it is given).
            self._hooks[target.id] = discord.Webhook.partial(hook.id, hook.token, session=self.session)
            return self._hooks[target.id]

    def drop(self, channel: Any) -> None:
        target = self._target(channel)
        self._hooks.pop(getattr(target, "id", 0), None)


def notifier(interaction: discord.Interaction) -> Callable[[str], None]:
    """Tell the requester something later from any thread: a private follow-up while the interaction lives
    (15 minutes), a DM after that."""
    loop = asyncio.get_running_loop()
    user = interaction.user

    async def send(text: str) -> None:
        try:
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
        except discord.HTTPException:
            with contextlib.suppress(discord.HTTPException):
                await user.send(text, allowed_mentions=NO_PINGS)

    def notify(text: str) -> None:  # called from worker threads: hand the send to the bot's event loop
        asyncio.run_coroutine_threadsafe(send(text), loop)

    return notify


def _invocation(interaction: discord.Interaction, command: str, args: str = "") -> Invocation:
    channel = interaction.channel
    return Invocation(platform="discord", user_id=str(interaction.user.id), channel_id=str(interaction.channel_id),
                      command=command, args=args.strip(), channel_name=getattr(channel, "name", None),
                      channel_kind=channel_kind(channel), user_name=interaction.user.name,
                      notify=notifier(interaction))


class ImpersonateCog(ext.Cog):
    """`/impersonate` and the `/mimic` group."""

    # /impersonate is guild-only (Discord doesn't offer it in DMs); the /mimic group stays available there, so a
    # person can opt out privately in a DM with the bot.
    mimic = app_commands.Group(name="mimic", description="Mimic: who it can write as, consent, admin")

    def __init__(self, bot: MimicDiscordBot, commands: Commands, marker: str):
        self.bot = bot
        self.commands = commands
        self.marker = marker

    async def _run(self, interaction: discord.Interaction, command: str, args: str = "") -> Reply:
        await interaction.response.defer(ephemeral=True, thinking=True)  # Discord's 3-second ack
        return await asyncio.to_thread(self.commands.handle, _invocation(interaction, command, args))

    @app_commands.command(name="impersonate", description="Write a message the way someone here would")
    @app_commands.guild_only()
    @app_commands.describe(person="who to write as", prompt="opening words (optional)")
    async def impersonate(self, interaction: discord.Interaction, person: discord.User,
                          prompt: str | None = None) -> None:
        # discord.User, not Member: someone who left the server resolves to a User (a Member where they are one),
        # and is still found in the model by id or name.
        reply = await self._run(interaction, "impersonate", f"<@{person.id}|{person.name}> {prompt or ''}")
        await self.deliver(interaction, reply, person)

    async def deliver(self, interaction: discord.Interaction, reply: Reply, person: discord.abc.User) -> None:
        if reply.private:
            await interaction.followup.send(reply.text, ephemeral=True, allowed_mentions=NO_PINGS)
            return
        if reply.person_id in (None, str(person.id)):  # the member as they look here, now
            name, avatar = discord_username(person.display_name + self.marker), person.display_avatar.url
        else:
            name, avatar = discord_username(reply.as_name or person.display_name), reply.as_icon
        if await self._post_as(interaction.channel, reply.text, name, avatar):
            done = f"Posted as {name}."
        else:  # no webhook here: a plain bot message that says whose voice it is
            header = f"Mimic, writing as **{discord.utils.escape_markdown(person.display_name)}**:\n"
            try:
                await interaction.channel.send((header + reply.text)[:DISCORD_MAX_CHARS], allowed_mentions=NO_PINGS)
                done = "Posted as a plain bot message (I need Manage Webhooks here to post under their name)."
            except discord.Forbidden:
                done = "I can't post in this channel."
            except discord.HTTPException as exc:
                log.warning("plain post in channel %s refused (HTTP %s, code %s: %s)", interaction.channel_id,
                            exc.status, exc.code, exc.text)
                done = "Discord refused the post; it has been logged."
        await interaction.edit_original_response(content=done, allowed_mentions=NO_PINGS)

    async def _post_as(self, channel: Any, text: str, name: str, avatar: str | None) -> bool:
        """Post through the channel's webhook under `name`; False when there is no usable webhook."""
        webhook = await self.bot.webhooks.get(channel)
        if webhook is None:
            return False
        thread = channel if isinstance(channel, discord.Thread) else discord.utils.MISSING
        try:
            await webhook.send(text[:DISCORD_MAX_CHARS], username=name, avatar_url=avatar, allowed_mentions=NO_PINGS,
                               thread=thread)
            return True
        except (discord.Forbidden, discord.NotFound):  # deleted, or the permission withdrawn, since cached
            self.bot.webhooks.drop(channel)
            return False
        except discord.HTTPException as exc:  # e.g. 400/50035: a name or content Discord refuses; the hook is fine
            log.warning("webhook post in channel %s refused (HTTP %s, code %s: %s); posting as a plain bot message",
                        channel.id, exc.status, exc.code, exc.text)
            return False

    async def _private(self, interaction: discord.Interaction, command: str, args: str = "") -> None:
        reply = await self._run(interaction, command, args)
        await interaction.followup.send(reply.text, ephemeral=True, allowed_mentions=NO_PINGS)

    @mimic.command(name="who", description="Who Mimic can write as")
    async def who(self, interaction: discord.Interaction) -> None:
        await self._private(interaction, "who")

    @mimic.command(name="help", description="What Mimic can do")
    async def help(self, interaction: discord.Interaction) -> None:
        await self._private(interaction, "help")

    @mimic.command(name="optout", description="Never impersonate me or learn from my messages")
    async def optout(self, interaction: discord.Interaction) -> None:
        await self._private(interaction, "optout")

    @mimic.command(name="optin", description="Undo optout")
    async def optin(self, interaction: discord.Interaction) -> None:
        await self._private(interaction, "optin")

    @mimic.command(name="forget", description="(admin) Delete everything stored about someone")
    @app_commands.describe(person="their name, or a mention")
    async def forget(self, interaction: discord.Interaction, person: str) -> None:
        await self._private(interaction, "forget", person)

    @mimic.command(name="retrain", description="(admin) Retrain the model now")
    async def retrain(self, interaction: discord.Interaction) -> None:
        await self._private(interaction, "retrain")

    async def cog_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        log.error("slash command failed", exc_info=error)
        send = interaction.followup.send if interaction.response.is_done() else interaction.response.send_message
        with contextlib.suppress(discord.HTTPException):  # the interaction may have expired meanwhile
            await send("sorry, something went wrong on my side; it has been logged.", ephemeral=True,
                       allowed_mentions=NO_PINGS)


class CaptureCog(ext.Cog):
    """Live capture: each event becomes plain data for bot/capture.py, stored off the event loop."""

    def __init__(self, capture: Capture):
        self.capture = capture

    async def _store(self, message: discord.Message) -> None:
        guild = message.guild
        outcome = await asyncio.to_thread(self.capture.discord_message, dce_message(message),
                                          channel=channel_record(message.channel), guild_name=guild.name if guild else None)
        log.debug("captured discord message in %s: %s", message.channel.id, outcome)

    @ext.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        await self._store(message)

    @ext.Cog.listener()
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        await self._store(payload.message)  # raw: covers messages older than the cache

    @ext.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await asyncio.to_thread(self.capture.discord_delete, str(payload.channel_id), str(payload.message_id))

    @ext.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        """Purges and bans that delete messages arrive only as one bulk event, never as single deletes."""
        channel_id = str(payload.channel_id)

        def delete_all() -> None:
            for message_id in sorted(payload.message_ids):
                self.capture.discord_delete(channel_id, str(message_id))

        await asyncio.to_thread(delete_all)

    @ext.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        await asyncio.to_thread(self.capture.discord_channel_deleted, str(payload.thread_id))

    @ext.Cog.listener()
    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        await asyncio.to_thread(self.capture.discord_channel_deleted, str(channel.id))


class MimicDiscordBot(ext.Bot):
    """Wires the cogs to Mimic's parts; owns the aiohttp session its webhooks post through."""

    def __init__(self, *, settings: Settings, commands: Commands, capture: Capture | None = None,
                 sync_global: bool = False, session: aiohttp.ClientSession | None = None):
        intents = discord.Intents.default()
        intents.message_content = capture is not None  # privileged: enable it in the developer portal
        super().__init__(command_prefix=ext.when_mentioned, intents=intents, allowed_mentions=NO_PINGS,
                         help_command=None)
        self.settings = settings
        self.mimic = commands
        self.capture = capture
        self.sync_global = sync_global
        self._session = session
        self._owns_session = session is None
        self.webhooks: WebhookCache | None = None

    async def login(self, token: str) -> None:
        """discord.py's login (then setup_hook), failing in one line that names it, as `mimic history discord`
        does: a bare resolver error ("Name or service not known") does not say that Discord was being reached."""
        try:
            await super().login(token)
        except discord.LoginFailure as exc:
            raise ConfigError("Discord refused the bot token (HTTP 401 Unauthorized); check DISCORD_TOKEN") from exc
        except (aiohttp.ClientError, OSError) as exc:  # no network, DNS, TLS, a timeout (TimeoutError is one)
            raise ConnectError(f"Discord login: cannot connect ({exc or type(exc).__name__})") from exc

    async def setup_hook(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self.webhooks = WebhookCache(self, self._session, self.settings.discord.webhook_name)
        await self.add_cog(ImpersonateCog(self, self.mimic, self.settings.posting.marker))
        if self.capture is not None:
            await self.add_cog(CaptureCog(self.capture))
        if self.settings.discord.dev_guild_id:
            guild = discord.Object(id=int(self.settings.discord.dev_guild_id))
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("discord: %d slash commands synced to guild %s", len(synced), guild.id)
        elif self.sync_global:
            synced = await self.tree.sync()
            log.info("discord: %d slash commands synced globally (visible within an hour)", len(synced))

    async def close(self) -> None:
        await super().close()
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
