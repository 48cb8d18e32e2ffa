"""discord.py objects in the shapes the Discord importer reads: a message as DiscordChatExporter writes it, a
channel as the store records it.

Live capture (bot/discord_adapter.py) and the history fetch (training/history_discord.py) both turn what
discord.py gives them into these plain shapes and hand them to training/ingest_discord.py's converter, so a
message captured live, fetched later through the API, or imported from an export is stored as the same row.
"""

from __future__ import annotations

from typing import Any

import discord

from training.ingest_discord import PLATFORM
from training.store import ChannelRecord

_RECORD_KINDS = {  # the kinds training/ingest_discord.py gives DiscordChatExporter's channel types
    discord.ChannelType.private: "dm",
    discord.ChannelType.group: "mpim",
    discord.ChannelType.private_thread: "private",
    discord.ChannelType.public_thread: "thread",
    discord.ChannelType.news_thread: "thread",
}
_DCE_TYPES = {discord.MessageType.default: "Default", discord.MessageType.reply: "Reply"}


def channel_kind(channel: Any) -> str:
    """public | thread | private | dm | mpim; a guild channel hidden from @everyone is private."""
    if channel is None:
        return "unknown"
    kind = _RECORD_KINDS.get(getattr(channel, "type", None))
    if kind is not None:
        return kind
    guild = getattr(channel, "guild", None)
    everyone = discord.Object(id=guild.id) if guild is not None else None  # @everyone's role id is the guild's
    if everyone is not None and hasattr(channel, "overwrites_for") and \
            channel.overwrites_for(everyone).view_channel is False:
        return "private"
    return "public"


def channel_record(channel: Any) -> ChannelRecord:
    guild = getattr(channel, "guild", None)
    name = getattr(channel, "name", None) or str(channel.id)
    return ChannelRecord(PLATFORM, str(channel.id), name, str(guild.id) if guild else "0", channel_kind(channel))


def dce_message(message: discord.Message, author: discord.abc.User | None = None) -> dict[str, Any]:
    """A message in DiscordChatExporter's JSON shape, the input training/ingest_discord.py converts.

    `author` stands in for `message.author`: a message read through the REST API names its author as a plain
    user, so the history fetch passes the guild member (nickname, roles) a live message would carry."""
    author = author or message.author
    roles = [r for r in getattr(author, "roles", [])[1:]] + list(message.role_mentions)
    ref = message.reference
    return {
        "id": str(message.id),
        "type": _DCE_TYPES.get(message.type, message.type.name),
        "timestamp": message.created_at.isoformat(),
        "timestampEdited": message.edited_at.isoformat() if message.edited_at else None,
        "content": message.content,
        "author": {
            "id": str(author.id),
            "name": author.name,
            "nickname": author.display_name,
            "isBot": author.bot or message.webhook_id is not None,  # our own webhook posts come back as these
            "avatarUrl": author.display_avatar.url,
            # The importer learns role names from here; mentioned roles are added so `<@&id>` reads as a name.
            "roles": [{"id": str(r.id), "name": r.name} for r in roles],
        },
        "mentions": [{"id": str(u.id), "name": u.name, "nickname": u.display_name} for u in message.mentions],
        "reference": {"messageId": str(ref.message_id)} if ref is not None and ref.message_id else None,
    }
