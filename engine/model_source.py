"""Where the served model comes from, and picking up a new one without a restart.

A source is either one `.onnx` file (reloaded when it, its copy index or its voice memory is replaced) or a
model registry directory (the layout export/registry.py writes):

    <registry>/current                     one line: the serving version's name, replaced atomically
    <registry>/versions/<name>/model.onnx  the model; model.copyindex.npy and model.voice.npz beside it
                                           (a chat model is never served without its copy index)
    <registry>/promotions.jsonl            the promotion history (below): read only to pick a fallback

A reload builds the new model completely before swapping one reference, so requests in flight finish on the
model they started with. A broken pointer or file never replaces a working model: it is logged loudly and the
old one keeps serving, and what failed is tried again every `retry_seconds` (files fixed in place are picked
up). At start-up, when `current` is broken, the last good version is served instead: the promotion history's
order, never a version that was rolled back (judged worse).

promotions.jsonl (written by export/registry.py, which documents it too) holds one JSON object a line,
{"at": ISO time, "action": "promote" | "rollback" | "repair", "version": name, "previous": name or null,
"reason": text}; a torn or foreign line is skipped. Replayed in order it is a stack: a promote or repair
pushes its version (unless it is already on top), a rollback pops down to its version. The stack from the
top is the fallback order; versions the history never names follow, newest name first; versions it names
but that are no longer on the stack were rolled back and are never a fallback.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.copyindex import CopyIndex, index_path_for
from engine.errors import ModelLoadError, damage
from engine.generate import Generator
from engine.session import ModelSession
from engine.speakers import SpeakerDirectory
from engine.voice import VoiceMemory, voice_path_for

log = logging.getLogger(__name__)

CURRENT = "current"
VERSIONS = "versions"
MODEL_FILE = "model.onnx"
PROMOTIONS_FILE = "promotions.jsonl"
RETRY_SECONDS = 30.0  # how often a model that failed to load is tried again while the old one serves
REBUILD = "`mimic export CKPT OUT.onnx --db PATH` writes it beside the model"


@dataclass(frozen=True)
class LoadedModel:
    version: str
    path: Path
    session: ModelSession
    generator: Generator
    speakers: SpeakerDirectory
    copy_index: CopyIndex | None
    line_break: str | None  # the corpus's stand-in for a message's own line breaks; None for plain text
    voice: VoiceMemory | None = None  # each speaker's way of writing (engine/voice.py), chat models


def load_model(path: str | Path, version: str | None = None, threads: int = 1, *,
               require_copy_index: bool = True) -> LoadedModel:
    """The model at `path` with the files beside it. A chat model (one whose metadata names speakers) is
    refused without its copy index, so it can never post unguarded; `require_copy_index=False` is for
    evaluation, which builds an index itself (bot/evaluation.py)."""
    path = Path(path)
    session = ModelSession(path, threads=threads)
    speakers = SpeakerDirectory(session.meta_json("speakers", {}))
    copy_index = _copy_index(path, required=require_copy_index and len(speakers) > 0)
    voice_file = voice_path_for(path)
    voice = VoiceMemory(voice_file) if voice_file.exists() else None
    return LoadedModel(version or path.name, path, session, Generator(session, voice), speakers, copy_index,
                       session.metadata.get("line_break"), voice)


def _copy_index(model_path: Path, required: bool) -> CopyIndex | None:
    index_file = index_path_for(model_path)
    if index_file.exists():
        return CopyIndex(index_file)  # a damaged file is a ModelLoadError naming it
    if required:
        raise ModelLoadError(f"{index_file}: missing; a chat model is not served without its copy index (the "
                             f"guard against posting a training message word for word); {REBUILD}")
    return None


def is_registry(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / CURRENT).exists() or (p / VERSIONS).is_dir())


def _valid_version(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".") and "\0" not in name


def _pointer(ident: object) -> str:
    """The version name in a registry identity (None: no readable `current`)."""
    return str(ident[0]) if isinstance(ident, tuple) and ident else ""


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def files_identity(model_path: Path) -> tuple[object, ...]:
    """What changes when the model or a file beside it is replaced or rewritten: (inode, mtime, size) of each."""
    return tuple(_stat(p) for p in (model_path, index_path_for(model_path), voice_path_for(model_path)))


def promotion_history(root: Path) -> list[tuple[str, str]]:
    """(action, version) of each readable line of the registry's promotions.jsonl, oldest first."""
    try:
        text = (root / PROMOTIONS_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:  # a line torn by a crash, or not ours
            continue
        if isinstance(event, dict) and isinstance(event.get("version"), str):
            out.append((str(event.get("action", "promote")), event["version"]))
    return out


def promotion_stack(events: Iterable[tuple[str, str]]) -> list[str]:
    """Versions promoted in turn, from (action, version) events oldest first, a rollback popping back to its
    version: the top is what should be current. export/registry.py reads its history with this too."""
    stack: list[str] = []
    for action, version in events:
        if action == "rollback":
            while stack and stack[-1] != version:
                stack.pop()
            if not stack:
                stack.append(version)
        elif not stack or stack[-1] != version:
            stack.append(version)
    return stack


def fallback_versions(root: str | Path) -> list[str]:
    """The versions in `root/versions` to serve when `current` is broken, best first (see the module docstring):
    the promotion stack from the top, then versions the history never names, newest first. Rolled-back ones
    are left out."""
    root = Path(root)
    try:
        present = sorted((d.name for d in (root / VERSIONS).iterdir() if d.is_dir()), reverse=True)
    except OSError:
        return []
    events = list(promotion_history(root))
    named = {version for _, version in events}
    ranked = list(dict.fromkeys(reversed(promotion_stack(events))))
    return [v for v in ranked if v in present] + [v for v in present if v not in named]


class FailureLog:
    """How a failed load is logged: one line for a ModelLoadError. Anything else is a damaged file nobody
    foresaw or a bug of ours: its traceback is logged the first time, so it is never hidden, and a retry of the
    same failure logs one line, not the traceback again."""

    def __init__(self) -> None:
        self._traced: set[tuple[str, str]] = set()

    def __call__(self, what: str, exc: BaseException) -> None:
        if isinstance(exc, ModelLoadError):
            log.error("%s: %s", what, exc)
            return
        key = (what, damage(exc))
        if key in self._traced:
            log.error("%s: %s (traceback logged earlier)", what, damage(exc))
            return
        if len(self._traced) > 100:
            self._traced.clear()
        self._traced.add(key)
        log.error("%s: %s", what, damage(exc), exc_info=exc)


class ModelSource:
    """Loads the model a path names and tells when a different one should be served."""

    def __init__(self, path: str | Path, threads: int = 1, *, retry_seconds: float = RETRY_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self.threads = threads
        self.registry = is_registry(self.path)
        self.retry_seconds = retry_seconds
        self.clock = clock
        self._seen: object = None  # the identity of what is being served; set only once it loaded
        self._failed: tuple[object, float] | None = None  # an identity that failed to load, and when
        self._log_failure = FailureLog()

    def _identity(self) -> object:
        """The served files' identity: the pointer and its version's files in a registry, else the file and
        the files beside it. Any change to it means a reload."""
        if not self.registry:
            return files_identity(self.path)
        try:
            name = (self.path / CURRENT).read_text().strip()
        except OSError:
            return None
        return self._version_identity(name)

    def _version_identity(self, name: str) -> tuple[object, ...]:
        if not _valid_version(name):
            return (name,)
        return (name, *files_identity(self.path / VERSIONS / name / MODEL_FILE))

    def _load_version(self, version: str) -> LoadedModel:
        if not _valid_version(version):
            raise ModelLoadError(f"{self.path / CURRENT}: does not name a version ({version!r})")
        return load_model(self.path / VERSIONS / version / MODEL_FILE, version, self.threads)

    def _load(self, ident: object) -> LoadedModel:
        if not self.registry:
            if self.path.is_dir():  # a folder with no `current` or versions/ (yet): an empty registry
                raise ModelLoadError(f"{self.path}: an empty model registry (no versions in it yet)")
            return load_model(self.path, threads=self.threads)
        if ident is None:
            raise ModelLoadError(f"{self.path / CURRENT}: missing or unreadable")
        return self._load_version(_pointer(ident))

    def load_initial(self) -> LoadedModel:
        """The model to start with; in a registry, the last good version that loads if `current` is broken."""
        ident = self._identity()
        try:
            model = self._load(ident)
        except Exception as exc:
            if not self.registry:
                if isinstance(exc, ModelLoadError):
                    raise  # the caller says it in one line (ModelGate: "no model loaded yet")
                self._log_failure(f"model {self.path} not loaded", exc)  # unforeseen: with its traceback
                raise ModelLoadError(f"{self.path}: cannot be loaded ({damage(exc)})") from exc
            self._log_failure(f"model registry {self.path}: current version unusable; trying the last good one", exc)
            self._failed = (ident, self.clock())  # poll() tries `current` again after retry_seconds
            return self._fallback(_pointer(ident))
        self._seen = ident
        return model

    def _fallback(self, broken: str) -> LoadedModel:
        for name in fallback_versions(self.path):
            if name == broken:
                continue
            ident = self._version_identity(name)
            try:
                model = self._load_version(name)
            except Exception as exc:
                self._log_failure(f"model registry {self.path}: version {name} unusable", exc)
                continue
            log.warning("serving %s from %s", name, self.path)
            self._seen = ident
            return model
        raise ModelLoadError(f"{self.path}: no model version in this registry can be loaded")

    def poll(self) -> LoadedModel | None:
        """A newly promoted or replaced model, fully loaded; None when nothing changed or the change is broken
        (then tried again once `retry_seconds` have passed, or at once when the files change again)."""
        ident = self._identity()
        if ident == self._seen:
            return None
        now = self.clock()
        if self._failed is not None and self._failed[0] == ident and now - self._failed[1] < self.retry_seconds:
            return None
        try:
            model = self._load(ident)
        except Exception as exc:
            self._failed = (ident, now)
            self._log_failure(f"new model at {self.path} not loaded, still serving the previous one", exc)
            return None
        self._seen, self._failed = ident, None
        return model


class ModelHolder:
    """The model being served, swapped atomically when the source changes."""

    def __init__(self, source: ModelSource, model: LoadedModel | None = None):
        self.source = source
        self._model = model or source.load_initial()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def open(cls, path: str | Path, threads: int = 1) -> ModelHolder:
        return cls(ModelSource(path, threads))

    def get(self) -> LoadedModel:
        return self._model  # one reference read: a caller keeps the model it got for its whole request

    def refresh(self) -> bool:
        """Check the source once; True when a new model is now being served."""
        with self._lock:
            new = self.source.poll()
            if new is None:
                return False
            old, self._model = self._model, new
        log.info("now serving model %s (was %s)", new.version, old.version)
        if old.voice is not None and new.voice is None:
            log.warning("model %s has no voice memory (%s); its messages read less like each person",
                        new.version, voice_path_for(new.path))
        return True

    def watch(self, interval: float = 5.0) -> None:
        """Check for a new model every `interval` seconds in a daemon thread."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except Exception:  # a watcher must never die: log and keep serving
                    log.exception("checking for a new model failed")

        self._thread = threading.Thread(target=loop, name="mimic-model-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
