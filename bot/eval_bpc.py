"""Bits per character of each held-out record, so the held-out figure can be split by speaker.

The held-out records are read as a stream with the state carried from record to record, exactly as the
model reads chat during training. For speed the stream is cut (at record boundaries only) into up to
`max_streams` contiguous pieces run side by side; each piece starts after a "\\n", as every record does in
the corpus, so even a piece's first byte is predicted. Every predicted byte is charged to the record it
belongs to (its speaker name, the ": ", the text and the closing newline: all of it is that record).

Mimic's models read bytes, so "characters" here are bytes, as in training's `val_bpc`. A speaker-conditioned
model is fed each byte's speaker slot by the rule it was trained with (training/speaker_slots.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from engine.evaluate import log_softmax
from engine.session import ModelSession
from engine.voice import BETA, VoiceMemory
from training.speaker_slots import speaker_ids

START = b"\n"


def _pieces(sizes: Sequence[int], streams: int) -> list[tuple[int, int]]:
    """Cut records 0..len(sizes) into at most `streams` contiguous runs of about equal byte size."""
    total = sum(sizes)
    target = max(1, math.ceil(total / max(1, streams)))
    out, start, acc = [], 0, 0
    for i, size in enumerate(sizes):
        acc += size
        if acc >= target:
            out.append((start, i + 1))
            start, acc = i + 1, 0
    if start < len(sizes):
        out.append((start, len(sizes)))
    return out


def record_bits(session: ModelSession, records: Sequence[bytes], max_streams: int = 64,
                window: int = 256, slots: Mapping[str, int] | None = None) -> np.ndarray:
    """-log2 p summed over the bytes of each record (float64, one per record), given all that precedes it;
    `slots` (speaker -> slot) conditions a speaker-conditioned model on each record's writer."""
    bits = np.zeros(len(records), dtype=np.float64)
    if not records:
        return bits
    pieces = _pieces([len(r) for r in records], max_streams)
    inputs, targets, owners, writers = [], [], [], []
    for start, end in pieces:
        data = START + b"".join(records[start:end])
        owner = np.repeat(np.arange(start, end), [len(r) for r in records[start:end]])
        arr = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
        inputs.append(arr[:-1])
        targets.append(arr[1:])
        owners.append(owner)
        writers.append(speaker_ids(data, slots or {})[:-1])
    length = max(len(t) for t in targets)
    batch = len(pieces)
    x = np.zeros((batch, length), dtype=np.int64)
    y = np.zeros((batch, length), dtype=np.int64)
    s = np.zeros((batch, length), dtype=np.int64)
    who = np.full((batch, length), -1, dtype=np.int64)  # -1: padding, charged to nobody
    for b in range(batch):
        n = len(targets[b])
        x[b, :n], y[b, :n], s[b, :n], who[b, :n] = inputs[b], targets[b], writers[b], owners[b]
    state = session.initial_state(batch)
    for start in range(0, length, window):
        logits, state = session.run(x[:, start:start + window], state, s[:, start:start + window])
        logp = np.take_along_axis(log_softmax(logits), y[:, start:start + window, None], axis=-1)[..., 0]
        mask = who[:, start:start + window] >= 0
        bits += np.bincount(who[:, start:start + window][mask], weights=-logp[mask] / math.log(2.0),
                            minlength=len(records))
    return bits


def _text_logp(session: ModelSession, name: str, slot: int, body: bytes) -> tuple[np.ndarray, bytes]:
    """Log-probabilities (len(body), V) of each next byte of `body` (a record's text and newline) written as
    `name` with `slot`, from a fresh state; and the bytes each one follows (prefix included)."""
    prefix = f"\n{name}: ".encode()
    data = np.frombuffer(prefix + body, dtype=np.uint8).astype(np.int64)
    slots = speaker_ids(prefix + body, {name: slot})
    logits, _ = session.run(data[None, :-1], session.initial_state(1), slots[None, :-1])
    return log_softmax(logits[0])[len(prefix) - 1:], prefix + body


def _text_bits(session: ModelSession, name: str, slot: int, body: bytes) -> float:
    """-log2 p of `body` written as `name` with `slot`, from a fresh state."""
    logp, _ = _text_logp(session, name, slot, body)
    return float(-logp[np.arange(len(body)), np.frombuffer(body, np.uint8)].sum() / math.log(2.0))


def voice_check(session: ModelSession, voice: VoiceMemory, records: Sequence[tuple[str, str]],
                speakers: Sequence[str], line_break: str, srand: int = 0, limit: int = 300,
                slots: Mapping[str, int] | None = None, beta: float = BETA) -> dict[str, float | int]:
    """Is the voice memory really the person? Bits per character of held-out message texts under the
    network alone, adapted by the writer's own memory, and adapted by another scored speaker's memory (the
    network still told the right writer). Own below other: the memory holds something of that person."""
    import random

    rng = random.Random(srand)
    slots = slots or {}
    pool = [(s, t) for s, t in records if s in speakers and voice.speaker_id(s) >= 0]
    rng.shuffle(pool)
    bits = {"network": 0.0, "own": 0.0, "other": 0.0}
    size = 0
    for s, t in pool[:limit]:
        body = (t.replace("\n", line_break) + "\n").encode("utf-8")
        other = rng.choice([x for x in speakers if x != s and voice.speaker_id(x) >= 0] or [s])
        logp, data = _text_logp(session, s, slots.get(s, 0), body)
        target = np.frombuffer(body, np.uint8)
        rows = np.arange(len(body))
        p = np.exp(logp.astype(np.float64))
        p /= p.sum(axis=1, keepdims=True)
        contexts = [data[:len(data) - len(body) + i] for i in rows]
        bits["network"] -= float(np.log2(p[rows, target]).sum())
        for key, who in (("own", s), ("other", other)):
            q = voice.adapt(p, [voice.speaker_id(who)] * len(body), contexts, [beta] * len(body))
            bits[key] -= float(np.log2(q[rows, target]).sum())
        size += len(body)
    if not size:
        return {"records": 0, **{k: float("nan") for k in bits}}
    return {"records": min(limit, len(pool)), "beta": beta, **{k: v / size for k, v in bits.items()}}


def speaker_gain(session: ModelSession, records: Sequence[tuple[str, str]], speakers: Sequence[str],
                 line_break: str, srand: int = 0, limit: int = 300,
                 slots: Mapping[str, int] | None = None) -> dict[str, float | int]:
    """Does the model use who is speaking? Bits per character of held-out message texts written as their
    speaker ("\\n<their name>: ", and their slot for a speaker-conditioned model) against as another scored
    speaker (that one's name and slot), with no other context. A model that writes like the person it is
    asked to be spends fewer bits as the right speaker; the same figure means the speaker is ignored, and
    impersonation can only be generic."""
    import random

    rng = random.Random(srand)
    slots = slots or {}
    pool = [(s, t) for s, t in records if s in speakers]
    rng.shuffle(pool)
    right = wrong = size = 0.0
    for s, t in pool[:limit]:
        body = (t.replace("\n", line_break) + "\n").encode("utf-8")
        other = rng.choice([x for x in speakers if x != s])
        right += _text_bits(session, s, slots.get(s, 0), body)
        wrong += _text_bits(session, other, slots.get(other, 0), body)
        size += len(body)
    if not size:
        return {"records": 0, "right_name": float("nan"), "wrong_name": float("nan"), "gain": float("nan")}
    return {"records": min(limit, len(pool)), "right_name": right / size, "wrong_name": wrong / size,
            "gain": (wrong - right) / size}
