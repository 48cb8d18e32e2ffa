"""`mimic history slack`: fetch a workspace's history through the Slack Web API, incrementally.

With a bot token: resolve users (`users.list`), pick the channels (the public ones the bot is a member of,
or exactly those named), page through `conversations.history` from each channel's watermark and through
`conversations.replies` for every thread it finds, and store it all through the same converter as
the export importer, so both paths store identical rows. The watermark (the newest top-level ts stored)
moves only after a channel is fully stored, so an interrupted run simply fetches that channel again.
Private channels, DMs and group DMs are fetched only when named in `channels`.

Known limit of the API: `conversations.history` with `oldest` does not return old parents whose threads
got new replies, so replies added later to a thread started before the watermark are not fetched.

`out_zip` also writes what was fetched as an official-layout export (users.json, channels.json,
groups.json, dms.json, mpims.json, `<folder>/<YYYY-MM-DD>.json` by UTC day), for teams whose plan or role
cannot export. Fetched messages are spooled to a temporary folder one JSON line each and turned into day
files at the end, so memory stays bounded by the largest day.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from training.errors import ApiError
from training.ingest_batch import BatchWriter, IngestProgress, IngestReport, ProgressFn
from training.ingest_slack import PLATFORM, SlackConverter
from training.store import ChannelRecord, Store

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://slack.com/api/"
PAGE_SIZE = 200  # Slack recommends no more than 200 per page (chat-formats.md §3)
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_LIST_FILES = {"public": "channels.json", "private": "groups.json", "mpim": "mpims.json", "dm": "dms.json"}
# conversations.list for named channels: every kind when the token may list them, else fewer. Slack refuses
# the whole call (missing_scope) when one type's scope (im:read, mpim:read, groups:read) is missing.
_NAMED_TYPES = ("public_channel,private_channel,mpim,im", "public_channel,private_channel", "public_channel")
# Errors that concern one channel or thread (gone, the bot removed, a private one it may not read): that one is
# skipped with a warning, the others are fetched.
_SKIPPABLE = frozenset({"channel_not_found", "not_in_channel", "missing_scope", "thread_not_found", "is_archived",
                        "access_denied"})


def slack_client(token: str, base_url: str = DEFAULT_API_URL, *, max_rate_limit_retries: int = 10) -> WebClient:
    """A WebClient that waits out HTTP 429s (Retry-After) instead of failing."""
    client = WebClient(token=token, base_url=base_url if base_url.endswith("/") else base_url + "/")
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=max_rate_limit_retries))
    return client


def _call(client: WebClient, method: str, **params: Any) -> dict[str, Any]:
    """One Web API call; failures become ApiError naming the method and Slack's error code."""
    try:
        response = client.api_call(method, http_verb="GET", params={k: v for k, v in params.items() if v is not None})
    except SlackClientError as exc:
        response = getattr(exc, "response", None)
        error = response.get("error") if response is not None else None
        needed = response.get("needed") if response is not None else None
        extra = f" (the token needs {needed})" if needed else ""
        raise ApiError(f"Slack API {method} failed: {error or exc}{extra}", error) from exc
    except OSError as exc:
        raise ApiError(f"Slack API {method}: cannot connect ({exc})") from exc
    return response.data if isinstance(response.data, dict) else {}


def _pages(client: WebClient, method: str, key: str, **params: Any) -> Iterator[list[Any]]:
    """Each page's `key` list, following `response_metadata.next_cursor` until it is empty."""
    cursor: str | None = None
    while True:
        data = _call(client, method, cursor=cursor, limit=PAGE_SIZE, **params)
        yield data.get(key) or []
        cursor = (data.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return


def _kind(info: dict[str, Any]) -> str:
    if info.get("is_im"):
        return "dm"
    if info.get("is_mpim"):
        return "mpim"
    if info.get("is_private") or info.get("is_group"):
        return "private"
    return "public"


def _select_channels(
    client: WebClient, wanted: list[str] | None, report: IngestReport
) -> list[tuple[dict[str, Any], str]]:
    """(conversation info, kind) to fetch: the public channels the bot is in, or exactly `wanted`."""
    found = _conversations(client, ("public_channel",) if wanted is None else _NAMED_TYPES, report)
    if wanted is None:
        return [(c, "public") for c in found if c.get("is_member") and _kind(c) == "public"]
    chosen: list[tuple[dict[str, Any], str]] = []
    for name in (w.strip().lstrip("#") for w in wanted if w.strip()):
        match = next((c for c in found if name in (c["id"], c.get("name"))), None)
        if match is None and _CHANNEL_ID.match(name):
            match = {"id": name, "name": name}  # not listed (scopes); try it anyway
        if match is None:
            report.warn(f"Slack channel {name!r} not found; skipped")
            continue
        chosen.append((match, _kind(match)))
    return chosen


def _conversations(client: WebClient, kinds: tuple[str, ...], report: IngestReport) -> list[dict[str, Any]]:
    """conversations.list with the first `types` the token's scopes allow."""
    for i, types in enumerate(kinds):
        try:
            found: list[dict[str, Any]] = []
            for page in _pages(client, "conversations.list", "channels", types=types, exclude_archived="false"):
                found += [c for c in page if isinstance(c, dict) and isinstance(c.get("id"), str)]
            return found
        except ApiError as exc:
            if exc.code != "missing_scope" or i == len(kinds) - 1:
                raise
            report.warn(f"cannot list {types} ({exc}); listing {kinds[i + 1]} only")
    return []


def _user_info(client: WebClient, user_id: str, report: IngestReport) -> dict[str, Any] | None:
    """users.info for an author users.list left out (a Slack Connect user); None when Slack will not say."""
    try:
        user = _call(client, "users.info", user=user_id).get("user")
    except ApiError as exc:
        report.warn(f"Slack user {user_id} is not in users.list and users.info failed ({exc}); stored by id")
        return None
    return user if isinstance(user, dict) else None


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds or 0), int((micros + "000000")[:6])


class _ExportWriter:
    """Spools fetched users, channels and messages, then writes them as an official-layout export zip."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._tmp = tempfile.TemporaryDirectory(prefix="mimic-history-")
        self._root = Path(self._tmp.name)
        self._lists: dict[str, list[dict[str, Any]]] = {name: [] for name in _LIST_FILES.values()}
        self._users = open(self._root / "users.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self._days: set[tuple[str, str]] = set()

    def add_users(self, members: list[Any]) -> None:
        for member in members:
            self._users.write(json.dumps(member, ensure_ascii=False) + "\n")

    def add_channel(self, info: dict[str, Any], kind: str) -> str:
        """Lists the conversation; returns its folder name (the channel name, or the id for a DM)."""
        self._lists[_LIST_FILES[kind]].append(info)
        return info["id"] if kind == "dm" else str(info.get("name") or info["id"])

    def add_message(self, folder: str, message: dict[str, Any]) -> None:
        try:
            day = datetime.fromtimestamp(_ts_key(message["ts"])[0], UTC).strftime("%Y-%m-%d")
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            return
        spool = self._root / "days" / folder
        spool.mkdir(parents=True, exist_ok=True)
        with open(spool / f"{day}.jsonl", "a", encoding="utf-8") as fp:
            fp.write(json.dumps(message, ensure_ascii=False) + "\n")
        self._days.add((folder, day))

    def _spooled(self, path: Path) -> Iterator[dict[str, Any]]:
        with open(path, encoding="utf-8") as fp:
            for line in fp:
                yield json.loads(line)

    def finish(self) -> None:
        self._users.close()
        partial = self.out.with_name(self.out.name + ".part")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            with archive.open("users.json", "w") as raw:
                raw.write(b"[")
                for i, member in enumerate(self._spooled(self._root / "users.jsonl")):
                    raw.write((b",\n" if i else b"\n") + json.dumps(member, ensure_ascii=False).encode())
                raw.write(b"\n]")
            for name, entries in self._lists.items():
                archive.writestr(name, json.dumps(entries, ensure_ascii=False, indent=1))
            for folder, day in sorted(self._days):
                messages = {m["ts"]: m for m in self._spooled(self._root / "days" / folder / f"{day}.jsonl")}
                ordered = [messages[ts] for ts in sorted(messages, key=_ts_key)]
                archive.writestr(f"{folder}/{day}.json", json.dumps(ordered, ensure_ascii=False, indent=1))
        os.replace(partial, self.out)
        self.close()

    def close(self) -> None:
        self._users.close()
        self._tmp.cleanup()


def fetch_slack_history(
    client: WebClient,
    store: Store,
    *,
    channels: list[str] | None = None,
    out_zip: str | Path | None = None,
    include_bots: bool = False,
    progress: ProgressFn | None = None,
) -> IngestReport:
    """Fetch and store everything newer than each channel's watermark."""
    report = IngestReport()
    auth = _call(client, "auth.test")
    workspace_id = str(auth.get("team_id") or "slack-api")
    store.upsert_workspace(PLATFORM, workspace_id, auth.get("team") if isinstance(auth.get("team"), str) else None)
    converter = SlackConverter(store, report, workspace_id=workspace_id, include_bots=include_bots,
                               lookup_user=lambda user_id: _user_info(client, user_id, report))
    export = _ExportWriter(Path(out_zip)) if out_zip is not None else None
    try:
        for members in _pages(client, "users.list", "members"):
            converter.add_users(members)
            if export is not None:
                export.add_users(members)
        selected = _select_channels(client, channels, report)
        converter.channels.update({c["id"]: str(c.get("name") or c["id"]) for c, _ in selected})
        writer = BatchWriter(store, report)
        fetched = 0
        for done, (info, kind) in enumerate(selected, 1):
            name = str(info.get("name") or info["id"])
            store.upsert_channel(ChannelRecord(PLATFORM, info["id"], name, workspace_id, kind))
            folder = export.add_channel(info, kind) if export is not None else ""
            try:
                for message in _channel_messages(client, store, info["id"], writer, report):
                    fetched += 1
                    deleted = converter.deleted_ts(message)
                    if deleted is not None:
                        writer.delete(PLATFORM, info["id"], deleted)
                    else:
                        record = converter.record(message, info["id"], f"#{name}")
                        if record is not None:
                            writer.add([record])
                    if export is not None:
                        export.add_message(folder, message)
                    if progress is not None and fetched % PAGE_SIZE == 0:
                        progress(IngestProgress(f"#{name}", done - 1, len(selected), fetched))
            except ApiError as exc:
                if exc.code not in _SKIPPABLE:
                    raise
                writer.flush()  # what was fetched is kept; the watermark stays, so the next run asks again
                report.warn(f"Slack channel #{name} ({info['id']}) skipped: {exc}")
                continue
            report.files += 1
            if progress is not None:
                progress(IngestProgress(f"#{name}", done, len(selected), fetched))
        if export is not None:
            export.finish()
            export = None
    finally:
        if export is not None:
            export.close()
    return report


def _channel_messages(client: WebClient, store: Store, channel_id: str, writer: BatchWriter,
                      report: IngestReport) -> Iterator[Any]:
    """Every message newer than the channel's watermark, each thread's replies after the pages that
    named it; moves the watermark once all of them are stored."""
    oldest = store.get_watermark(PLATFORM, channel_id)
    newest = oldest
    threads: list[str] = []
    for page in _pages(client, "conversations.history", "messages", channel=channel_id, oldest=oldest):
        for message in page:
            if not isinstance(message, dict) or not isinstance(message.get("ts"), str):
                yield message
                continue
            if newest is None or _ts_key(message["ts"]) > _ts_key(newest):
                newest = message["ts"]
            if message.get("reply_count") and message.get("thread_ts", message["ts"]) == message["ts"]:
                threads.append(message["ts"])
            yield message
    for parent in threads:
        try:
            for page in _pages(client, "conversations.replies", "messages", channel=channel_id, ts=parent):
                yield from (m for m in page if not (isinstance(m, dict) and m.get("ts") == parent))
        except ApiError as exc:
            if exc.code != "thread_not_found":  # deleted since the history page named it: nothing to fetch
                raise
            report.warn(f"Slack thread {parent} in {channel_id} is gone; skipped")
    writer.flush()
    if newest is not None and newest != oldest:
        store.set_watermark(PLATFORM, channel_id, newest)
