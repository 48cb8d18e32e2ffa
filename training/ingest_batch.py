"""What every importer shares: the report of one run, progress events, and batched writes to the store.

Importers never draw: they call a progress function with `IngestProgress` and log warnings (which the CLI
shows on stderr). Messages go to the store through `BatchWriter`, one transaction per batch, so a run that
fails halfway leaves every earlier batch stored and nothing of the failed one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from training.store import MessageRecord, NameCollision, Store

log = logging.getLogger(__name__)

BATCH_SIZE = 5000
_COLLISIONS_SHOWN = 10
_MAX_WARNINGS = 200  # a report keeps this many; the log has them all


@dataclass(frozen=True)
class IngestProgress:
    source: str  # the export, file or API being read
    files_done: int  # files (or, for the Web API, channels) finished in this source
    files_total: int
    messages: int  # messages stored so far in this run (for the Web API: fetched)


ProgressFn = Callable[[IngestProgress], None]


@dataclass
class IngestReport:
    """Counts of one run; `skipped` maps a reason ("subtype channel_join", "bot", "empty") to a count."""

    files: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    collisions: list[NameCollision] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return self.new + self.updated + self.unchanged

    def warn(self, message: str) -> None:
        log.warning("%s", message)
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(message)

    def add_collisions(self, collisions: Iterable[NameCollision]) -> None:
        for c in collisions:
            self.collisions.append(c)
            if len(self.collisions) <= _COLLISIONS_SHOWN:  # a whole team seen again elsewhere: the count says it
                self.warn(f"speaker name '{c.wanted}' is taken; {c.platform} user {c.platform_id} is '{c.speaker}' "
                          f"(the same person? `mimic link {c.wanted} {c.speaker}`)")

    def summary(self) -> str:
        text = (
            f"{self.stored} messages from {self.files} files: {self.new} new, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.deleted} deleted"
        )
        if self.skipped:
            top = ", ".join(f"{reason} {n}" for reason, n in self.skipped.most_common(6))
            more = ", ..." if len(self.skipped) > 6 else ""
            text += f"; skipped {sum(self.skipped.values())} ({top}{more})"
        if len(self.collisions) > _COLLISIONS_SHOWN:
            text += (f"; {len(self.collisions)} people took another name, as theirs was taken by someone on another "
                     "platform or workspace (the first few are in the warnings; `mimic link NAME OTHER` makes two "
                     "accounts one person)")
        return text


class BatchWriter:
    """Collects messages and writes them `batch_size` at a time, updating the report."""

    def __init__(self, store: Store, report: IngestReport, batch_size: int | None = None) -> None:
        self.store = store
        self.report = report
        self.batch_size = batch_size or BATCH_SIZE
        self._pending: list[MessageRecord] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, records: Iterable[MessageRecord]) -> None:
        for record in records:
            self._pending.append(record)
            if len(self._pending) >= self.batch_size:
                self.flush()

    def delete(self, platform: str, channel_id: str, message_id: str) -> None:
        """A message the source says was deleted: write what came before it first, then remove it."""
        self.flush()
        if self.store.delete_message(platform, channel_id, message_id):
            self.report.deleted += 1

    def flush(self) -> None:
        if not self._pending:
            return
        result = self.store.upsert_messages(self._pending)
        self._pending = []
        self.report.new += result.new
        self.report.updated += result.updated
        self.report.unchanged += result.unchanged
