"""Text as bytes, cut into parallel streams for truncated backpropagation through time.

The text is split into `streams` contiguous regions; step s reads window s of every region, so the hidden
state carried from one step to the next continues the same text (as Darknet and char-rnn do). When every
region has been read, the next epoch starts from the beginning of each region with a fresh state.
A chat corpus may come with the speaker slot of every byte (training/speaker_slots.py), cut the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.errors import BadInputError


def read_text_file(path: str | Path) -> bytes:
    """Read a training text as raw bytes; a clear error for anything a user could get wrong."""
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{p}: no such file")
    if p.is_dir():
        raise BadInputError(f"{p}: is a directory; give a text file (or --db for a chat store)")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BadInputError(f"{p}: cannot read ({exc.strerror})") from exc
    if not data:
        raise BadInputError(f"{p}: the file is empty")
    return data


def split_holdout(data: bytes, fraction: float) -> tuple[bytes, bytes]:
    """The last `fraction` of the text is held out for validation."""
    if not 0.0 < fraction < 1.0:
        raise BadInputError(f"the held-out fraction must be between 0 and 1, not {fraction}")
    cut = len(data) - max(2, int(len(data) * fraction))
    return data[:cut], data[cut:]


@dataclass(frozen=True)
class Batch:
    x: np.ndarray  # (B, T) int64 input bytes
    y: np.ndarray  # (B, T) int64 next bytes
    reset: bool  # the streams start over: the carried hidden state must be zeroed
    s: np.ndarray | None = None  # (B, T) int64 speaker slot of each input byte; None: unconditioned


class StreamBatcher:
    """Deterministic windows over `streams` regions of the text; rank r of `world` reads its own regions.
    `speakers`, when given, is the (len(data),) slot of every byte and is windowed alongside."""

    def __init__(self, data: bytes, streams: int, seq_len: int, rank: int = 0, world: int = 1,
                 speakers: np.ndarray | None = None):
        if len(data) < seq_len + 1:
            raise BadInputError(
                f"the training text has {len(data)} bytes, shorter than one training window "
                f"({seq_len + 1} bytes); give more text or a smaller --seq-len")
        total = min(streams * world, (len(data) - 1) // (seq_len + 1))
        self.streams = max(1, total // world)
        total = self.streams * world
        self.seq_len = seq_len
        self.region = len(data) // total
        self.windows = (self.region - 1) // seq_len
        self.array = np.frombuffer(data, dtype=np.uint8)
        self.speakers = speakers
        self.starts = (np.arange(self.streams) + rank * self.streams) * self.region

    @property
    def chars_per_step(self) -> int:
        return self.streams * self.seq_len

    def batch(self, step: int) -> Batch:
        w = step % self.windows
        idx = self.starts[:, None] + w * self.seq_len + np.arange(self.seq_len + 1)[None, :]  # (B, T+1)
        chunk = self.array[idx].astype(np.int64)
        spk = self.speakers[idx[:, :-1]].astype(np.int64) if self.speakers is not None else None
        return Batch(chunk[:, :-1], chunk[:, 1:], reset=(w == 0), s=spk)


def eval_streams(data: bytes, max_streams: int = 64, max_chars: int | None = None,
                 speakers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Held-out text as (E, L) parallel streams, so evaluation runs batched instead of one long sequence,
    and the (E, L) speaker slots of those bytes when `speakers` (one per byte of `data`) is given."""
    if max_chars is not None and len(data) > max_chars:
        data = data[:max_chars]
    n = len(data)
    if n < 2:
        raise BadInputError("the held-out text is shorter than 2 bytes; give more text")
    streams = max(1, min(max_streams, n // 256))
    length = n // streams
    tokens = np.frombuffer(data[: streams * length], dtype=np.uint8).reshape(streams, length).astype(np.int64)
    if speakers is None:
        return tokens, None
    return tokens, np.asarray(speakers[: streams * length], dtype=np.int64).reshape(streams, length)


BITS_PER_NAT = 1.0 / math.log(2.0)
