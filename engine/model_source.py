"""Where the served model comes from, and picking up a new one without a restart.

A source is either one `.onnx` file (reloaded when the file is replaced) or a model registry directory
(the layout export/registry.py writes):

    <registry>/current                     one line: the serving version's name, replaced atomically
    <registry>/versions/<name>/model.onnx  the model; model.copyindex.npy and model.voice.npz beside it
                                           when there are ones

A reload builds the new model completely before swapping one reference, so requests in flight finish on the
model they started with. A broken pointer or file never replaces a working model: it is logged loudly and the
old one keeps serving; at start-up the newest version that loads is used instead.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from engine.copyindex import CopyIndex, index_path_for
from engine.errors import ModelLoadError
from engine.generate import Generator
from engine.session import ModelSession
from engine.speakers import SpeakerDirectory
from engine.voice import VoiceMemory, voice_path_for

log = logging.getLogger(__name__)

CURRENT = "current"
VERSIONS = "versions"
MODEL_FILE = "model.onnx"


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


def load_model(path: str | Path, version: str | None = None, threads: int = 1) -> LoadedModel:
    path = Path(path)
    session = ModelSession(path, threads=threads)
    index_file = index_path_for(path)
    copy_index = None
    if index_file.exists():
        try:
            copy_index = CopyIndex(index_file)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{index_file}: unreadable copy index ({exc})") from exc
    voice_file = voice_path_for(path)
    voice = VoiceMemory(voice_file) if voice_file.exists() else None
    return LoadedModel(version or path.name, path, session, Generator(session, voice),
                       SpeakerDirectory(session.meta_json("speakers", {})), copy_index,
                       session.metadata.get("line_break"), voice)


def is_registry(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / CURRENT).exists() or (p / VERSIONS).is_dir())


class ModelSource:
    """Loads the model a path names and tells when a different one should be served."""

    def __init__(self, path: str | Path, threads: int = 1):
        self.path = Path(path)
        self.threads = threads
        self.registry = is_registry(self.path)
        self._seen: object = None  # what the last poll saw (pointer text or file identity)

    def _identity(self) -> object:
        if self.registry:
            try:
                return (self.path / CURRENT).read_text().strip()
            except OSError:
                return None
        try:
            st = os.stat(self.path)
            return (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    def _load_version(self, version: str) -> LoadedModel:
        if not version or "/" in version or version.startswith("."):
            raise ModelLoadError(f"{self.path / CURRENT}: does not name a version ({version!r})")
        return load_model(self.path / VERSIONS / version / MODEL_FILE, version, self.threads)

    def load_initial(self) -> LoadedModel:
        """The model to start with; in a registry, the newest version that loads if `current` is broken."""
        self._seen = self._identity()
        if not self.registry:
            return load_model(self.path, threads=self.threads)
        try:
            return self._load_version(str(self._seen or ""))
        except ModelLoadError as exc:
            log.error("model registry %s: current version unusable (%s); trying the newest valid one", self.path, exc)
        for candidate in sorted((self.path / VERSIONS).iterdir() if (self.path / VERSIONS).is_dir() else [],
                                key=lambda p: p.name, reverse=True):
            try:
                model = self._load_version(candidate.name)
                log.warning("serving %s from %s", candidate.name, self.path)
                return model
            except ModelLoadError as exc:
                log.error("model registry %s: version %s unusable (%s)", self.path, candidate.name, exc)
        raise ModelLoadError(f"{self.path}: no model version in this registry can be loaded")

    def poll(self) -> LoadedModel | None:
        """A newly promoted or replaced model, fully loaded; None when nothing changed or the change is broken."""
        ident = self._identity()
        if ident == self._seen:
            return None
        self._seen = ident
        try:
            if self.registry:
                return self._load_version(str(ident or ""))
            return load_model(self.path, threads=self.threads)
        except ModelLoadError as exc:
            log.error("new model at %s not loaded, still serving the previous one: %s", self.path, exc)
            return None


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
