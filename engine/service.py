"""Serve impersonation requests from many threads with one loaded model, batching those that arrive together.

Requests are queued; one worker thread takes the first, waits `batch_window` seconds for more (up to
`max_rows` messages), and generates them all in one batch. Each batch reads the served model once, so a model
promoted meanwhile is used from the next batch on and requests in flight finish on the one they started with.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

from engine.errors import EngineError
from engine.impersonate import Impersonation, ImpersonationConfig, Job, impersonate_batch
from engine.model_source import ModelHolder

log = logging.getLogger(__name__)


class ImpersonationService:
    def __init__(self, holder: ModelHolder, cfg: ImpersonationConfig = ImpersonationConfig(),
                 batch_window: float = 0.01, max_rows: int = 64):
        self.holder = holder
        self.cfg = cfg
        self.batch_window = batch_window
        self.max_rows = max_rows
        self._queue: queue.Queue[tuple[Job, Future] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.batches_run = 0  # for health logs and tests: how many batches served how many jobs
        self.jobs_run = 0

    def submit(self, job: Job) -> Future:
        """Queue a job; the future resolves to its messages or raises the EngineError to show the user."""
        fut: Future = Future()
        self._ensure_worker()
        self._queue.put((job, fut))
        return fut

    def impersonate(self, speaker: str, context: Sequence[tuple[str, str]] | None = None, prompt: str | None = None,
                    n: int = 1, temperature: float | None = None, srand: int | None = None,
                    opted_out: frozenset[str] = frozenset(), timeout: float | None = None) -> list[Impersonation]:
        job = Job(speaker, context, prompt, n, temperature, srand, opted_out)
        return self.submit(job).result(timeout)

    def close(self) -> None:
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._queue.put(None)
            worker.join(timeout=10)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="mimic-generate", daemon=True)
                self._worker.start()

    def _collect(self, first: tuple[Job, Future]) -> list[tuple[Job, Future]]:
        batch, rows = [first], first[0].n
        deadline = time.monotonic() + self.batch_window
        while rows < self.max_rows:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(0.0, remaining)) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:  # closing: finish this batch, then stop
                self._queue.put(None)
                break
            batch.append(item)
            rows += item[0].n
        return batch

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._collect(first)
            model = self.holder.get()
            try:
                results = impersonate_batch(model, [job for job, _ in batch], self.cfg)
            except Exception as exc:  # a bug: fail these requests, keep serving the next ones
                log.exception("generation failed for a batch of %d requests", len(batch))
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            self.batches_run += 1
            self.jobs_run += len(batch)
            for (_, fut), result in zip(batch, results, strict=True):
                if isinstance(result, EngineError):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
