"""The message store: one SQLite file holding everything Mimic knows about a team's chat history.

Used by the importers (training/ingest*.py), the corpus builder and, later, the live bot. Rows go in and
come out as small frozen dataclasses; ids in the public API are the platform's own (`"slack"`, `"C024BE91L"`,
`"1452837352.000006"`), never our row ids.

Design decisions:
- WAL mode and a busy timeout, so the live bot and a CLI run can share the file.
- Every write method is one transaction (`BEGIN IMMEDIATE` ... `COMMIT`); `upsert_messages` takes a whole
  batch, so an ingest that dies halfway leaves the store as it was before that batch. `transaction()` lets
  a caller group several calls (a batch and its watermark).
- The schema carries a version; `MIGRATIONS[i]` upgrades version i to i + 1 in place, and a file from a
  newer Mimic is refused rather than guessed at.
- Channels and users are keyed by (platform, platform id): Slack and Discord ids are unique per platform,
  and a Discord user is the same person in every guild.
- Each person gets a canonical speaker name, unique in the store ignoring case: the handle when free,
  else `handle_2`, `handle_3`, ... in first-seen order. It never changes once given, so corpora and models
  stay consistent; `upsert_users` reports every name it had to change.
- One person may have several accounts (Slack and Discord, two workspaces): `link` makes an account the same
  person as another (`users.same_as`, the person's first account). Their messages are learned under the
  person's speaker name, and an opt-out, opt-in or forget of any of them covers all of them.
- Consent: opted-out people keep their rows (opt-in restores them) but never reach a corpus or the
  speaker list. `forget` deletes a person's messages and profile and leaves a tombstone (platform id only,
  opted out) so a re-ingest neither restores their profile nor stores their messages again.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.errors import StoreError, UnknownUserError
from training.normalize import canonical_speaker_name


@dataclass(frozen=True)
class UserRecord:
    """A person or bot. On input `speaker`, `opted_out` and `forgotten` are ignored: the store owns them."""

    platform: str
    platform_id: str
    handle: str | None = None
    display_name: str | None = None
    real_name: str | None = None
    avatar_url: str | None = None
    is_bot: bool = False
    workspace_id: str | None = None  # the platform id of the workspace/guild the person was first seen in
    speaker: str | None = None
    opted_out: bool = False
    forgotten: bool = False


@dataclass(frozen=True)
class ChannelRecord:
    platform: str
    platform_id: str
    name: str
    workspace_id: str | None = None
    kind: str = "public"  # public | private | dm | mpim | thread


@dataclass(frozen=True)
class MessageRecord:
    """One message; `text` is already normalised (training.normalize), times are Unix seconds."""

    platform: str
    channel_id: str
    message_id: str  # Slack ts, Discord snowflake, or a source-specific stable id
    user_id: str
    text: str
    created: float
    thread_parent: str | None = None  # Slack thread_ts of the parent, Discord replied-to message id
    edited: float | None = None


@dataclass(frozen=True)
class NameCollision:
    """A person whose wanted speaker name was taken; they got `speaker` instead."""

    platform: str
    platform_id: str
    wanted: str
    speaker: str


@dataclass(frozen=True)
class BatchResult:
    new: int  # messages stored for the first time
    updated: int  # messages whose stored row changed (an edit, a better-resolved mention)
    unchanged: int  # already stored as is, an older copy of an edited message, or a forgotten author


@dataclass(frozen=True)
class CorpusFilter:
    channels: tuple[str, ...] | None = None  # channel names (with or without '#') or platform ids
    min_chars: int = 1
    include_bots: bool = False


@dataclass(frozen=True)
class CorpusMessage:
    speaker: str
    text: str
    channel: str
    created: float
    key: int  # row id; with `created` it orders messages that share a timestamp


_SCHEMA_V1 = (
    """CREATE TABLE workspaces (
        id INTEGER PRIMARY KEY,
        platform TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        name TEXT,
        UNIQUE (platform, platform_id))""",
    """CREATE TABLE channels (
        id INTEGER PRIMARY KEY,
        platform TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        workspace_id INTEGER REFERENCES workspaces(id),
        name TEXT NOT NULL,
        kind TEXT NOT NULL DEFAULT 'public',
        UNIQUE (platform, platform_id))""",
    """CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        platform TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        workspace_id INTEGER REFERENCES workspaces(id),
        handle TEXT,
        display_name TEXT,
        real_name TEXT,
        avatar_url TEXT,
        is_bot INTEGER NOT NULL DEFAULT 0,
        opted_out INTEGER NOT NULL DEFAULT 0,
        forgotten INTEGER NOT NULL DEFAULT 0,
        speaker TEXT,
        speaker_key TEXT UNIQUE,
        UNIQUE (platform, platform_id))""",
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        channel_id INTEGER NOT NULL REFERENCES channels(id),
        platform_id TEXT NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users(id),
        text TEXT NOT NULL,
        thread_parent TEXT,
        created REAL NOT NULL,
        edited REAL,
        UNIQUE (channel_id, platform_id))""",
    "CREATE INDEX messages_by_channel_time ON messages (channel_id, created)",
    "CREATE INDEX messages_by_user ON messages (user_id)",
    """CREATE TABLE watermarks (
        channel_id INTEGER PRIMARY KEY REFERENCES channels(id),
        value TEXT NOT NULL)""",
)
# v2: the corpus's time split asks for "the n-th message by time"; without this index that is a full sort.
_SCHEMA_V2 = ("CREATE INDEX messages_by_time ON messages (created)",)
# v3: an account may be the same person as another (`link`): their messages count as that person's.
# `learned_as` remembers every person's name an account was learned under, so that forgetting it after an unlink
# still reaches the voice memories built while it was linked.
_SCHEMA_V3 = ("ALTER TABLE users ADD COLUMN same_as INTEGER REFERENCES users(id)",
              """CREATE TABLE learned_as (
        user_id INTEGER NOT NULL REFERENCES users(id),
        speaker TEXT NOT NULL,
        UNIQUE (user_id, speaker))""")
MIGRATIONS: tuple[tuple[str, ...], ...] = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3)
SCHEMA_VERSION = len(MIGRATIONS)

_UPSERT_MESSAGE = """
INSERT INTO messages (channel_id, platform_id, user_id, text, thread_parent, created, edited)
SELECT ?1, ?2, id, ?3, ?4, ?5, ?6 FROM users WHERE id = ?7 AND forgotten = 0
ON CONFLICT (channel_id, platform_id) DO UPDATE SET
    user_id = excluded.user_id, text = excluded.text, thread_parent = excluded.thread_parent,
    created = excluded.created, edited = excluded.edited
WHERE coalesce(excluded.edited, 0) >= coalesce(messages.edited, 0)
  AND (messages.text IS NOT excluded.text OR messages.edited IS NOT excluded.edited
       OR messages.user_id IS NOT excluded.user_id OR messages.created IS NOT excluded.created
       OR messages.thread_parent IS NOT excluded.thread_parent)
"""
# A message's author: `a`, the account that wrote it, and `u`, the person it belongs to (the account itself, or
# the one it is linked to), whose speaker name it is learned under.
_AUTHOR = "JOIN users a ON a.id = m.user_id JOIN users u ON u.id = coalesce(a.same_as, a.id)"
_CONSENT = "u.opted_out = 0 AND u.forgotten = 0 AND a.opted_out = 0 AND a.forgotten = 0"
# Whose messages count as "people talking": humans, not opted out, not forgotten.
_HUMAN = f"u.is_bot = 0 AND a.is_bot = 0 AND {_CONSENT}"
_USER_COLUMNS = (
    "u.platform, u.platform_id, u.handle, u.display_name, u.real_name, u.avatar_url, u.is_bot, "
    "w.platform_id, u.speaker, u.opted_out, u.forgotten"
)


_FORGOTTEN = "forgotten:"  # a tombstone's speaker_key prefix: ':' never appears in a speaker name


def _tombstone_key(key: str) -> str:
    """What a forgotten person's name is kept as: a digest that keeps the name taken and lets the bot refuse
    it, without keeping the name itself."""
    return _FORGOTTEN + hashlib.sha256(key.casefold().encode("utf-8")).hexdigest()[:24]


def _user_from_row(row: tuple[Any, ...]) -> UserRecord:
    return UserRecord(
        platform=row[0], platform_id=row[1], handle=row[2], display_name=row[3], real_name=row[4],
        avatar_url=row[5], is_bot=bool(row[6]), workspace_id=row[7], speaker=row[8],
        opted_out=bool(row[9]), forgotten=bool(row[10]),
    )


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


class Store:
    """A connection to one store file. Use as a context manager; not shared between threads."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._channel_ids: dict[tuple[str, str], int] = {}
        self._user_ids: dict[tuple[str, str], int] = {}
        self._workspace_ids: dict[tuple[str, str], int] = {}

    # ---- opening, schema, transactions -------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> Store:
        """Open (and create or upgrade) the store at `path`; `create=False` refuses a missing file."""
        path = Path(path)
        if not create and not path.is_file():
            raise StoreError(f"{path}: no message store here; run `mimic ingest` first")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the message store: {exc}") from exc
        store = cls(conn, path)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable at each checkpoint; safe with WAL
            conn.execute("PRAGMA foreign_keys = ON")
            conn.create_function("casefold", 1, lambda s: s.casefold() if s else s, deterministic=True)
            store._migrate()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{path}: not a usable message store ({exc})") from exc
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        exists = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if not exists:
            return 0
        row = self._conn.execute("SELECT version FROM schema_version").fetchone()
        return row[0] if row else 0

    def _migrate(self, target: int = SCHEMA_VERSION) -> None:
        with self.transaction():
            current = self.schema_version
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: store schema v{current} is newer than this Mimic (v{SCHEMA_VERSION}); "
                    "upgrade Mimic"
                )
            if current == 0:
                self._conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                self._conn.execute("INSERT INTO schema_version VALUES (0)")
            for version in range(current, target):
                for statement in MIGRATIONS[version]:
                    self._conn.execute(statement)
                self._conn.execute("UPDATE schema_version SET version = ?", (version + 1,))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction; nested uses join the outer one."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            # Row ids cached during the failed transaction may name rows that no longer exist.
            self._channel_ids.clear()
            self._user_ids.clear()
            self._workspace_ids.clear()
            raise
        self._conn.execute("COMMIT")

    # ---- workspaces and channels --------------------------------------------------------------------

    def upsert_workspace(self, platform: str, platform_id: str, name: str | None = None) -> None:
        with self.transaction():
            self._conn.execute(
                "INSERT INTO workspaces (platform, platform_id, name) VALUES (?, ?, ?) "
                "ON CONFLICT (platform, platform_id) DO UPDATE SET name = coalesce(excluded.name, name)",
                (platform, platform_id, name),
            )

    def _workspace_row(self, platform: str, platform_id: str | None) -> int | None:
        if platform_id is None:
            return None
        key = (platform, platform_id)
        if key not in self._workspace_ids:
            self._conn.execute(
                "INSERT INTO workspaces (platform, platform_id) VALUES (?, ?) ON CONFLICT DO NOTHING", key
            )
            row = self._conn.execute(
                "SELECT id FROM workspaces WHERE platform = ? AND platform_id = ?", key
            ).fetchone()
            self._workspace_ids[key] = row[0]
        return self._workspace_ids[key]

    def upsert_channel(self, channel: ChannelRecord) -> None:
        with self.transaction():
            workspace = self._workspace_row(channel.platform, channel.workspace_id)
            self._conn.execute(
                "INSERT INTO channels (platform, platform_id, workspace_id, name, kind) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (platform, platform_id) DO UPDATE SET name = excluded.name, kind = excluded.kind, "
                "workspace_id = coalesce(excluded.workspace_id, workspace_id)",
                (channel.platform, channel.platform_id, workspace, channel.name, channel.kind),
            )

    def channel(self, platform: str, platform_id: str) -> ChannelRecord | None:
        row = self._conn.execute(
            "SELECT c.platform, c.platform_id, c.name, w.platform_id, c.kind FROM channels c "
            "LEFT JOIN workspaces w ON w.id = c.workspace_id WHERE c.platform = ? AND c.platform_id = ?",
            (platform, platform_id),
        ).fetchone()
        return ChannelRecord(*row) if row else None

    def channel_names(self, platform: str) -> dict[str, str]:
        """Platform id -> channel name, for rendering channel mentions."""
        rows = self._conn.execute("SELECT platform_id, name FROM channels WHERE platform = ?", (platform,))
        return dict(rows.fetchall())

    def _channel_row(self, platform: str, platform_id: str) -> int:
        key = (platform, platform_id)
        if key not in self._channel_ids:
            row = self._conn.execute(
                "SELECT id FROM channels WHERE platform = ? AND platform_id = ?", key
            ).fetchone()
            if row is None:
                raise StoreError(f"unknown channel {platform}:{platform_id}; upsert_channel it first")
            self._channel_ids[key] = row[0]
        return self._channel_ids[key]

    # ---- users and identity -------------------------------------------------------------------------

    def _free_speaker_name(self, wanted: str) -> str:
        """`wanted`, or `wanted_2`, ...: never a name someone has, or had before they were forgotten (a model
        trained on them still knows that name: a newcomer given it would be written as with their words)."""
        candidate, n = wanted, 1
        while self._conn.execute(
            "SELECT 1 FROM users WHERE speaker_key IN (?, ?)", (candidate.casefold(), _tombstone_key(candidate))
        ).fetchone():
            n += 1
            candidate = f"{wanted}_{n}"
        return candidate

    def upsert_users(self, users: Iterable[UserRecord]) -> list[NameCollision]:
        """Insert new people, refresh known ones (never a forgotten one). Returns the renamed speakers."""
        collisions: list[NameCollision] = []
        with self.transaction():
            for user in users:
                row = self._conn.execute(
                    "SELECT id, forgotten FROM users WHERE platform = ? AND platform_id = ?",
                    (user.platform, user.platform_id),
                ).fetchone()
                workspace = self._workspace_row(user.platform, user.workspace_id)
                if row is not None:
                    if not row[1]:
                        self._conn.execute(
                            "UPDATE users SET handle = coalesce(?, handle), display_name = coalesce(?, display_name), "
                            "real_name = coalesce(?, real_name), avatar_url = coalesce(?, avatar_url), "
                            "is_bot = max(is_bot, ?), workspace_id = coalesce(workspace_id, ?) WHERE id = ?",
                            (user.handle, user.display_name, user.real_name, user.avatar_url,
                             int(user.is_bot), workspace, row[0]),
                        )
                    continue
                wanted = canonical_speaker_name(
                    user.handle or user.display_name or user.real_name or user.platform_id
                )
                speaker = self._free_speaker_name(wanted)
                if speaker != wanted:
                    collisions.append(NameCollision(user.platform, user.platform_id, wanted, speaker))
                self._conn.execute(
                    "INSERT INTO users (platform, platform_id, workspace_id, handle, display_name, real_name, "
                    "avatar_url, is_bot, speaker, speaker_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (user.platform, user.platform_id, workspace, user.handle, user.display_name,
                     user.real_name, user.avatar_url, int(user.is_bot), speaker, speaker.casefold()),
                )
        return collisions

    def user_by_platform_id(self, platform: str, platform_id: str) -> UserRecord | None:
        row = self._conn.execute(
            f"SELECT {_USER_COLUMNS} FROM users u LEFT JOIN workspaces w ON w.id = u.workspace_id "
            "WHERE u.platform = ? AND u.platform_id = ?",
            (platform, platform_id),
        ).fetchone()
        return _user_from_row(row) if row else None

    def speaker_names(self, platform: str) -> dict[str, str]:
        """Platform user id -> canonical speaker, for rendering mentions (tombstones have none)."""
        rows = self._conn.execute(  # a linked account is mentioned by its person's name
            "SELECT a.platform_id, u.speaker FROM users a JOIN users u ON u.id = coalesce(a.same_as, a.id) "
            "WHERE a.platform = ? AND u.speaker IS NOT NULL", (platform,)
        )
        return dict(rows.fetchall())

    def find_user(self, name: str) -> UserRecord | None:
        """The one person going by `name`: their speaker name, else a platform user id, else a handle,
        display name or real name; any case, a leading '@' ignored. Raises UnknownUserError when a name
        fits several people."""
        wanted = name.strip().lstrip("@").strip()
        if not wanted:
            return None
        folded = wanted.casefold()
        base = f"SELECT {_USER_COLUMNS} FROM users u LEFT JOIN workspaces w ON w.id = u.workspace_id WHERE "
        for where, arg in (
            ("u.speaker_key = ?", folded),
            ("u.speaker_key = ?", _tombstone_key(folded)),  # a forgotten person, so that they are refused
            ("u.platform_id = ? AND u.forgotten = 0", wanted),
            ("? IN (casefold(u.handle), casefold(u.display_name), casefold(u.real_name))", folded),
        ):
            rows = self._conn.execute(base + where + " ORDER BY u.id", (arg,)).fetchall()
            if len(rows) == 1:
                return _user_from_row(rows[0])
            people = {r[0] for r in self._conn.execute(
                "SELECT DISTINCT coalesce(u.same_as, u.id) FROM users u WHERE " + where, (arg,))}
            if len(people) == 1:  # several accounts of one linked person: the person's first account
                return self._records([people.pop()])[0]
            if rows:
                names = ", ".join(f"{r[8]} ({r[0]} {r[1]})" for r in rows[:5])
                raise UnknownUserError(f"'{name}' fits {len(rows)} people: {names}; use the speaker name")
        return None

    def _require_user(self, name: str) -> tuple[int, UserRecord]:
        user = self.find_user(name)
        if user is None:
            raise UnknownUserError(f"no one called '{name}' in {self.path}; see `mimic stats`")
        row = self._conn.execute(
            "SELECT id FROM users WHERE platform = ? AND platform_id = ?", (user.platform, user.platform_id)
        ).fetchone()
        return row[0], user

    def _person_rows(self, row_id: int) -> list[int]:
        """The row ids of every account of the person `row_id` belongs to: the first account, then the linked."""
        root = self._conn.execute("SELECT coalesce(same_as, id) FROM users WHERE id = ?", (row_id,)).fetchone()[0]
        rows = self._conn.execute("SELECT id FROM users WHERE id = ? OR same_as = ? ORDER BY id = ? DESC, id",
                                  (root, root, root)).fetchall()
        return [r[0] for r in rows]

    def _records(self, row_ids: list[int]) -> list[UserRecord]:
        marks = ", ".join("?" * len(row_ids))
        rows = self._conn.execute(f"SELECT u.id, {_USER_COLUMNS} FROM users u LEFT JOIN workspaces w "
                                  f"ON w.id = u.workspace_id WHERE u.id IN ({marks})", row_ids).fetchall()
        by_id = {row[0]: _user_from_row(row[1:]) for row in rows}
        return [by_id[r] for r in row_ids]

    def speaker_of(self, platform: str, platform_id: str) -> str | None:
        """The speaker name an account's messages are learned under: its person's (the first account's when
        linked), None for a tombstone or an account never seen."""
        row = self._conn.execute(
            "SELECT u.speaker FROM users a JOIN users u ON u.id = coalesce(a.same_as, a.id) "
            "WHERE a.platform = ? AND a.platform_id = ?", (platform, platform_id)).fetchone()
        return row[0] if row else None

    def person_of(self, platform: str, platform_id: str) -> UserRecord | None:
        """The person an account belongs to: the record of its first account when linked, else its own. One
        query: it runs for every impersonation."""
        row = self._conn.execute(
            f"SELECT {_USER_COLUMNS} FROM users a JOIN users u ON u.id = coalesce(a.same_as, a.id) "
            "LEFT JOIN workspaces w ON w.id = u.workspace_id WHERE a.platform = ? AND a.platform_id = ?",
            (platform, platform_id)).fetchone()
        return _user_from_row(row) if row else None

    def learned_names(self, name: str) -> list[str]:
        """Every speaker name the person's words may be learned under (voice memories are built per name):
        their accounts' own, and the names of people any of them was linked to, now or before an unlink."""
        row_id, _ = self._require_user(name)
        group = self._person_rows(row_id)
        marks = ", ".join("?" * len(group))
        names = [r.speaker for r in self._records(group) if r.speaker]
        names += [r[0] for r in self._conn.execute(
            f"SELECT speaker FROM learned_as WHERE user_id IN ({marks}) ORDER BY speaker", group)]
        return list(dict.fromkeys(names))

    def accounts(self, name: str) -> list[UserRecord]:
        """Every account of the person going by `name` (their first account first): one, unless linked."""
        row_id, _ = self._require_user(name)
        return self._records(self._person_rows(row_id))

    def namesakes(self, name: str) -> list[UserRecord]:
        """Accounts, not linked to `name`'s person, that go by the same display or real name as one of theirs:
        perhaps the same person on another platform (who is only covered by an opt-out once linked)."""
        row_id, _ = self._require_user(name)
        group = self._person_rows(row_id)
        marks = ", ".join("?" * len(group))
        names = {n for r in self._records(group) for n in (r.display_name, r.real_name) if n}
        if not names:
            return []
        folded = [n.casefold() for n in names]
        wanted = ", ".join("?" * len(folded))
        rows = self._conn.execute(
            f"SELECT id FROM users WHERE id NOT IN ({marks}) AND coalesce(same_as, 0) NOT IN ({marks}) "
            f"AND forgotten = 0 AND is_bot = 0 AND (casefold(display_name) IN ({wanted}) "
            f"OR casefold(real_name) IN ({wanted})) ORDER BY id",
            [*group, *group, *folded, *folded]).fetchall()
        return self._records([r[0] for r in rows]) if rows else []

    def link(self, name: str, other: str) -> list[UserRecord]:
        """Make `other`'s account (and any linked to it) the same person as `name`'s: from now on their messages
        are learned under `name`'s speaker, and an opt-out or forget of either covers both. Consent is
        merged the careful way: if either was opted out, both are. Returns the person's accounts."""
        with self.transaction():
            row_id, user = self._require_user(name)
            other_id, other_user = self._require_user(other)
            for u in (user, other_user):
                if u.forgotten:
                    raise UnknownUserError(f"'{u.speaker or u.platform_id}' was forgotten; a forgotten account "
                                           "cannot be linked")
            root = self._person_rows(row_id)[0]
            moved = self._person_rows(other_id)
            if root in moved:
                what = "the same account" if row_id == other_id else "already the same person"
                raise UnknownUserError(f"'{name}' and '{other}' are {what}")
            marks = ", ".join("?" * len(moved))
            self._conn.execute(f"UPDATE users SET same_as = ? WHERE id IN ({marks})", [root, *moved])
            self._conn.execute(f"INSERT OR IGNORE INTO learned_as (user_id, speaker) SELECT id, "
                               f"(SELECT speaker FROM users WHERE id = ?) FROM users WHERE id IN ({marks})",
                               [root, *moved])
            group = self._person_rows(root)
            gmarks = ", ".join("?" * len(group))
            opted = self._conn.execute(f"SELECT max(opted_out) FROM users WHERE id IN ({gmarks})", group).fetchone()[0]
            self._conn.execute(f"UPDATE users SET opted_out = ? WHERE id IN ({gmarks})", [opted, *group])
            return self._records(group)

    def unlink(self, name: str) -> UserRecord:
        """Make an account its own person again (its opt-out stays as it is). Linked to it: they follow the
        person's next account."""
        with self.transaction():
            row_id, user = self._require_user(name)
            group = self._person_rows(row_id)
            if len(group) == 1:
                raise UnknownUserError(f"'{user.speaker}' is not linked to anyone")
            if row_id == group[0]:  # the first account leaves: the next one becomes the person's first
                rest = group[1:]
                marks = ", ".join("?" * len(rest))
                self._conn.execute(f"UPDATE users SET same_as = ? WHERE id IN ({marks})", [rest[0], *rest])
                self._conn.execute("UPDATE users SET same_as = NULL WHERE id = ?", (rest[0],))
            self._conn.execute("UPDATE users SET same_as = NULL WHERE id = ?", (row_id,))
        return user

    def set_opted_out(self, name: str, opted_out: bool) -> UserRecord:
        """Opt a person, every account of theirs, out of (or back into) every corpus and impersonation."""
        with self.transaction():
            row_id, user = self._require_user(name)
            if user.forgotten:
                raise UnknownUserError(f"'{name}' was forgotten; they stay opted out for good")
            group = self._person_rows(row_id)
            marks = ", ".join("?" * len(group))
            self._conn.execute(f"UPDATE users SET opted_out = ? WHERE id IN ({marks}) AND forgotten = 0",
                               [int(opted_out), *group])
        return replace(user, opted_out=opted_out)

    def forget(self, name: str) -> int:
        """Delete a person's messages and profile, every account of theirs, keep opted-out tombstones; returns
        messages deleted."""
        self._conn.execute("PRAGMA secure_delete = ON")  # overwrite the freed pages, not just unlink them
        try:
            with self.transaction():
                row_id, user = self._require_user(name)
                if user.forgotten:
                    raise UnknownUserError(f"'{name}' was forgotten already")
                group = self._person_rows(row_id)
                marks = ", ".join("?" * len(group))
                deleted = self._conn.execute(f"DELETE FROM messages WHERE user_id IN ({marks})", group).rowcount
                keys = self._conn.execute(f"SELECT id, speaker_key FROM users WHERE id IN ({marks})", group)
                for rid, key in keys.fetchall():  # the name stays taken, kept only as a digest
                    self._conn.execute(
                        "UPDATE users SET handle = NULL, display_name = NULL, real_name = NULL, avatar_url = NULL, "
                        "speaker = NULL, speaker_key = ?, opted_out = 1, forgotten = 1 WHERE id = ?",
                        (_tombstone_key(key) if key and not key.startswith(_FORGOTTEN) else key, rid),
                    )
            # Old copies of the pages live on in the WAL until a checkpoint; write them back now.
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._conn.execute("PRAGMA secure_delete = OFF")
        return deleted

    def _user_row(self, platform: str, platform_id: str) -> int:
        key = (platform, platform_id)
        if key not in self._user_ids:
            row = self._conn.execute(
                "SELECT id FROM users WHERE platform = ? AND platform_id = ?", key
            ).fetchone()
            if row is None:
                raise StoreError(f"unknown user {platform}:{platform_id}; upsert_users them first")
            self._user_ids[key] = row[0]
        return self._user_ids[key]

    # ---- messages and watermarks --------------------------------------------------------------------

    def upsert_messages(self, messages: Iterable[MessageRecord]) -> BatchResult:
        """Store a batch in one transaction: new messages are added, edits replace older text (an older
        copy never overwrites a newer edit), and a forgotten person's messages are not stored."""
        total = 0

        def rows() -> Iterator[tuple[Any, ...]]:
            nonlocal total
            for m in messages:
                total += 1
                yield (self._channel_row(m.platform, m.channel_id), m.message_id, m.text, m.thread_parent,
                       m.created, m.edited, self._user_row(m.platform, m.user_id))

        with self.transaction():
            before_id = self._conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]
            before_changes = self._conn.total_changes
            self._conn.executemany(_UPSERT_MESSAGE, rows())
            changed = self._conn.total_changes - before_changes
            # New rows get max(id) + 1 in turn, so the id range says how many were inserted.
            new = self._conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0] - before_id
        return BatchResult(new=new, updated=changed - new, unchanged=total - changed)

    def delete_message(self, platform: str, channel_id: str, message_id: str) -> bool:
        """Remove a message deleted upstream; False when it was not stored."""
        with self.transaction():
            row = self._conn.execute(
                "SELECT id FROM channels WHERE platform = ? AND platform_id = ?", (platform, channel_id)
            ).fetchone()
            if row is None:
                return False
            cursor = self._conn.execute(
                "DELETE FROM messages WHERE channel_id = ? AND platform_id = ?", (row[0], message_id)
            )
        return cursor.rowcount > 0

    def delete_channel(self, platform: str, channel_id: str) -> int:
        """Remove a channel deleted upstream, with its messages and watermark; returns how many messages went."""
        with self.transaction():
            row = self._conn.execute(
                "SELECT id FROM channels WHERE platform = ? AND platform_id = ?", (platform, channel_id)
            ).fetchone()
            if row is None:
                return 0
            deleted = self._conn.execute("DELETE FROM messages WHERE channel_id = ?", (row[0],)).rowcount
            self._conn.execute("DELETE FROM watermarks WHERE channel_id = ?", (row[0],))
            self._conn.execute("DELETE FROM channels WHERE id = ?", (row[0],))
        return deleted

    def message_count(self) -> int:
        return self._conn.execute("SELECT count(*) FROM messages").fetchone()[0]

    def get_watermark(self, platform: str, channel_id: str) -> str | None:
        row = self._conn.execute(
            "SELECT w.value FROM watermarks w JOIN channels c ON c.id = w.channel_id "
            "WHERE c.platform = ? AND c.platform_id = ?",
            (platform, channel_id),
        ).fetchone()
        return row[0] if row else None

    def set_watermark(self, platform: str, channel_id: str, value: str) -> None:
        """Remember how far a channel has been fetched (the newest Slack ts stored)."""
        with self.transaction():
            self._conn.execute(
                "INSERT INTO watermarks (channel_id, value) VALUES (?, ?) "
                "ON CONFLICT (channel_id) DO UPDATE SET value = excluded.value",
                (self._channel_row(platform, channel_id), value),
            )

    # ---- reading for people and corpora -------------------------------------------------------------

    def speaker_counts(self) -> dict[str, int]:
        """Canonical speaker -> stored messages, for people who may be learned from and impersonated."""
        rows = self._conn.execute(
            f"SELECT u.speaker, count(*) FROM messages m {_AUTHOR} WHERE {_HUMAN} "
            "GROUP BY u.id ORDER BY count(*) DESC, u.speaker"
        )
        return dict(rows.fetchall())

    def _channel_labels(self) -> dict[int, str]:
        """Channel row id -> its name, or `name [id]` where two channels share a name."""
        rows = self._conn.execute("SELECT id, name, platform_id FROM channels").fetchall()
        seen: dict[str, int] = {}
        for _, name, _ in rows:
            seen[name] = seen.get(name, 0) + 1
        return {cid: name if seen[name] == 1 else f"{name} [{pid}]" for cid, name, pid in rows}

    def stats(self) -> dict[str, Any]:
        """Messages and characters of people (not bots, not opted out) per speaker and per channel.

        Shape: {"messages", "chars", "users": {speaker: {"messages", "chars"}}, "channels": {name:
        {"messages"}}, "first", "last", "opted_out"} with the date range as ISO-8601 UTC (None when empty);
        "opted_out": people left out since they opted out or were forgotten."""
        users = {
            speaker: {"messages": n, "chars": chars or 0}
            for speaker, n, chars in self._conn.execute(
                f"SELECT u.speaker, count(*), sum(length(m.text)) FROM messages m {_AUTHOR} "
                f"WHERE {_HUMAN} GROUP BY u.id ORDER BY count(*) DESC, u.speaker"
            )
        }
        labels = self._channel_labels()
        channels = {
            labels[cid]: {"messages": n}
            for cid, n in self._conn.execute(
                f"SELECT m.channel_id, count(*) FROM messages m {_AUTHOR} "
                f"WHERE {_HUMAN} GROUP BY m.channel_id ORDER BY count(*) DESC, m.channel_id"
            )
        }
        first, last = self._conn.execute(
            f"SELECT min(m.created), max(m.created) FROM messages m {_AUTHOR} "
            f"WHERE {_HUMAN}"
        ).fetchone()
        return {
            "messages": sum(u["messages"] for u in users.values()),
            "chars": sum(u["chars"] for u in users.values()),
            "users": users,
            "channels": channels,
            "first": _iso(first),
            "last": _iso(last),
            "opted_out": self._conn.execute(
                "SELECT count(DISTINCT coalesce(u.same_as, u.id)) FROM users u "
                "WHERE u.is_bot = 0 AND (u.opted_out = 1 OR u.forgotten = 1)"
            ).fetchone()[0],
        }

    def _corpus_where(self, filt: CorpusFilter) -> tuple[str, list[Any]]:
        clauses = [_CONSENT, "length(m.text) >= ?"]
        args: list[Any] = [max(filt.min_chars, 1)]
        if not filt.include_bots:
            clauses.append("u.is_bot = 0 AND a.is_bot = 0")
        if filt.channels is not None:
            names = [c.lstrip("#") for c in filt.channels]
            marks = ", ".join("?" * len(names)) or "NULL"
            clauses.append(
                f"m.channel_id IN (SELECT id FROM channels WHERE name IN ({marks}) OR platform_id IN ({marks}))"
            )
            args += names + names
        return " AND ".join(clauses), args

    def count_corpus(self, filt: CorpusFilter = CorpusFilter()) -> int:
        where, args = self._corpus_where(filt)
        return self._conn.execute(
            f"SELECT count(*) FROM messages m {_AUTHOR} WHERE {where}", args
        ).fetchone()[0]

    def corpus_cutoff(self, filt: CorpusFilter, position: int) -> tuple[float, int] | None:
        """(created, key) of the message at `position` (0-based) in time order, or None past the end."""
        where, args = self._corpus_where(filt)
        row = self._conn.execute(
            f"SELECT m.created, m.id FROM messages m {_AUTHOR} WHERE {where} "
            "ORDER BY m.created, m.id LIMIT 1 OFFSET ?",
            [*args, position],
        ).fetchone()
        return (row[0], row[1]) if row else None

    def recent_messages(self, platform: str, channel_id: str, limit: int) -> list[tuple[str, str]]:
        """The last `limit` learnable messages of a channel as (speaker, text), oldest first: the conversation
        an impersonation answers. Opted-out, forgotten and bot authors are left out, as in the corpus."""
        if limit <= 0:
            return []
        where, args = self._corpus_where(CorpusFilter())
        rows = self._conn.execute(
            f"SELECT u.speaker, m.text FROM messages m {_AUTHOR} "
            f"JOIN channels c ON c.id = m.channel_id WHERE c.platform = ? AND c.platform_id = ? AND {where} "
            "ORDER BY m.created DESC, m.platform_id DESC LIMIT ?",
            [platform, channel_id, *args, limit],
        ).fetchall()
        return [(speaker, text) for speaker, text in reversed(rows)]

    def iter_corpus(self, filt: CorpusFilter = CorpusFilter()) -> Iterator[CorpusMessage]:
        """Messages that may be learned from, streamed channel by channel (channels in order of their first
        message), each channel in time order."""
        where, args = self._corpus_where(filt)
        labels = self._channel_labels()
        order = self._conn.execute(
            f"SELECT m.channel_id FROM messages m {_AUTHOR} WHERE {where} "
            "GROUP BY m.channel_id ORDER BY min(m.created), m.channel_id",
            args,
        ).fetchall()
        for (channel_id,) in order:
            rows = self._conn.execute(
                f"SELECT u.speaker, m.text, m.created, m.id FROM messages m {_AUTHOR} "
                f"WHERE m.channel_id = ? AND {where} ORDER BY m.created, m.platform_id",
                [channel_id, *args],
            )
            for speaker, text, created, key in rows:
                yield CorpusMessage(speaker, text, labels[channel_id], created, key)
