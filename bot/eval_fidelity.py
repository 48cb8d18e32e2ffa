"""Speaker fidelity: would an independent author-attribution classifier say a generated message is theirs?

The classifier knows nothing of Mimic's model: character 2- to 4-grams within word boundaries (TF-IDF,
sublinear term frequency, case kept, since case is part of how people write) and a linear SVM with
balanced class weights, trained on the speakers' REAL training messages only. It is scored three ways:

* ceiling: its accuracy on the same speakers' real held-out messages (what a perfect impersonator would
  get; averaged per speaker, so every speaker counts once whatever their message count);
* fidelity: the share of messages generated as a speaker that it attributes to that speaker, averaged
  per speaker the same way;
* chance: 1 / number of speakers.

A long message gives the classifier more to go on (real held-out messages of 280+ characters are recognised
about twice as often as short ones), so a generator that writes longer messages scores higher without
sounding more like anyone. Fidelity by length (LENGTHS, all speakers pooled) compares like with like, and
`at_lengths` weighs a generator's bands as the real held-out messages fall into them: its fidelity had it
written as long as the people do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SEED = 0
LENGTHS = (80, 160, 280)  # characters: the edges of the length bands of `by_length`


@dataclass(frozen=True)
class Attribution:
    per_speaker: dict[str, float]  # share attributed to the intended speaker (nan: nothing to score)
    mean: float  # mean over speakers that had something to score
    micro: float  # over all messages together
    scored: int


class Attributor:
    """Who wrote this? Trained once on {speaker: [real training messages]}."""

    def __init__(self, train: Mapping[str, Sequence[str]]):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_pipeline
        from sklearn.svm import LinearSVC

        texts = [t for s in train for t in train[s]]
        labels = [s for s in train for _ in train[s]]
        self.speakers = list(train)
        self.pipeline = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=False, sublinear_tf=True, min_df=2),
            LinearSVC(class_weight="balanced", random_state=SEED),
        )
        self.pipeline.fit(texts, labels)

    @property
    def chance(self) -> float:
        return 1.0 / len(self.speakers)

    def predict(self, texts: Sequence[str]) -> list[str]:
        return list(self.pipeline.predict(list(texts))) if texts else []

    def score(self, samples: Mapping[str, Sequence[str]]) -> Attribution:
        """The share of each speaker's `samples` attributed to them."""
        per: dict[str, float] = {}
        hits = total = 0
        for speaker, texts in samples.items():
            predicted = self.predict(texts)
            right = sum(p == speaker for p in predicted)
            per[speaker] = right / len(texts) if texts else float("nan")
            hits, total = hits + right, total + len(texts)
        scored = [v for v in per.values() if v == v]
        return Attribution(per, sum(scored) / len(scored) if scored else float("nan"),
                           hits / total if total else float("nan"), total)

    def by_length(self, samples: Mapping[str, Sequence[str]]) -> list[dict[str, float | int | None]]:
        """Fidelity per band of message length (LENGTHS), pooled over speakers: {min, max, fidelity, messages};
        max is None for the last band, fidelity None for a band with no message."""
        edges = (0, *LENGTHS, None)
        hits = [0] * (len(edges) - 1)
        total = [0] * (len(edges) - 1)
        for speaker, texts in samples.items():
            for text, predicted in zip(texts, self.predict(texts), strict=True):
                band = sum(len(text) >= edge for edge in LENGTHS)
                total[band] += 1
                hits[band] += predicted == speaker
        return [{"min": edges[i], "max": edges[i + 1], "fidelity": hits[i] / total[i] if total[i] else None,
                 "messages": total[i]} for i in range(len(total))]


def at_lengths(bands: Sequence[Mapping[str, float | int | None]],
               reference: Sequence[Mapping[str, float | int | None]]) -> float | None:
    """Fidelity per band (`by_length`) weighed by the share of `reference`'s messages in each band: what the
    generator would score writing messages as long as the reference's. None when it wrote nothing in a band
    the reference uses, or the reference is empty."""
    total = sum(int(r["messages"] or 0) for r in reference)
    if not total:
        return None
    out = 0.0
    for band, ref in zip(bands, reference, strict=True):
        if ref["messages"]:
            if band["fidelity"] is None:
                return None
            out += float(band["fidelity"]) * int(ref["messages"]) / total
    return out
