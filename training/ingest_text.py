"""Import plain text (`mimic ingest --format text`), like Darknet's `-file`.

Two shapes:
- `speaker` given: every non-blank line is one message by that speaker; the file is the channel.
- otherwise lines in `name: text` form. A line indented by spaces or a tab continues the message before it
  (on a new line); a line `# name ...` starts a channel called `name` (the shape of a `handle: text`
  transcript); a blank line ends a message. Other lines are skipped and counted in one warning.

Plain text has no times: line order is time. A message's `created` is the number of the line it starts
on (as seconds from the Unix epoch, so text messages sort before any dated chat message), and so is its id,
so importing the same file again changes nothing and the held-out split takes the end of the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from training import normalize
from training.errors import BadInputError
from training.ingest_batch import BatchWriter, IngestProgress, IngestReport, ProgressFn
from training.store import ChannelRecord, MessageRecord, Store, UserRecord

PLATFORM = "text"
WORKSPACE = "text"
MAX_TEXT_CHARS = 100_000
_NAMED_LINE = re.compile(r"^(?P<name>[^\s:][^:\n]{0,63}?): (?P<text>.*)$")
_CHANNEL_LINE = re.compile(r"^# (?P<name>\S+)")


def _lines(path: Path, report: IngestReport) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) of a UTF-8 file; bad bytes become U+FFFD with a warning."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline=None) as fp:
        warned = False
        for number, line in enumerate(fp, 1):
            if not warned and re.search(r"[\udc80-\udcff]", line):
                report.warn(f"{path}: not valid UTF-8 (line {number}); undecodable bytes replaced")
                warned = True
            yield number, line.rstrip("\n")


def _named_messages(path: Path, report: IngestReport) -> Iterator[tuple[str, int, str, str]]:
    """(channel, first line, speaker, raw text) of a `name: text` file."""
    channel = path.name
    current: tuple[str, int, str, list[str]] | None = None
    unparsed = 0
    for number, line in _lines(path, report):
        if current is not None and line[:1] in (" ", "\t") and line.strip():
            current[3].append(line[4:] if line.startswith("    ") else line.strip())
            continue
        if current is not None:
            yield current[0], current[1], current[2], "\n".join(current[3])
            current = None
        named = _NAMED_LINE.match(line)
        if named:
            current = (channel, number, named["name"], [named["text"]])
        elif _CHANNEL_LINE.match(line):
            channel = _CHANNEL_LINE.match(line)["name"]  # type: ignore[index]
        elif line.strip():
            unparsed += 1
    if current is not None:
        yield current[0], current[1], current[2], "\n".join(current[3])
    if unparsed:
        report.warn(f"{path}: {unparsed} lines not in `name: text` form skipped")


def _transcript_lines(path: Path) -> tuple[int, int]:
    """(lines that start a `name: text` message, other lines that are neither blank, continued nor a channel)."""
    named = other = 0
    for _, line in _lines(path, IngestReport()):
        if not line.strip() or line[:1] in (" ", "\t") or _CHANNEL_LINE.match(line):
            continue
        if _NAMED_LINE.match(line):
            named += 1
        else:
            other += 1
    return named, other


def _check_transcript(path: Path) -> None:
    """A file that is mostly not `name: text` lines is prose, not a chat: its few lines with a colon would make
    speakers of phrases ("Give me thy hand"). Refused before anything is stored."""
    named, other = _transcript_lines(path)
    if not named:
        raise BadInputError(f"{path}: no `name: text` lines; pass --speaker NAME for one person's text")
    if other > named:
        raise BadInputError(f"{path}: {other:,} of {named + other:,} lines are not in `name: text` form, so it is "
                            "not a chat transcript; pass --speaker NAME to learn it as one person's text, or "
                            "train on the file itself (mimic train FILE)")


def _speaker_messages(path: Path, speaker: str, report: IngestReport) -> Iterator[tuple[str, int, str, str]]:
    for number, line in _lines(path, report):
        if line.strip():
            yield path.name, number, speaker, line


def _ingest_file(path: Path, store: Store, writer: BatchWriter, speaker: str | None) -> None:
    report = writer.report
    messages = _speaker_messages(path, speaker, report) if speaker else _named_messages(path, report)
    users: set[str] = set()
    channels: set[str] = set()
    for channel, number, name, raw in messages:
        channel_id = path.name if channel == path.name else f"{path.name}#{channel}"
        if channel_id not in channels:
            store.upsert_channel(ChannelRecord(PLATFORM, channel_id, channel, WORKSPACE, "public"))
            channels.add(channel_id)
        if len(raw) > MAX_TEXT_CHARS:
            report.skipped["too long"] += 1
            report.warn(f"{path}: the message on line {number} has {len(raw)} characters; skipped")
            continue
        text = normalize.clean_text(raw)  # also turns undecodable bytes (lone surrogates) into U+FFFD
        user_id = normalize.clean_text(name)
        if not text or not user_id:
            report.skipped["empty"] += 1
            continue
        if user_id not in users:
            users.add(user_id)
            report.add_collisions(
                store.upsert_users([UserRecord(PLATFORM, user_id, handle=user_id, workspace_id=WORKSPACE)])
            )
        writer.add([MessageRecord(PLATFORM, channel_id, f"L{number}", user_id, text, float(number))])


def ingest_text_files(
    paths: list[str | Path],
    store: Store,
    *,
    speaker: str | None = None,
    progress: ProgressFn | None = None,
    report: IngestReport | None = None,
) -> IngestReport:
    """Import plain-text files: one `speaker`, or `name: text` lines."""
    report = report if report is not None else IngestReport()
    files = [Path(p) for p in paths]
    for path in files:
        if path.is_dir():
            raise BadInputError(f"{path}: a folder; give the text files in it (e.g. {path}/*.txt)")
        if not path.is_file():
            raise BadInputError(f"{path}: no such file")
    if speaker is not None and not normalize.clean_text(speaker):
        raise BadInputError("--speaker needs a name")
    if speaker is None:
        for path in files:
            _check_transcript(path)
    store.upsert_workspace(PLATFORM, WORKSPACE, "plain text")
    writer = BatchWriter(store, report)
    for done, path in enumerate(files, 1):
        _ingest_file(path, store, writer, speaker)
        report.files += 1
        if progress is not None:
            progress(IngestProgress(str(path), done, len(files), report.stored))
    writer.flush()
    return report
