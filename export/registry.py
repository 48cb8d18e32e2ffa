"""The model registry: every trained model is a version directory; `current` names the one being served.

Layout (engine/model_source.py reads only `current` and `versions/`; the rest is ours):

    <registry>/current                  one line: the serving version's name; replaced atomically
    <registry>/versions/<name>/         complete versions that were promoted at least once
        model.onnx                      the served model (parity-checked at export)
        model.copyindex.npy             the verbatim-copy index beside it; required for a chat model (one
                                        whose manifest lists speakers): the engine refuses to serve one without
        model.voice.npz                 each speaker's voice memory (chat models)
        checkpoint.pt                   weights + optimiser, for the next night's warm start
        manifest.json                   what this version is (see below)
    <registry>/rejected/<name>/         complete candidates that were not promoted (same files)
    <registry>/staging/<name>/          a version being written; never served, never promotable
    <registry>/promotions.jsonl         promotion history, one JSON object a line (below)
    <registry>/runs.jsonl               retraining run log: each run's start, outcome and reason
    <registry>/.lock                    flock held while the registry is being changed

Why this shape:
- A version enters `versions/` or `rejected/` by one rename from `staging/`, after every file in it was
  fsynced, so a reader never sees half a version. A crash (even SIGKILL) leaves at most a `staging/` entry,
  which the next run resumes from or removes.
- Rejected candidates live outside `versions/` because the engine, when `current` is broken at start-up,
  serves a loadable directory in `versions/`: that must never be a model judged worse. It tries them in the
  promotion history's order and skips rolled-back ones (engine/model_source.py fallback_versions, which reads
  promotions.jsonl itself: the engine imports nothing of ours).
- Names are `YYYYMMDD-HHMMSS-<6 hex>` in UTC, so sorting by name (what the engine does) is by time.
- `current` is written as a new file, fsynced, renamed over the old one, and the directory fsynced.

promotions.jsonl: one JSON object a line, {"at": ISO-8601 UTC, "action": "promote" | "rollback" | "repair",
"version": name, "previous": name or null, "reason": text}, appended and fsynced; a torn line is skipped by
readers. Replayed in order it is a stack (promotion_stack): promote and repair push their version unless it
is on top already, rollback pops down to its version. Versions named by it but no longer on the stack were
rolled back. engine/model_source.py reads this format too: change both together.

manifest.json (written by the retraining job; every field optional to readers):
    name, created (ISO-8601 UTC), status (training | promoted | rejected), parent (the version whose checkpoint
    this one started from, or null), lineage_started (when the from-scratch ancestor was created),
    data {watermark {last_message, messages}, train_chars, valid_chars, train_messages, valid_messages},
    speakers {speaker: messages}, model {ModelConfig}, parameters,
    training {mode, why, init_from, resumed_from, steps, elapsed, chars_per_sec, device, time_budget, step_budget},
    evaluation {eval_chars, bpc, copy_rate, samples, current, current_bpc, current_copy_rate},
    val_bpc (this version's bits/char on the evaluation slice), decision {promoted, reason, at}.

Standard library only: `mimic models list` and the bots read the registry without torch.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from export.errors import RegistryError
from training.atomic import FILE_MODE, fsync_dir, write_atomic

log = logging.getLogger(__name__)

CURRENT = "current"  # these three names are shared with engine/model_source.py
VERSIONS = "versions"
MODEL_FILE = "model.onnx"
REJECTED = "rejected"
STAGING = "staging"
CHECKPOINT_FILE = "checkpoint.pt"
MANIFEST_FILE = "manifest.json"
PROMOTIONS_FILE = "promotions.jsonl"
RUNS_FILE = "runs.jsonl"
LOCK_FILE = ".lock"
COPY_INDEX_FILE = "model.copyindex.npy"  # engine/copyindex.py index_path_for(model.onnx)
REQUIRED_FILES = (MODEL_FILE, CHECKPOINT_FILE)


def required_files(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The files a version must have: a chat model (its manifest lists speakers) also its copy index, without
    which the engine refuses to serve it (it would post training messages word for word)."""
    return (*REQUIRED_FILES, COPY_INDEX_FILE) if manifest.get("speakers") else REQUIRED_FILES


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def version_name(moment: datetime | None = None) -> str:
    """`20261128-031500-1a2b3c`: sorts by creation time; the random tail keeps two runs apart."""
    return f"{(moment or utc_now()).astimezone(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _valid_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".") and "\x00" not in name


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it (a log line that a crash can lose is not a log). A line torn by a
    crash is ended first, so it costs only itself, not the record written after it."""
    line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    with open(path, "ab+") as f:
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = b"\n" + line
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a log; a torn or foreign line (a crash mid-append) is skipped, not fatal."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: not a JSON line; skipped", path, n)
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _fsync_tree(path: Path) -> None:
    """Make every file of a finished version durable and readable by the bot processes (mkstemp, which
    atomic writers use, creates files only their owner can read)."""
    for p in path.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fchmod(f.fileno(), FILE_MODE)  # files written by other tools (torch.save, numpy) too
                os.fsync(f.fileno())
    fsync_dir(path)


@dataclass(frozen=True)
class VersionInfo:
    name: str
    state: str  # promoted (in versions/) | rejected | incomplete (in staging/)
    path: Path
    manifest: dict[str, Any]
    current: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**self.manifest, "name": self.name, "state": self.state, "current": self.current}


class Registry:
    """One registry directory. Methods that change it hold `.lock` (flock) for their few milliseconds."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.versions = self.root / VERSIONS
        self.rejected = self.root / REJECTED
        self.staging = self.root / STAGING

    @classmethod
    def open(cls, root: str | Path, *, create: bool = False) -> Registry:
        reg = cls(root)
        if create:
            try:
                for d in (reg.versions, reg.rejected, reg.staging):
                    d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(f"{reg.root}: cannot create the model registry ({exc.strerror})") from exc
        elif reg.root.is_file():
            raise RegistryError(f"{reg.root}: is a single model file, not a registry directory; retraining "
                                "needs a directory (set [storage] model to \"\" or a directory)")
        elif not reg.versions.is_dir():
            raise RegistryError(f"{reg.root}: no model registry here yet; run `mimic retrain` to create one")
        return reg

    # ---- locking -----------------------------------------------------------------------------------------

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise changes (a nightly promotion and an admin's rollback must not interleave)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # ---- reading -----------------------------------------------------------------------------------------

    def pointer(self) -> str | None:
        """What `current` says, stripped; None when there is no readable pointer."""
        try:
            return (self.root / CURRENT).read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return None

    def usable(self, name: str) -> bool:
        """A promoted version whose files are all there (the engine could serve it; we could warm-start)."""
        if not _valid_name(name):
            return False
        return not self.missing_files(self.versions / name)

    def missing_files(self, d: Path) -> list[str]:
        """The files version directory `d` lacks to be served and warm-started from."""
        if not (d / MANIFEST_FILE).is_file():
            return [MANIFEST_FILE]
        return [f for f in required_files(self._read_manifest(d)) if not (d / f).is_file()]

    def current(self) -> str | None:
        """The serving version when `current` names a usable one, else None."""
        name = self.pointer()
        return name if name and self.usable(name) else None

    def pointer_problem(self) -> str | None:
        """Why `current` cannot be served (one line), or None when it can."""
        name = self.pointer()
        if name is None:
            return f"{self.root / CURRENT} is missing" if not (self.root / CURRENT).exists() else \
                f"{self.root / CURRENT} is unreadable"
        if not _valid_name(name):
            return f"{self.root / CURRENT} does not name a version ({name[:40]!r})"
        if not self.usable(name):
            return f"version {name} named by {self.root / CURRENT} is missing files"
        return None

    def locate(self, name: str) -> tuple[str, Path] | None:
        """(state, directory) of a version by name."""
        if not _valid_name(name):
            return None
        for state, base in (("promoted", self.versions), ("rejected", self.rejected), ("incomplete", self.staging)):
            if (base / name).is_dir():
                return state, base / name
        return None

    def manifest(self, name: str) -> dict[str, Any]:
        found = self.locate(name)
        if found is None:
            raise RegistryError(f"{self.root}: no version {name!r}; see `mimic models list`")
        return self._read_manifest(found[1])

    @staticmethod
    def _read_manifest(d: Path) -> dict[str, Any]:
        try:
            value = json.loads((d / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def list_versions(self) -> list[VersionInfo]:
        """Every version (promoted, rejected, incomplete), oldest first."""
        current = self.pointer()
        out = []
        for state, base in (("promoted", self.versions), ("rejected", self.rejected), ("incomplete", self.staging)):
            if not base.is_dir():
                continue
            for d in base.iterdir():
                if d.is_dir() and _valid_name(d.name):
                    out.append(VersionInfo(d.name, state, d, self._read_manifest(d),
                                           state == "promoted" and d.name == current))
        return sorted(out, key=lambda v: v.name)

    def checkpoint(self, name: str) -> Path:
        return self.versions / name / CHECKPOINT_FILE

    def model_path(self, name: str) -> Path:
        return self.versions / name / MODEL_FILE

    # ---- promotion history -------------------------------------------------------------------------------

    def history(self) -> list[dict[str, Any]]:
        return read_lines(self.root / PROMOTIONS_FILE)

    def promotion_stack(self) -> list[str]:
        """Versions promoted in turn, with rolled-back ones popped: the top is what should be current (read
        as the bots read it when `current` is broken: engine/model_source.py)."""
        from engine.model_source import promotion_stack

        return promotion_stack((str(e.get("action")), e["version"]) for e in self.history()
                               if isinstance(e.get("version"), str))

    def rollback_target(self) -> str | None:
        """The version promoted before the current one that is still there to go back to."""
        current = self.pointer()
        stack = self.promotion_stack()
        if current in stack:
            stack = stack[:len(stack) - 1 - stack[::-1].index(current)]  # below current's last promotion
        for name in reversed(stack):
            if name != current and self.usable(name):
                return name
        return None

    def last_good(self) -> str | None:
        """The newest promoted version that is still usable, never a rolled-back one: the baseline when
        `current` is broken."""
        for name in reversed(self.promotion_stack()):
            if self.usable(name):
                return name
        named = {e.get("version") for e in self.history()}  # named but off the stack: rolled back
        promoted = sorted(v.name for v in self.list_versions()
                          if v.state == "promoted" and v.name not in named and self.usable(v.name))
        return promoted[-1] if promoted else None

    # ---- changing ------------------------------------------------------------------------------------------

    def _set_pointer(self, name: str) -> None:
        write_atomic(self.root / CURRENT, (name + "\n").encode("utf-8"))

    def _record(self, action: str, version: str, previous: str | None, reason: str) -> None:
        append_line(self.root / PROMOTIONS_FILE, {"at": iso(utc_now()), "action": action, "version": version,
                                                  "previous": previous, "reason": reason})

    def promote(self, name: str, reason: str, action: str = "promote",
                check: Callable[[Path], None] | None = None) -> str | None:
        """Make `name` current (a rejected candidate is moved into versions/ first). Returns the previous one.
        `check(model path)` raises when the model cannot be served (`mimic models promote` loads it with the
        engine); it runs before the lock is taken, since loading a model takes a while."""
        if check is not None:
            found = self.locate(name)
            if found is not None and found[0] != "incomplete" and not self.missing_files(found[1]):
                check(found[1] / MODEL_FILE)
        with self.lock():
            found = self.locate(name)
            if found is None:
                raise RegistryError(f"{self.root}: no version {name!r}; see `mimic models list`")
            state, path = found
            if state == "incomplete":
                raise RegistryError(f"version {name} is incomplete (its run did not finish); it cannot be promoted")
            missing = self.missing_files(path)
            if missing:  # checked before a rejected candidate moves: a refused one stays where it was
                raise RegistryError(f"version {name} is missing {', '.join(missing)}; it cannot be promoted")
            if state == "rejected":
                self._decide(path, True, reason)
                os.rename(path, self.versions / name)
                fsync_dir(self.rejected)
                fsync_dir(self.versions)
            previous = self.pointer()
            if previous == name:
                return previous
            self._set_pointer(name)
            self._record(action, name, previous, reason)
        log.info("model registry %s: %s %s (was %s): %s", self.root, action, name, previous, reason)
        return previous

    def rollback(self, reason: str = "rolled back by hand",
                 check: Callable[[Path], None] | None = None) -> tuple[str, str | None]:
        """Serve the previously promoted version again. Returns (now current, was current). `check`: as promote's."""
        target = self.rollback_target()
        if target is None:
            raise RegistryError(f"{self.root}: nothing to roll back to (no earlier promoted version is left)")
        previous = self.promote(target, reason, action="rollback", check=check)
        return target, previous

    def repair_pointer(self, name: str, reason: str) -> None:
        """Point `current` at a known-good version after finding it broken."""
        self.promote(name, reason, action="repair")

    @staticmethod
    def _decide(path: Path, promoted: bool, reason: str) -> None:
        manifest = Registry._read_manifest(path)
        manifest["status"] = "promoted" if promoted else "rejected"
        manifest["decision"] = {"promoted": promoted, "reason": reason, "at": iso(utc_now())}
        write_json(path / MANIFEST_FILE, manifest)

    # ---- writing new versions ------------------------------------------------------------------------------

    def start(self, name: str, manifest: dict[str, Any]) -> Path:
        """A new staging directory for version `name`, with its first manifest (status training)."""
        if not _valid_name(name) or self.locate(name) is not None:
            raise RegistryError(f"{self.root}: version name {name!r} is invalid or taken")
        d = self.staging / name
        d.mkdir(parents=True)
        write_json(d / MANIFEST_FILE, {**manifest, "name": name, "status": "training"})
        return d

    def update_staging(self, name: str, **fields: Any) -> None:
        d = self.staging / name
        write_json(d / MANIFEST_FILE, {**self._read_manifest(d), **fields})

    def staging_versions(self) -> list[VersionInfo]:
        return [v for v in self.list_versions() if v.state == "incomplete"]

    def discard(self, name: str) -> None:
        """Remove a staging directory (a failed or abandoned run)."""
        d = self.staging / name
        if _valid_name(name) and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
            fsync_dir(self.staging)

    def commit(self, name: str, manifest: dict[str, Any], *, promote: bool, reason: str) -> Path:
        """Finish a staged version: final manifest, fsync everything, one rename into versions/ (and make it
        current) or into rejected/ (current stays)."""
        src = self.staging / name
        missing = [f for f in required_files(manifest) if not (src / f).is_file()]
        if missing:
            raise RegistryError(f"version {name} is incomplete (no {', '.join(missing)}); not committed")
        for leftover in src.glob(".*"):  # temporary files of an interrupted atomic write
            leftover.unlink(missing_ok=True)
        decision = {"promoted": promote, "reason": reason, "at": iso(utc_now())}
        write_json(src / MANIFEST_FILE, {**manifest, "name": name, "status": "promoted" if promote else "rejected",
                                         "decision": decision})
        _fsync_tree(src)
        with self.lock():
            dest = (self.versions if promote else self.rejected) / name
            os.rename(src, dest)
            fsync_dir(self.staging)
            fsync_dir(dest.parent)
        if promote:
            self.promote(name, reason, action="promote")
        return dest

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest `keep` promoted versions and `keep` rejected ones; never the current
        version, its parent, or the version a rollback would go back to. Returns the names deleted."""
        if keep < 1:
            raise RegistryError(f"keep_versions must be at least 1 (got {keep})")
        with self.lock():
            current = self.pointer()
            protected = {n for n in (current, self.rollback_target(), self.last_good()) if n}
            if current and self.locate(current):
                parent = self.manifest(current).get("parent")
                if isinstance(parent, str):
                    protected.add(parent)
            deleted = []
            for base in (self.versions, self.rejected):
                names = sorted((d.name for d in base.iterdir() if d.is_dir()), reverse=True) if base.is_dir() else []
                for name in names[keep:]:
                    if name in protected:
                        continue
                    shutil.rmtree(base / name, ignore_errors=True)
                    deleted.append(name)
                if base.is_dir():
                    fsync_dir(base)
        if deleted:
            log.info("model registry %s: deleted old versions %s", self.root, ", ".join(sorted(deleted)))
        return sorted(deleted)

    # ---- run log -------------------------------------------------------------------------------------------

    def log_run(self, record: dict[str, Any]) -> None:
        append_line(self.root / RUNS_FILE, record)

    def runs(self) -> list[dict[str, Any]]:
        return read_lines(self.root / RUNS_FILE)
