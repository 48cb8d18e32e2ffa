"""Draw the next byte from logits: temperature, top-k, top-p, Darknet's tiny-probability cut-off.

Reproducibility: every sequence draws from its own PCG64 generator seeded by `srand` (numpy's PCG64 gives
the same stream on every OS and CPU), probabilities are computed in float64 and the draw is an inverse-CDF
lookup over a sequential cumulative sum, so the same logits and the same srand give the same byte everywhere.

Any integer is a valid srand: it is taken modulo 2**64 (so -1 is 2**64 - 1), as Darknet takes its -srand
modulo 2**32 (an unsigned int). numpy's PCG64 itself refuses negative seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import BadRequestError


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.7
    top_k: int | None = None
    top_p: float | None = None
    cutoff: float = 0.0  # probabilities below this are dropped (Darknet uses 0.0001)

    def __post_init__(self) -> None:
        if not self.temperature > 0 or not np.isfinite(self.temperature):
            raise BadRequestError(f"temperature must be a positive number, not {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise BadRequestError(f"top-k must be at least 1, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise BadRequestError(f"top-p must be in (0, 1], not {self.top_p}")
        if not 0 <= self.cutoff < 1:
            raise BadRequestError(f"the probability cut-off must be in [0, 1), not {self.cutoff}")


SRAND_MODULUS = 2**64


def make_rng(srand: int | tuple[int, ...] | None) -> np.random.Generator:
    """A generator for one sequence; None draws a fresh seed from the OS, a tuple mixes several numbers.
    Every number is taken modulo 2**64, so a negative srand works (0 <= srand < 2**64 is used as given)."""
    if isinstance(srand, tuple):
        srand = tuple(int(n) % SRAND_MODULUS for n in srand)
    elif srand is not None:
        srand = int(srand) % SRAND_MODULUS
    return np.random.Generator(np.random.PCG64(srand))


def weights(logits: np.ndarray, cfg: SamplingConfig) -> np.ndarray:
    """Unnormalised softmax(logits / T) with cut-off, top-k and top-p applied, in float64: (B, V) -> (B, V).

    Sampling needs only proportions, so the normalising division is skipped on the hot path.
    """
    z = logits.astype(np.float64)
    w = np.exp((z - z.max(axis=-1, keepdims=True)) / cfg.temperature)
    if cfg.cutoff or cfg.top_p is not None:
        total = np.cumsum(w, axis=-1)[:, -1:]
        if cfg.cutoff:
            w = np.where(w < cfg.cutoff * total, 0.0, w)
    if cfg.top_k is not None and cfg.top_k < w.shape[-1]:
        kth = -np.sort(-w, axis=-1)[:, cfg.top_k - 1:cfg.top_k]  # (B, 1): the k-th largest weight
        w = np.where(w >= kth, w, 0.0)
    if cfg.top_p is not None and cfg.top_p < 1:
        order = np.argsort(-w, axis=-1, kind="stable")
        sorted_w = np.take_along_axis(w, order, axis=-1)
        before = np.cumsum(sorted_w, axis=-1) - sorted_w  # mass of the bytes ranked above each one
        keep_sorted = before < cfg.top_p * np.cumsum(sorted_w, axis=-1)[:, -1:]
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        w = np.where(keep, w, 0.0)
    return w


def probabilities(logits: np.ndarray, cfg: SamplingConfig) -> np.ndarray:
    """The distribution a byte is drawn from: (B, V), rows summing to 1."""
    w = weights(logits, cfg)
    return w / np.cumsum(w, axis=-1)[:, -1:]


def sample_next(logits: np.ndarray, rngs: list[np.random.Generator], cfg: SamplingConfig) -> np.ndarray:
    """One byte per row of `logits` (B, V), row i drawn with rngs[i]. Returns (B,) int64."""
    w = weights(logits, cfg)
    cdf = np.cumsum(w, axis=-1)  # sequential, so identical on every platform
    u = np.array([rng.random() for rng in rngs]) * cdf[:, -1]  # (B,)
    idx = (cdf <= u[:, None]).sum(axis=-1)  # the first byte whose cumulative mass exceeds u
    if (idx >= w.shape[-1]).any():  # u landed on the total itself by rounding: take the last byte with mass
        last = w.shape[-1] - 1 - np.argmax((w > 0)[:, ::-1], axis=-1)
        idx = np.minimum(idx, last)
    return idx
