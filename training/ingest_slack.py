"""Import an official Slack workspace export (the zip, or the unzipped folder) into the store.

Layout (chat-formats.md §1): `users.json`, `channels.json` (and `groups.json`, `dms.json`, `mpims.json`
when present) at the root, one folder per conversation, one `YYYY-MM-DD.json` array per day. Day files are
streamed one at a time and each is written only if it parses completely; a broken one is skipped with a
warning naming it. Private channels, DMs and group DMs are skipped unless `include_private` is set.

`SlackConverter` turns Slack users and messages into store records; the Web API fetcher
(training/history_slack.py) uses it too, so both paths store identical rows.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from training import normalize
from training.errors import BadExportError
from training.ingest_batch import BatchWriter, IngestProgress, IngestReport, ProgressFn
from training.json_stream import JsonReader
from training.store import ChannelRecord, MessageRecord, Store, UserRecord

PLATFORM = "slack"
# A message longer than this is not chat (Slack itself truncates text at 40,000 characters).
MAX_TEXT_CHARS = 100_000
_DAY_FILE = re.compile(r"^(?P<folder>[^/]+)/(?P<day>\d{4}-\d{2}-\d{2})\.json$")
# Conversation lists and the kind of conversation each holds; only "public" is read by default.
_CONVERSATION_LISTS = (
    ("channels.json", "public"),
    ("groups.json", "private"),
    ("mpims.json", "mpim"),
    ("dms.json", "dm"),
)
_UNKNOWN_SHAPES = frozenset({"not a message", "no ts", "bad ts"})
# Enterprise Grid exports list people in org_users.json instead of users.json (§1.1).
_USER_LISTS = ("users.json", "org_users.json")


def _clean_name(value: Any) -> str | None:
    return normalize.clean_text(value) or None if isinstance(value, str) else None


def slack_user(member: dict[str, Any], workspace_id: str | None) -> UserRecord | None:
    """A users.json / users.list member as a store user; None when it has no id."""
    if not isinstance(member, dict) or not isinstance(member.get("id"), str) or not member["id"]:
        return None
    profile = member.get("profile") if isinstance(member.get("profile"), dict) else {}
    avatar = next((profile[k] for k in ("image_192", "image_72", "image_512") if profile.get(k)), None)
    return UserRecord(
        platform=PLATFORM,
        platform_id=member["id"],
        handle=_clean_name(member.get("name")),
        display_name=_clean_name(profile.get("display_name")),
        real_name=_clean_name(profile.get("real_name")) or _clean_name(member.get("real_name")),
        avatar_url=avatar if isinstance(avatar, str) else None,
        is_bot=bool(member.get("is_bot") or profile.get("bot_id") or member["id"] == normalize.SLACKBOT_ID),
        workspace_id=member.get("team_id") if isinstance(member.get("team_id"), str) else workspace_id,
    )


def _parse_ts(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class SlackConverter:
    """Slack users and messages -> store records, creating users the export forgot (§1.2)."""

    def __init__(
        self, store: Store, report: IngestReport, *, workspace_id: str, include_bots: bool = False,
        lookup_user: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> None:
        self.store = store
        # users.info, where there is an API: authors users.list leaves out (Slack Connect) get their names
        self.lookup_user = lookup_user
        self._looked_up: set[str] = set()
        self.report = report
        self.workspace_id = workspace_id
        self.include_bots = include_bots
        self.speakers: dict[str, str] = store.speaker_names(PLATFORM)  # user id -> speaker, for mentions
        self.bots: set[str] = set()
        self.channels: dict[str, str] = store.channel_names(PLATFORM)  # channel id -> name
        self._listed: set[str] = set()  # users named by users.json / users.list in this run
        # Authors missing from users.json: the ts and record of the profile we stored for them.
        self._profiles: dict[str, tuple[float, UserRecord]] = {}
        self.last_skip: str | None = None  # why the last `record` call returned None

    def add_users(self, members: Iterable[dict[str, Any]]) -> int:
        """Store users.json members; returns how many."""
        records = []
        for member in members:
            record = slack_user(member, self.workspace_id)
            if record is None:
                self.report.skipped["user without id"] += 1
                continue
            records.append(record)
            self._listed.add(record.platform_id)
            if record.is_bot:
                self.bots.add(record.platform_id)
        self.report.add_collisions(self.store.upsert_users(records))
        self.speakers = self.store.speaker_names(PLATFORM)
        return len(records)

    def _ensure_author(self, user_id: str, message: dict[str, Any], created: float, is_bot: bool) -> None:
        """An author users.json does not list: store them from the message's `user_profile` (a newer
        profile refreshes their names; the speaker name stays), else from the bare id."""
        if user_id in self._listed:
            return
        if (self.lookup_user is not None and user_id not in self._looked_up
                and not isinstance(message.get("user_profile"), dict)):
            self._looked_up.add(user_id)
            member = self.lookup_user(user_id)
            if member is not None and self.add_users([member]):
                return
        profile = message.get("user_profile") if isinstance(message.get("user_profile"), dict) else {}
        bot_profile = message.get("bot_profile") if isinstance(message.get("bot_profile"), dict) else {}
        record = UserRecord(
            platform=PLATFORM,
            platform_id=user_id,
            # A bot's `username` can change per message (Mimic posts as the person it imitates): last.
            handle=_clean_name(profile.get("name"))
            or _clean_name(bot_profile.get("name"))
            or _clean_name(message.get("username") if is_bot else None),
            display_name=_clean_name(profile.get("display_name")),
            real_name=_clean_name(profile.get("real_name")),
            avatar_url=profile.get("image_72") if isinstance(profile.get("image_72"), str) else None,
            is_bot=is_bot,
            workspace_id=self.workspace_id,
        )
        seen = self._profiles.get(user_id)
        if seen is None and user_id in self.speakers:
            self._profiles[user_id] = (float("inf"), record)  # stored by an earlier run: leave it be
            return
        if seen is not None and (created <= seen[0] or record == seen[1] or not profile):
            return
        self._profiles[user_id] = (created, record)
        self.report.add_collisions(self.store.upsert_users([record]))
        if user_id not in self.speakers:
            self.speakers[user_id] = self.store.speaker_of(PLATFORM, user_id) or user_id

    def deleted_ts(self, message: Any) -> str | None:
        """The ts of a message the source marks as deleted (a thread tombstone, a message_deleted event)."""
        if not isinstance(message, dict):
            return None
        if message.get("subtype") == "tombstone" and isinstance(message.get("ts"), str):
            return message["ts"]
        if message.get("subtype") == "message_deleted" and isinstance(message.get("deleted_ts"), str):
            return message["deleted_ts"]
        return None

    def record(self, message: Any, channel_id: str, where: str) -> MessageRecord | None:
        """The store record for a day-file / API message, or None; the reason goes to the report and to
        `last_skip`."""
        self.last_skip = self._skip_reason(message)
        if self.last_skip is not None:
            self.report.skipped[self.last_skip] += 1
            if self.last_skip == "too long":
                self.report.warn(f"{where}: message {message['ts']} has {len(message['text'])} characters; skipped")
            return None
        created = float(message["ts"])
        author = message.get("user")
        is_bot = bool(message.get("bot_id")) or message.get("subtype") == "bot_message" or author in self.bots
        user_id = author if isinstance(author, str) and author else message["bot_id"]
        self._ensure_author(user_id, message, created, is_bot)
        text = normalize.slack_text(message["text"], self.speakers, self.channels)
        if not normalize.is_learnable_text(text):
            self.last_skip = "empty"
            self.report.skipped["empty"] += 1
            return None
        thread_ts = message.get("thread_ts")
        edited = message.get("edited")
        return MessageRecord(
            platform=PLATFORM,
            channel_id=channel_id,
            message_id=message["ts"],
            user_id=user_id,
            text=text,
            created=created,
            thread_parent=thread_ts if isinstance(thread_ts, str) and thread_ts != message["ts"] else None,
            edited=_parse_ts(edited.get("ts")) if isinstance(edited, dict) else None,
        )

    def _skip_reason(self, message: Any) -> str | None:
        author = message.get("user") if isinstance(message, dict) else None
        author = author if isinstance(author, str) else None
        reason = normalize.slack_skip_reason(
            message, author_is_bot=author in self.bots, include_bots=self.include_bots
        )
        if reason is not None:
            return reason
        if _parse_ts(message["ts"]) is None:
            return "bad ts"
        if len(message["text"]) > MAX_TEXT_CHARS:
            return "too long"
        return None


# ---- the export as a set of files ------------------------------------------------------------------


class _ExportFiles:
    """A Slack export's files, from a zip or a folder, named by posix paths relative to the export root."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            names = [
                p.relative_to(path).as_posix()
                for p in sorted(path.rglob("*.json"))
                if p.is_file() and len(p.relative_to(path).parts) <= 3
            ]
        else:
            self._zip = _open_zip(path)
            names = [i.filename for i in self._zip.infolist() if not i.is_dir()]
        self.root = _export_root(names)
        self.names = sorted(n[len(self.root) :] for n in names if n.startswith(self.root))

    def open_text(self, name: str, errors: str = "strict") -> TextIO:
        if self._zip is not None:
            try:
                raw = self._zip.open(self.root + name)
            except (NotImplementedError, RuntimeError) as exc:  # deflate64 or bzip2 from some tools, encryption
                raise BadExportError(f"{self.path}: cannot read {name} ({exc}); unzip it and import the folder") from exc
            return io.TextIOWrapper(raw, encoding="utf-8-sig", errors=errors)
        return open(self.path / (self.root + name), encoding="utf-8-sig", errors=errors)  # noqa: SIM115

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BadExportError(f"{path}: not a readable zip file (truncated or corrupt?): {exc}") from exc
    for name in archive.namelist():
        parts = re.split(r"[/\\]", name)
        if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
            archive.close()
            raise BadExportError(f"{path}: unsafe path {name!r} in the zip; refusing to read it")
    return archive


def _export_root(names: list[str]) -> str:
    """'' when users.json/channels.json sit at the top, or 'folder/' when the export was zipped in one."""
    roots = sorted(
        (n.count("/"), n.rsplit("/", 1)[0] + "/" if "/" in n else "")
        for n in names
        if n.rsplit("/", 1)[-1] in (*_USER_LISTS, "channels.json")
    )
    return roots[0][1] if roots else ""


# ---- importing -------------------------------------------------------------------------------------


class _BrokenFile(Exception):
    """A file of the export that is not a complete JSON array; the message names it."""


def _json_array(files: _ExportFiles, name: str, errors: str) -> Iterator[Any]:
    try:
        with files.open_text(name, errors) as fp:
            reader = JsonReader(fp, name=name)
            if reader.peek() != "[":
                raise _BrokenFile(f"{files.path}: {name} is not a JSON array")
            yield from reader.iter_array()
    except json.JSONDecodeError as exc:
        raise _BrokenFile(f"{files.path}: {name} is not valid JSON ({exc.msg})") from exc
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise BadExportError(f"{files.path}: {name} cannot be read from the zip ({exc})") from exc


def _stream_list(files: _ExportFiles, name: str, report: IngestReport) -> Iterator[Any]:
    """Stream users.json / channels.json... A broken file is reported, not fatal; on bad UTF-8 the file is
    read again with replacement characters (entries already yielded come again: upserts do not mind)."""
    try:
        try:
            yield from _json_array(files, name, "strict")
        except UnicodeDecodeError:
            report.warn(f"{files.path}: {name} is not valid UTF-8; undecodable bytes replaced")
            yield from _json_array(files, name, "replace")
    except _BrokenFile as exc:
        report.warn(f"{exc}; skipped the rest of it")


@dataclass
class _Day:
    """What one day file holds, converted; written only once the whole file has parsed."""

    records: list[MessageRecord] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # ts of messages the file marks as deleted
    unknown: int = 0  # records of a shape we do not know


def _read_day_file(
    files: _ExportFiles, name: str, channel_id: str, converter: SlackConverter, report: IngestReport
) -> _Day | None:
    """Convert a day file while streaming it (memory holds records, not raw JSON); None, with a warning,
    when it is not a complete JSON array: a day is stored whole or not at all."""
    skipped = report.skipped.copy()
    for errors in ("strict", "replace"):
        day = _Day()
        report.skipped = skipped.copy()  # a second reading must not count the first one's skips again
        try:
            for message in _json_array(files, name, errors):
                deleted = converter.deleted_ts(message)
                if deleted is not None:
                    day.deleted.append(deleted)
                    continue
                record = converter.record(message, channel_id, name)
                if record is not None:
                    day.records.append(record)
                elif converter.last_skip in _UNKNOWN_SHAPES:
                    day.unknown += 1
        except UnicodeDecodeError:
            report.warn(f"{files.path}: {name} is not valid UTF-8; undecodable bytes replaced")
            continue
        except _BrokenFile as exc:
            report.warn(f"{exc}; skipped")
            return None
        return day
    return None  # not reached: "replace" never raises UnicodeDecodeError


def _conversations(
    files: _ExportFiles, report: IngestReport, workspace_id: str
) -> tuple[dict[str, ChannelRecord], dict[str, str]]:
    """Folder name -> conversation, and channel id -> name for every listed conversation."""
    by_folder: dict[str, ChannelRecord] = {}
    names: dict[str, str] = {}
    for list_name, kind in _CONVERSATION_LISTS:
        if list_name not in files.names:
            continue
        for entry in _stream_list(files, list_name, report):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                report.skipped[f"{list_name} entry without id"] += 1
                continue
            name = entry.get("name") if isinstance(entry.get("name"), str) and entry.get("name") else entry["id"]
            record = ChannelRecord(PLATFORM, entry["id"], name, workspace_id, kind)
            names[entry["id"]] = name
            for folder in {entry["id"], name, entry.get("name_normalized")}:
                if isinstance(folder, str) and folder:
                    by_folder.setdefault(folder, record)
    return by_folder, names


def _workspace_id(files: _ExportFiles, user_lists: list[str], report: IngestReport) -> str:
    """The team id of the first user, else a name made from the export's file name."""
    for user_list in user_lists:
        for member in _stream_list(files, user_list, report):
            if isinstance(member, dict) and isinstance(member.get("team_id"), str) and member["team_id"]:
                return member["team_id"]
    return f"export:{files.path.stem}"


def ingest_slack_export(
    path: str | Path,
    store: Store,
    *,
    include_bots: bool = False,
    include_private: bool = False,
    progress: ProgressFn | None = None,
    report: IngestReport | None = None,
) -> IngestReport:
    """Import one Slack export (zip or folder). Raises BadExportError when it is not one."""
    path = Path(path)
    report = report if report is not None else IngestReport()
    files = _ExportFiles(path)
    try:
        day_files = [n for n in files.names if _DAY_FILE.match(n)]
        user_lists = [n for n in _USER_LISTS if n in files.names]
        if not user_lists and "channels.json" not in files.names:
            raise BadExportError(f"{path}: no users.json or channels.json; is this a Slack export?")
        workspace_id = _workspace_id(files, user_lists, report)
        store.upsert_workspace(PLATFORM, workspace_id)
        converter = SlackConverter(store, report, workspace_id=workspace_id, include_bots=include_bots)
        for user_list in user_lists:
            converter.add_users(_stream_list(files, user_list, report))
        by_folder, names = _conversations(files, report, workspace_id)
        converter.channels.update(names)
        plan = _plan(files, day_files, by_folder, include_private, report)
        _ingest_days(files, plan, store, converter, report, progress)
    finally:
        files.close()
    return report


def _plan(
    files: _ExportFiles,
    day_files: list[str],
    by_folder: dict[str, ChannelRecord],
    include_private: bool,
    report: IngestReport,
) -> list[tuple[ChannelRecord, str]]:
    """(conversation, day file) pairs to read, in folder then day order."""
    has_channel_list = "channels.json" in files.names
    if not has_channel_list and day_files:
        report.warn(f"{files.path}: no channels.json; reading each folder as a public channel")
    plan: list[tuple[ChannelRecord, str]] = []
    refused: set[str] = set()
    for name in day_files:
        folder = _DAY_FILE.match(name)["folder"]  # type: ignore[index]
        channel = by_folder.get(folder)
        if channel is None and not has_channel_list:
            channel = ChannelRecord(PLATFORM, folder, folder, None, "public")
        if channel is None:
            if folder not in refused:
                report.warn(f"{files.path}: folder {folder}/ is in no conversation list; skipped")
            refused.add(folder)
            continue
        if channel.kind != "public" and not include_private:
            if folder not in refused:
                report.skipped["private conversation"] += 1
            refused.add(folder)
            continue
        plan.append((channel, name))
    return plan


def _ingest_days(
    files: _ExportFiles,
    plan: list[tuple[ChannelRecord, str]],
    store: Store,
    converter: SlackConverter,
    report: IngestReport,
    progress: ProgressFn | None,
) -> None:
    writer = BatchWriter(store, report)
    known_channels: set[str] = set()
    for done, (channel, name) in enumerate(plan, 1):
        if channel.platform_id not in known_channels:
            store.upsert_channel(channel)
            known_channels.add(channel.platform_id)
        day = _read_day_file(files, name, channel.platform_id, converter, report)
        if day is not None:
            if day.unknown:
                report.warn(f"{files.path}: {name}: {day.unknown} records of unknown shape skipped")
            writer.add(day.records)
            for ts in day.deleted:
                writer.delete(PLATFORM, channel.platform_id, ts)
            report.files += 1
        if progress is not None:
            progress(IngestProgress(str(files.path), done, len(plan), report.stored))
    writer.flush()
    if progress is not None:
        progress(IngestProgress(str(files.path), len(plan), len(plan), report.stored))
