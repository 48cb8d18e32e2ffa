"""Novelty of generated messages: how much of each one is copied verbatim from a training message.

Measured exactly (no hashing, no sampling) with a suffix array over every training message:
`longest_span(text)` is the length of the longest substring `text` shares with any single training message.
A message "copies" when that span is at least COPY_SPAN (40) characters, the rule the engine's copy guard
enforces and the complaint people have about Markov bots.

Whitespace is normalised on both sides first (every run of blank space, line breaks included, becomes one
space): a Markov bot joins words with spaces where the original had a line break, and that difference is
layout, not novelty.

The suffix array is built with numpy prefix doubling (a sort per doubling round, about log2 of the longest
repeated passage), so the Shakespeare corpus (2.8 million characters) is indexed in a few seconds; a lookup
is a binary search per starting position over the sorted suffixes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.copyindex import COPY_SPAN, normalize_space  # the copy guard's own rule

_SEP = "\x00"  # between messages: never in normalised text, so no match can run across two messages


def suffix_array(codes: np.ndarray) -> np.ndarray:
    """Start positions of the suffixes of `codes` (integers) in lexicographic order, a proper prefix first."""
    n = len(codes)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    rank = codes.astype(np.int64) + 1  # 0 means "past the end", which sorts before every character
    top = int(rank.max())
    k = 1
    while True:
        second = np.zeros(n, dtype=np.int64)
        if k < n:
            second[: n - k] = rank[k:]
        key = rank * (top + 1) + second  # both at most `top`, so the key orders by (rank, second)
        sa = np.argsort(key)  # ties need no order: equal keys get equal ranks
        ordered = key[sa]
        new_rank = np.empty(n, dtype=np.int64)
        new_rank[sa] = np.cumsum(np.concatenate([[1], ordered[1:] != ordered[:-1]]))
        rank = new_rank
        top = int(rank[sa[-1]])
        if top == n or k >= n:  # every suffix has its own rank: fully sorted
            return sa
        k *= 2


class SpanIndex:
    """All training messages (whitespace-normalised), searchable for the longest shared substring."""

    def __init__(self, messages: Iterable[str]):
        normalised = [normalize_space(m) for m in messages]
        self.exact = frozenset(normalised)
        self.text = _SEP.join(normalised)
        codes = np.frombuffer(self.text.encode("utf-32-le"), dtype=np.uint32)
        self.sa: list[int] = suffix_array(codes).tolist()  # a list: bisect indexes it from C quickly

    def __len__(self) -> int:
        return len(self.exact)

    def _range(self, pattern: str, lo: int, hi: int) -> tuple[int, int]:
        """The suffixes in sa[lo:hi] that start with `pattern`, as a half-open range."""
        m, text = len(pattern), self.text

        def prefix(start: int) -> str:
            return text[start:start + m]

        first = bisect.bisect_left(self.sa, pattern, lo, hi, key=prefix)
        last = bisect.bisect_right(self.sa, pattern, first, hi, key=prefix)
        return first, last

    def longest_span(self, text: str) -> int:
        """Length of the longest substring of `text` (normalised) found inside one training message."""
        q = normalize_space(text)
        best, n, size = 0, len(q), len(self.sa)
        for i in range(n):
            if n - i <= best:
                break
            # Only a span longer than the best so far matters: look for q[i:i+best+1], then grow it,
            # narrowing the suffix range as the pattern gets longer.
            length = best + 1
            lo, hi = self._range(q[i:i + length], 0, size)
            while lo < hi:
                best = length
                if i + length >= n:
                    break
                length += 1
                lo, hi = self._range(q[i:i + length], lo, hi)
        return best

    def is_exact_copy(self, text: str) -> bool:
        return normalize_space(text) in self.exact


@dataclass(frozen=True)
class Novelty:
    messages: int
    copy_rate: float  # share of messages sharing >= COPY_SPAN consecutive characters with a training message
    mean_longest_span: float
    exact_copy_rate: float  # share equal to a whole training message (short ones included)

    def as_dict(self) -> dict[str, float | int]:
        return {"messages": self.messages, "copy_rate": self.copy_rate,
                "mean_longest_span": self.mean_longest_span, "exact_copy_rate": self.exact_copy_rate}


def measure(index: SpanIndex, texts: Sequence[str], span: int = COPY_SPAN) -> Novelty:
    if not texts:
        return Novelty(0, float("nan"), float("nan"), float("nan"))
    spans = [index.longest_span(t) for t in texts]
    return Novelty(len(texts), sum(s >= span for s in spans) / len(texts), sum(spans) / len(spans),
                   sum(index.is_exact_copy(t) for t in texts) / len(texts))
