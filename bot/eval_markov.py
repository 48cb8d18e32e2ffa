"""The baseline: a per-speaker word Markov chain, as Markov chat bots build with markovify.

One `markovify.NewlineText` per speaker, state size 2, over that speaker's training messages (one message per
line, its own line breaks turned into spaces, since a newline ends a markovify sentence). `well_formed=False`
keeps every message: markovify's default filter drops any line with a quote, a bracket or a word-edge
apostrophe, which would silently hide most of a Shakespeare speaker's lines ("'tis", "o'er") from the
baseline.

Two ways of sampling, both reported:
* raw: `make_sentence(test_output=False)`, the chain's walk as it comes (what many bots post);
* tested: markovify's own novelty test (`test_output=True`: reject a walk that repeats 70% of its words, or
  15 words, in a row from the training text), with MARKOV_TRIES walks per message. It often gives up
  (returns None); how many messages came out is recorded.

markovify draws from Python's global `random`; it is seeded per speaker and restored afterwards.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MARKOV_TRIES = 100
STATE_SIZE = 2


@dataclass(frozen=True)
class MarkovSamples:
    raw: list[str]
    tested: list[str]  # only the walks that passed markovify's test
    asked: int


def speaker_seed(srand: int, speaker: str, salt: str = "") -> int:
    """A reproducible seed per (run seed, speaker), the same on every platform."""
    return zlib.crc32(f"{srand}:{speaker}:{salt}".encode())


def cap(text: str, max_chars: int) -> str:
    """The same length cap the engine applies to a posted message (cut at a word, then an ellipsis)."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip() + "…"


def markov_samples(messages: Mapping[str, Sequence[str]], n: int, srand: int,
                   max_chars: int = 400) -> dict[str, MarkovSamples]:
    """n raw and up to n tested messages per speaker, from a chain over that speaker's `messages`."""
    import markovify

    out: dict[str, MarkovSamples] = {}
    saved = random.getstate()
    try:
        for speaker, texts in messages.items():
            lines = "\n".join(" ".join(t.split()) for t in texts if t.strip())
            model = markovify.NewlineText(lines, state_size=STATE_SIZE, well_formed=False)
            random.seed(speaker_seed(srand, speaker, "markov-raw"))
            raw = [model.make_sentence(test_output=False) for _ in range(n)]
            random.seed(speaker_seed(srand, speaker, "markov-tested"))
            tested = [model.make_sentence(tries=MARKOV_TRIES) for _ in range(n)]
            out[speaker] = MarkovSamples([cap(s, max_chars) for s in raw if s],
                                         [cap(s, max_chars) for s in tested if s], n)
    finally:
        random.setstate(saved)
    return out
