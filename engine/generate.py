"""Generate text byte by byte with Darknet's semantics: feed the seed, then sample and feed back each byte.

Three forms share one loop: `generate` (a string), `stream` (yield text as it is made) and
`generate_batch` (many sequences advanced together, one ONNX call per step). Sequence i of a batch draws
from its own generator, so a batched result equals the same request run alone.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from engine.errors import BadRequestError
from engine.sampling import SamplingConfig, make_rng, sample_next
from engine.session import ModelSession

BYTES = [bytes([b]) for b in range(256)]


class Utf8Stream:
    """Bytes in, text out: an incomplete UTF-8 sequence is held back until it completes; invalid bytes
    become U+FFFD instead of raising."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def close(self) -> str:
        """Text still owed at the end; a trailing incomplete sequence is dropped, not shown as garbage."""
        self._decoder.reset()
        return ""


@dataclass(frozen=True)
class Request:
    seed: bytes
    length: int
    srand: int | tuple[int, ...] | None = None  # a tuple seeds from several numbers (row, attempt)
    stop: bytes | None = None  # stop before emitting any of these bytes (e.g. b"\n": end of a chat message)


class Generator:
    def __init__(self, session: ModelSession):
        self.session = session

    def prime(self, seed: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Feed the seed in one call (the prompt shape). Returns the last logits (V,) and the state (S, 1, H)."""
        seed = seed or b"\0"  # Darknet feeds a NUL byte for an empty seed
        tokens = np.frombuffer(seed, dtype=np.uint8).astype(np.int64)[None, :]
        logits, state = self.session.run(tokens, self.session.initial_state(1))
        return logits[0, -1], state

    def run_batch(self, requests: Sequence[Request], sampling: SamplingConfig) -> Iterator[list[bytes | None]]:
        """Advance every request together; each step yields one new byte per request (None once it is done)."""
        for r in requests:
            if r.length < 0:
                raise BadRequestError(f"length must be zero or more, not {r.length}")
        primed = [self.prime(r.seed) for r in requests]
        logits = np.stack([p[0] for p in primed])  # (B, V)
        state = np.concatenate([p[1] for p in primed], axis=1)  # (S, B, H)
        rngs = [make_rng(r.srand) for r in requests]
        live = [i for i, r in enumerate(requests) if r.length > 0]  # row j of logits/state is request live[j]
        logits, state = logits[live], state[:, live]
        made = [0] * len(requests)
        while live:
            nxt = sample_next(logits, [rngs[i] for i in live], sampling)
            out: list[bytes | None] = [None] * len(requests)
            keep = []
            for j, i in enumerate(live):
                byte = BYTES[nxt[j]]
                stop = requests[i].stop
                if stop is not None and byte in stop:
                    continue
                out[i] = byte
                made[i] += 1
                if made[i] < requests[i].length:
                    keep.append(j)
            yield out
            if not keep:
                return
            if len(keep) < len(live):  # drop finished rows; the common case keeps them all and copies nothing
                live = [live[j] for j in keep]
                nxt, state = nxt[keep], state[:, keep]
            logits, state = self.session.run(nxt[:, None], state)
            logits = logits[:, -1]

    def generate_bytes(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[bytes]:
        parts: list[list[bytes]] = [[] for _ in requests]
        for step in self.run_batch(requests, sampling):
            for i, b in enumerate(step):
                if b is not None:
                    parts[i].append(b)
        return [b"".join(p) for p in parts]

    def generate(self, seed: str = "\n", length: int = 1000, temperature: float = 0.7, srand: int | None = None,
                 top_k: int | None = None, top_p: float | None = None, stop: str | None = None,
                 cutoff: float = 0.0) -> str:
        """The text generated after `seed` (the seed itself is not repeated)."""
        return "".join(self.stream(seed, length, temperature, srand, top_k, top_p, stop, cutoff))

    def stream(self, seed: str = "\n", length: int = 1000, temperature: float = 0.7, srand: int | None = None,
               top_k: int | None = None, top_p: float | None = None, stop: str | None = None,
               cutoff: float = 0.0) -> Iterator[str]:
        """Yield the generated text piece by piece, each piece valid UTF-8 text."""
        sampling = SamplingConfig(temperature, top_k, top_p, cutoff)
        request = Request(seed.encode("utf-8"), length, srand, stop.encode("utf-8") if stop else None)
        decoder = Utf8Stream()
        for step in self.run_batch([request], sampling):
            if step[0] is not None:
                text = decoder.feed(step[0])
                if text:
                    yield text

    def generate_batch(self, seeds: Sequence[str], length: int = 1000, temperature: float = 0.7,
                       srands: Sequence[int | None] | int | None = None, top_k: int | None = None,
                       top_p: float | None = None, stop: str | None = None) -> list[str]:
        """Many sequences at once; an int `srands` gives sequence i the seed srands + i."""
        if isinstance(srands, int) or srands is None:
            srands = [None if srands is None else srands + i for i in range(len(seeds))]
        stop_b = stop.encode("utf-8") if stop else None
        requests = [Request(s.encode("utf-8"), length, r, stop_b) for s, r in zip(seeds, srands, strict=True)]
        out = self.generate_bytes(requests, SamplingConfig(temperature, top_k, top_p))
        return [decode_complete(b) for b in out]


def decode_complete(data: bytes) -> str:
    """Decode generated bytes: invalid bytes become U+FFFD, a trailing incomplete sequence is dropped."""
    d = Utf8Stream()
    return d.feed(data) + d.close()
