"""Style ranker: of several drafts written as someone, which one reads most like them and least like anyone else?

The voice memory (engine/voice.py) pulls every byte toward how a person writes, but it judges a draft by how
well it explains it, and a fluent line of the team's common language is explained about as well by anyone's
memory. Telling people apart is a different job: a multinomial naive Bayes over the words and word pairs each
person used (lowercased words of two or more word characters, as scikit-learn's CountVectorizer cuts them),
stored with the voice memory and built from the same records.

A draft's score is its per-word log-likelihood margin: how much better the target's word model explains it
than the best of the other regular writers (RIVAL_MESSAGES or more messages in the memory), divided by its
number of words, so that a long draft is not preferred for piling up evidence. Words and pairs nobody in the
memory used are left out; a draft with none left scores 0, and so does every draft when the writer has no
rival (the generator then keeps the memory's own score).

File layout (arrays in the voice memory's `.npz`): `style_keys` uint64, sorted: (hash of the word or word pair
<< 16) | speaker id, so one feature's counts for every speaker are one contiguous range; `style_count`
uint32; `style_total` (words counted per speaker id) and `style_messages` (records per speaker id), both
float64; `style_vocabulary` (distinct features). Hashes are CRC-32 of the UTF-8 text, the same everywhere.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from engine.ranges import ranges

ALPHA = 0.1  # additive smoothing of each speaker's word counts
RIVAL_MESSAGES = 10  # writers with fewer records are not rivals: too little to say how they write
_SHIFT = np.uint64(16)  # speaker ids take the low 16 bits of a key
_WORD = re.compile(r"\b\w\w+\b")


def features(text: str) -> Counter[int]:
    """The hashed words and adjacent word pairs of `text`, with their counts."""
    words = _WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    return Counter(zlib.crc32(g.encode("utf-8")) for g in grams)


def build_style(texts: Mapping[int, Sequence[str]], speakers: int) -> dict[str, np.ndarray]:
    """The arrays for {speaker id: their texts}; ids run from 0 to `speakers` - 1."""
    pairs: Counter[int] = Counter()
    total = np.zeros(speakers, np.float64)
    messages = np.zeros(speakers, np.float64)
    for sid, said in texts.items():
        for text in said:
            for h, n in features(text).items():
                pairs[(h << 16) | sid] += n
                total[sid] += n
            messages[sid] += 1
    keys = np.array(sorted(pairs), dtype=np.uint64)
    counts = np.array([pairs[int(k)] for k in keys], dtype=np.uint32)
    vocabulary = len(np.unique(keys >> _SHIFT))
    return {"style_keys": keys, "style_count": counts, "style_total": total, "style_messages": messages,
            "style_vocabulary": np.int64(vocabulary)}


def without_speaker(arrays: Mapping[str, np.ndarray], sid: int) -> dict[str, np.ndarray]:
    """The arrays with speaker `sid`'s counts removed (for `mimic forget`)."""
    keys, counts = arrays["style_keys"], arrays["style_count"]
    keep = (keys & np.uint64(0xFFFF)) != np.uint64(sid)
    total, messages = arrays["style_total"].copy(), arrays["style_messages"].copy()
    total[sid] = messages[sid] = 0
    kept = keys[keep]
    return {"style_keys": kept, "style_count": counts[keep], "style_total": total, "style_messages": messages,
            "style_vocabulary": np.int64(len(np.unique(kept >> _SHIFT)))}


class StyleRanker:
    """Scores drafts by how much more they read like their writer than like any other regular writer."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self.keys = arrays["style_keys"]
        self.counts = arrays["style_count"].astype(np.float64)
        self.total = arrays["style_total"]
        vocabulary = max(int(arrays["style_vocabulary"]), 1)
        self.rivals = np.flatnonzero(arrays["style_messages"] >= RIVAL_MESSAGES)
        # log P(an unseen word | speaker): what every word costs before its own count is added
        self.unseen = np.log(ALPHA) - np.log(self.total + ALPHA * vocabulary)

    def log_likelihoods(self, text: str) -> tuple[np.ndarray, int]:
        """log P(text's words | speaker) for every speaker id (uniform priors), and the number of words counted.
        Words and pairs nobody in the memory used are left out, as scikit-learn's vectorizers leave them out:
        they say nothing about who wrote the text."""
        feats = features(text)
        if not feats or not len(self.keys):
            return np.zeros(len(self.total)), 0
        hashes = np.array(sorted(feats), dtype=np.uint64)
        lo = np.searchsorted(self.keys, hashes << _SHIFT)
        hi = np.searchsorted(self.keys, (hashes + np.uint64(1)) << _SHIFT)
        times = np.array([feats[int(h)] for h in hashes], np.float64)
        n = int(times[hi > lo].sum())
        owner, pos = ranges(lo, hi - lo)
        gain = times[owner] * (np.log(self.counts[pos] + ALPHA) - np.log(ALPHA))  # a seen word beats an unseen one
        sid = (self.keys[pos] & np.uint64(0xFFFF)).astype(np.int64)
        return n * self.unseen + np.bincount(sid, gain, minlength=len(self.total)), n

    def ranks(self, speaker: int) -> bool:
        """Whether drafts written as `speaker` can be told apart: someone else must be a rival."""
        return bool((self.rivals != speaker).any())

    def margin(self, text: str, speaker: int) -> float:
        """Per word: log P(text | speaker) minus the best log P(text | rival), rivals other than `speaker`."""
        ll, n = self.log_likelihoods(text)
        rivals = self.rivals[self.rivals != speaker]
        if n == 0 or not len(rivals) or not 0 <= speaker < len(ll):
            return 0.0
        return float(ll[speaker] - ll[rivals].max()) / n
