"""Live capture: messages, edits and deletions from the running bots, stored as the importers store them.

Adapters hand plain dicts here (a Slack event as it arrives; a Discord message turned into the
DiscordChatExporter shape by training/discord_objects.py), never SDK objects. The text and the stored row come
from the importers' own converters (training/ingest_slack.py `SlackConverter`, training/ingest_discord.py),
so a message captured live and the same message imported later from an export give identical rows.

`StoreAccess` is also the bot's small adapter over training/store.py: one SQLite connection per thread
(a Store must not be shared between threads, and Bolt's and asyncio's worker threads are long-lived), plus
the few person-level operations the command layer needs (by platform id, consent, forget).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.config import ChannelRules
from training import normalize
from training.ingest_batch import IngestReport
from training.store import ChannelRecord, Store, UserRecord

log = logging.getLogger(__name__)

SLACK = "slack"
DISCORD = "discord"
# Slack's `channel_type` on message events -> the store's channel kind.
SLACK_CHANNEL_KINDS = {"channel": "public", "group": "private", "im": "dm", "mpim": "mpim"}
_SLACK_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_MAX_FETCHED = 5  # users.info calls per message at most: a message naming fifty people is not worth fifty calls


class StoreAccess:
    """The message store for a long-running, multi-threaded bot: one connection per thread, opened lazily."""

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        self.create = create
        self._local = threading.local()

    def store(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = Store.open(self.path, create=self.create)
        return store

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        store = getattr(self._local, "store", None)
        if store is not None:
            store.close()
            self._local.store = None

    # ---- people: what training/store.py lacks as one call -----------------------------------------

    def person_by_id(self, platform: str, platform_id: str) -> UserRecord | None:
        return self.store().user_by_platform_id(platform, platform_id)

    def person_of(self, user: UserRecord) -> UserRecord:
        """The person an account belongs to: its first account when linked (whose speaker name the model
        knows them by), else the account itself."""
        return self.store().person_of(user.platform, user.platform_id) or user

    def speaker_of(self, platform: str, platform_id: str) -> str | None:
        return self.store().speaker_of(platform, platform_id)

    def find_person(self, name: str) -> UserRecord | None:
        """Speaker name, platform id, handle, display or real name (UnknownUserError when ambiguous)."""
        return self.store().find_user(name)

    def user_names(self, platform: str) -> dict[str, str]:
        """Platform user id -> speaker name, for rendering mentions in posted text."""
        return self.store().speaker_names(platform)

    def set_opted_out(self, platform: str, platform_id: str, opted_out: bool, *,
                      handle: str | None = None, display_name: str | None = None) -> UserRecord:
        """Opt one person in or out by platform id, recording them first if the store has never seen them
        (an opt-out must hold before their first message is captured). Store lacks: set_opted_out by id."""
        store = self.store()
        with store.transaction():
            user = store.user_by_platform_id(platform, platform_id)
            if user is None:
                store.upsert_users([UserRecord(platform, platform_id, handle=handle, display_name=display_name)])
                user = store.user_by_platform_id(platform, platform_id)
            assert user is not None
            if user.forgotten:  # a tombstone is opted out for good; `forget` is not undone by `optin`
                return user
            return store.set_opted_out(user.speaker or platform_id, opted_out)

    def forget(self, speaker: str) -> tuple[int, list[str]]:
        """Forget a person, every linked account of theirs: (messages deleted, the speaker names they had, for
        the voice memories)."""
        store = self.store()
        names = store.learned_names(speaker)
        return store.forget(speaker), names

    def conversation(self, platform: str, channel_id: str, lines: int) -> list[tuple[str, str]]:
        """The channel's recent messages (speaker, text), oldest first, to prime an impersonation with."""
        return self.store().recent_messages(platform, channel_id, lines)


def _slack_user_is_bot(store: Store, user_id: Any) -> bool:
    if not isinstance(user_id, str):
        return False
    user = store.user_by_platform_id(SLACK, user_id)
    return bool(user and user.is_bot)


class Capture:
    """Stores what people say in the channels Mimic may learn from (`learn_channels` per platform)."""

    def __init__(self, stores: StoreAccess, slack_rules: ChannelRules | None = None,
                 discord_rules: ChannelRules | None = None):
        self.stores = stores
        self.rules = {SLACK: slack_rules or ChannelRules(()), DISCORD: discord_rules or ChannelRules(())}

    def allowed(self, platform: str, channel_id: str, name: str | None, kind: str) -> bool:
        return self.rules[platform].allows(channel_id, name, kind)

    def _channel(self, store: Store, record: ChannelRecord) -> None:
        """Record the channel once; a later real name replaces a placeholder (the id)."""
        known = store.channel(record.platform, record.platform_id)
        if known is None or (record.name != record.platform_id and (record.name, record.kind) != (known.name, known.kind)):
            store.upsert_channel(record)

    # ---- Slack ------------------------------------------------------------------------------------------

    def slack_event(self, event: dict[str, Any], *, channel_kind: str, channel_name: str | None = None,
                    workspace_id: str | None = None,
                    fetch_user: Callable[[str], dict[str, Any] | None] | None = None) -> str:
        """One Slack `message` event (new, `message_changed`, `message_deleted`). Returns what happened, for
        logs and tests: "stored", "deleted", "not stored" or "skipped: <reason>"."""
        from training.ingest_slack import SlackConverter

        channel_id = event.get("channel")
        if not isinstance(channel_id, str):
            return "skipped: no channel"
        store = self.stores.store()
        workspace = workspace_id or "live"
        converter = SlackConverter(store, IngestReport(), workspace_id=workspace)
        message = event.get("message") if event.get("subtype") == "message_changed" else event
        deleted = converter.deleted_ts(event) or converter.deleted_ts(message)
        if deleted is not None:  # in any channel: what was learned before the rules changed goes too
            return "deleted" if store.delete_message(SLACK, channel_id, deleted) else "not stored"
        if not self.allowed(SLACK, channel_id, channel_name, channel_kind):
            return "skipped: not a learn channel"
        if not isinstance(message, dict):
            return "skipped: not a message"
        user_id = message.get("user")
        if isinstance(user_id, str) and not message.get("bot_id"):
            if fetch_user is not None:
                # The author and anyone mentioned, so `<@U1>` reads "@ada" as it does after an export import.
                mentioned = _SLACK_MENTION.findall(message.get("text") or "")[:_MAX_FETCHED]
                unknown = [u for u in dict.fromkeys([user_id, *mentioned]) if store.user_by_platform_id(SLACK, u) is None]
                members = [m for m in map(fetch_user, unknown) if m is not None]  # users.info: users.json's shape
                if members:
                    converter.add_users(members)
            if _slack_user_is_bot(store, user_id):
                converter.bots.add(user_id)
        record = converter.record(message, channel_id, "live")
        if record is None:
            return f"skipped: {converter.last_skip}"
        with store.transaction():
            self._channel(store, ChannelRecord(SLACK, channel_id, channel_name or channel_id, workspace, channel_kind))
            store.upsert_messages([record])
        return "stored"

    # ---- Discord ----------------------------------------------------------------------------------------

    def discord_message(self, message: dict[str, Any], *, channel: ChannelRecord, guild_name: str | None = None) -> str:
        """A new or edited Discord message in DiscordChatExporter's JSON shape (the importer's input)."""
        if not self.allowed(DISCORD, channel.platform_id, channel.name, channel.kind):
            return "skipped: not a learn channel"
        reason = normalize.discord_skip_reason(message)
        if reason is not None:
            return f"skipped: {reason}"
        store = self.stores.store()
        record = _discord_record(store, message, channel, guild_name)
        if record is None:
            return "skipped: empty"
        with store.transaction():
            self._channel(store, channel)
            store.upsert_messages([record])
        return "stored"

    def discord_delete(self, channel_id: str, message_id: str) -> str:
        store = self.stores.store()
        return "deleted" if store.delete_message(DISCORD, channel_id, message_id) else "not stored"

    def slack_channel_deleted(self, channel_id: str) -> int:
        """A Slack channel deleted: its messages leave the store, as deleted messages do."""
        return self.stores.store().delete_channel(SLACK, channel_id)

    def discord_channel_deleted(self, channel_id: str) -> int:
        """A channel or thread deleted on Discord: its messages leave the store too, as deleted messages do."""
        return self.stores.store().delete_channel(DISCORD, channel_id)


def _discord_record(store: Store, message: dict[str, Any], channel: ChannelRecord, guild_name: str | None):
    """The importer's own conversion of one message, so a live row equals the row an export would give."""
    from training.ingest_discord import ChannelHeader, DiscordConverter

    guild_id = channel.workspace_id or "0"
    if guild_id != "0":
        store.upsert_workspace(DISCORD, guild_id, guild_name)
    converter = DiscordConverter(store, IngestReport(), store.channel_names(DISCORD), include_bots=False)
    converter.channels.setdefault(channel.platform_id, channel.name)
    header = ChannelHeader(Path("live"), guild_id, guild_name, channel)
    return converter.record(message, header)
