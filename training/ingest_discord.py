"""Import DiscordChatExporter JSON exports (one file per channel, thread or DM) into the store.

File shape (chat-formats.md §2): `{guild, channel, dateRange, exportedAt?, messages: [...], messageCount}`.
Files can be gigabytes, so each is read with `JsonReader`: the small header values whole, then `messages`
one element at a time. A first pass reads only the headers of every file, so a raw `<#id>` mention can
name a channel exported in another file.

Only `Default` and `Reply` messages are kept, bots are skipped unless `include_bots`, DMs and group DMs
(guild id "0") and private threads are skipped unless `include_private`. Message ids repeat when exports
overlap; the store keys messages by (channel, id), so each is stored once. A file that turns out to be
broken halfway keeps the batches read before the break (a warning names it) and the next file is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from training import normalize
from training.errors import BadExportError, BadInputError
from training.ingest_batch import BatchWriter, IngestProgress, IngestReport, ProgressFn
from training.json_stream import JsonReader
from training.store import ChannelRecord, MessageRecord, Store, UserRecord

PLATFORM = "discord"
MAX_TEXT_CHARS = 100_000  # Discord allows 4,000; anything far beyond is not a chat message
_DM_GUILD = "0"
_KINDS = {
    "DirectTextChat": "dm",
    "DirectGroupTextChat": "mpim",
    "GuildPrivateThread": "private",
    "GuildPublicThread": "thread",
    "GuildNewsThread": "thread",
}


@dataclass(frozen=True)
class ChannelHeader:
    """Where messages come from: an export file (or, for live capture, any label) and its channel."""

    path: Path
    guild_id: str
    guild_name: str | None
    channel: ChannelRecord


def _read_header(path: Path) -> ChannelHeader:
    """The guild and channel of one export file, reading no further than the start of `messages`."""
    head: dict[str, Any] = {}
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fp:
            reader = JsonReader(fp, name=path.name)
            if reader.peek() != "{":
                raise BadExportError(f"{path}: not a DiscordChatExporter JSON export (no top-level object)")
            for key in reader.iter_object():
                if key == "messages":
                    break
                head[key] = reader.read_value()
    except json.JSONDecodeError as exc:
        raise BadExportError(f"{path}: not valid JSON ({exc.msg})") from exc
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read it ({exc.strerror})") from exc
    guild, channel = head.get("guild"), head.get("channel")
    if not isinstance(channel, dict) or not isinstance(channel.get("id"), str) or not isinstance(guild, dict):
        raise BadExportError(f"{path}: no guild/channel before messages; is this a DiscordChatExporter export?")
    guild_id = guild.get("id") if isinstance(guild.get("id"), str) else _DM_GUILD
    kind = _KINDS.get(channel.get("type"), "dm" if guild_id == _DM_GUILD else "public")
    name = channel.get("name") if isinstance(channel.get("name"), str) and channel["name"] else channel["id"]
    record = ChannelRecord(PLATFORM, channel["id"], normalize.clean_text(name) or channel["id"], guild_id, kind)
    guild_name = guild.get("name") if isinstance(guild.get("name"), str) else None
    return ChannelHeader(path, guild_id, guild_name, record)


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def discord_user(author: dict[str, Any], guild_id: str) -> UserRecord:
    avatar = author.get("avatarUrl")
    return UserRecord(
        platform=PLATFORM,
        platform_id=author["id"],
        handle=normalize.clean_text(author.get("name") or "") or None,
        display_name=normalize.clean_text(author.get("nickname") or "") or None,
        avatar_url=avatar if isinstance(avatar, str) else None,
        is_bot=bool(author.get("isBot")),
        workspace_id=guild_id,
    )


class DiscordConverter:
    """DCE-shaped messages -> store records, creating authors as they appear. Public so live capture
    (bot/capture.py) converts exactly as the importer does."""

    def __init__(self, store: Store, report: IngestReport, channels: dict[str, str], include_bots: bool) -> None:
        self.store = store
        self.report = report
        self.channels = channels
        self.include_bots = include_bots
        self.speakers = store.speaker_names(PLATFORM)
        self.mentioned: dict[str, str] = {}  # user id -> speaker-safe name, for people who never posted
        self.roles: dict[str, str] = {}
        self._authors_seen: set[str] = set()

    def _user_name(self, user_id: str) -> str | None:
        return self.speakers.get(user_id) or self.mentioned.get(user_id)

    def _learn_names(self, message: dict[str, Any], guild_id: str) -> None:
        author = message["author"]
        if author["id"] not in self._authors_seen:
            self._authors_seen.add(author["id"])
            self.report.add_collisions(self.store.upsert_users([discord_user(author, guild_id)]))
            speaker = self.store.speaker_of(PLATFORM, author["id"])  # a linked account reads as its person
            if speaker is not None:
                self.speakers[author["id"]] = speaker
        for role in author.get("roles") or ():
            if isinstance(role, dict) and isinstance(role.get("id"), str) and isinstance(role.get("name"), str):
                self.roles[role["id"]] = role["name"]
        for user in message.get("mentions") or ():
            if isinstance(user, dict) and isinstance(user.get("id"), str) and user.get("name"):
                self.mentioned.setdefault(user["id"], normalize.canonical_speaker_name(str(user["name"])))

    def record(self, message: Any, header: ChannelHeader) -> MessageRecord | None:
        """The store record for one message, or None (the reason is counted in the report)."""
        reason = normalize.discord_skip_reason(message, include_bots=self.include_bots)
        created = _timestamp(message.get("timestamp")) if reason is None else None
        if reason is None and created is None:
            reason = "bad timestamp"
        if reason is None and len(message["content"]) > MAX_TEXT_CHARS:
            reason = "too long"
            self.report.warn(f"{header.path}: message {message['id']} has {len(message['content'])} characters")
        if reason is not None:
            self.report.skipped[reason] += 1
            return None
        self._learn_names(message, header.guild_id)
        text = normalize.discord_text(message["content"], self._user_name, self.channels, self.roles)
        if not normalize.is_learnable_text(text):
            self.report.skipped["empty"] += 1
            return None
        reference = message.get("reference")
        parent = reference.get("messageId") if isinstance(reference, dict) else None
        return MessageRecord(
            platform=PLATFORM,
            channel_id=header.channel.platform_id,
            message_id=message["id"],
            user_id=message["author"]["id"],
            text=text,
            created=created,  # type: ignore[arg-type]  # checked above
            thread_parent=parent if isinstance(parent, str) else None,
            edited=_timestamp(message.get("timestampEdited")),
        )


def _export_files(paths: list[Path]) -> list[Path]:
    """The JSON files named, and those inside named folders (not DCE's `*.json_Files` media folders)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.json") if p.is_file() and ".json_Files" not in str(p))
        elif path.is_file():
            files.append(path)
        else:
            raise BadInputError(f"{path}: no such file or folder")
    return files


def _messages(header: ChannelHeader, errors: str) -> Iterator[Any]:
    with open(header.path, encoding="utf-8-sig", errors=errors) as fp:
        reader = JsonReader(fp, name=header.path.name)
        for key in reader.iter_object():
            if key == "messages":
                yield from reader.iter_array()
                return
            reader.read_value()


def ingest_discord_exports(
    paths: list[str | Path],
    store: Store,
    *,
    include_bots: bool = False,
    include_private: bool = False,
    progress: ProgressFn | None = None,
    report: IngestReport | None = None,
) -> IngestReport:
    """Import DiscordChatExporter JSON files (or folders of them)."""
    report = report if report is not None else IngestReport()
    headers = [_read_header(p) for p in _export_files([Path(p) for p in paths])]
    channels = store.channel_names(PLATFORM)
    channels.update({h.channel.platform_id: h.channel.name for h in headers})
    converter = DiscordConverter(store, report, channels, include_bots)
    writer = BatchWriter(store, report)
    for done, header in enumerate(headers, 1):
        if header.channel.kind in ("dm", "mpim", "private") and not include_private:
            report.skipped["private conversation"] += 1
        else:
            store.upsert_workspace(PLATFORM, header.guild_id, header.guild_name)
            store.upsert_channel(header.channel)
            _ingest_file(header, converter, writer)
            report.files += 1
        if progress is not None:
            progress(IngestProgress(str(header.path), done, len(headers), report.stored))
    writer.flush()
    return report


def _ingest_file(header: ChannelHeader, converter: DiscordConverter, writer: BatchWriter) -> None:
    report = writer.report
    for errors in ("strict", "replace"):
        try:
            for message in _messages(header, errors):
                record = converter.record(message, header)
                if record is not None:
                    writer.add([record])
            return
        except UnicodeDecodeError:
            # Read it again from the start; messages already written are upserted again, harmlessly.
            report.warn(f"{header.path}: not valid UTF-8; undecodable bytes replaced")
        except json.JSONDecodeError as exc:
            writer.flush()
            report.warn(f"{header.path}: not valid JSON ({exc.msg}); kept the messages before the error")
            return

