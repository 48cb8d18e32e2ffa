"""`mimic ingest PATH...`: tell each path's format and hand it to its importer.

Formats: `slack` (an official export, zip or folder), `discord` (DiscordChatExporter JSON files, or folders
of them) and `text` (plain text, never guessed from content: only for `.txt` files or `--format text`).
All Discord files of one run go to the importer together, so mentions can name channels across files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from training.errors import BadInputError
from training.ingest_batch import IngestReport, ProgressFn
from training.ingest_discord import ingest_discord_exports
from training.ingest_slack import ingest_slack_export
from training.ingest_text import ingest_text_files
from training.store import Store

FORMATS = ("slack", "discord", "text")
_TEXT_SUFFIXES = frozenset({".txt", ".text", ".log"})


def detect_format(path: Path) -> str:
    """The format of one path, from its shape; raises BadInputError when it cannot tell."""
    if not path.exists():
        raise BadInputError(f"{path}: no such file or folder")
    if path.is_dir():
        if any((path / name).is_file() for name in ("users.json", "channels.json")):
            return "slack"
        if any(p.is_dir() and (p / "users.json").is_file() for p in path.iterdir()):
            return "slack"  # an export unzipped into a folder of its own
        if any(path.glob("*.json")):
            return "discord"
    elif path.suffix.lower() == ".zip":
        return "slack"
    elif path.suffix.lower() == ".json":
        return "discord"
    elif path.suffix.lower() in _TEXT_SUFFIXES:
        return "text"
    raise BadInputError(f"{path}: cannot tell its format; pass --format {'|'.join(FORMATS)}")


def ingest_paths(
    store: Store,
    paths: Sequence[str | Path],
    *,
    fmt: str | None = None,
    speaker: str | None = None,
    include_bots: bool = False,
    include_private: bool = False,
    progress: ProgressFn | None = None,
) -> IngestReport:
    """Import every path into `store`; `fmt` forces one format for all of them."""
    if fmt is not None and fmt not in FORMATS:
        raise BadInputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    resolved = [(Path(p), fmt or detect_format(Path(p))) for p in paths]
    if speaker is not None and any(kind != "text" for _, kind in resolved):
        raise BadInputError("--speaker is for plain text only (--format text)")
    report = IngestReport()
    for path, kind in resolved:
        if kind == "slack":
            ingest_slack_export(
                path, store, include_bots=include_bots, include_private=include_private,
                progress=progress, report=report,
            )
    discord = [p for p, kind in resolved if kind == "discord"]
    if discord:
        ingest_discord_exports(
            discord, store, include_bots=include_bots, include_private=include_private,
            progress=progress, report=report,
        )
    text = [p for p, kind in resolved if kind == "text"]
    if text:
        ingest_text_files(text, store, speaker=speaker, progress=progress, report=report)
    return report
