"""Bits per character of a served model on a text, read as many parallel streams (fast, state carried)."""

from __future__ import annotations

import math

import numpy as np

from engine.session import ModelSession


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def bits_per_char(session: ModelSession, data: bytes, max_streams: int = 64, window: int = 256,
                  speakers: np.ndarray | None = None) -> float:
    """Mean -log2 p(next byte) over `data`, split into up to `max_streams` contiguous streams; `speakers`,
    the speaker slot of every byte, conditions a speaker-conditioned model (None: slot 0 throughout)."""
    streams = max(1, min(max_streams, len(data) // 256))
    length = len(data) // streams
    tokens = np.frombuffer(data[: streams * length], dtype=np.uint8).reshape(streams, length).astype(np.int64)
    slots = None
    if speakers is not None:
        slots = np.asarray(speakers[: streams * length], dtype=np.int64).reshape(streams, length)  # (E, L)
    state = session.initial_state(streams)
    total, count = 0.0, 0
    for start in range(0, length - 1, window):
        x = tokens[:, start:start + window]
        y = tokens[:, start + 1:start + window + 1]
        s = None if slots is None else slots[:, start:start + y.shape[1]]
        logits, state = session.run(x[:, : y.shape[1]], state, s)
        logp = log_softmax(logits)
        total -= float(np.take_along_axis(logp, y[..., None], axis=-1).sum())
        count += y.size
    return total / max(1, count) / math.log(2.0)
