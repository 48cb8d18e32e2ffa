"""Draw the next byte from logits: temperature, top-k, top-p, Darknet's tiny-probability cut-off.

Reproducibility: every sequence draws from its own PCG64 generator seeded by `srand` (numpy's PCG64 gives
the same stream on every OS and CPU), probabilities are computed in float64 and the draw is an inverse-CDF
lookup over a sequential cumulative sum, so the same logits and the same srand give the same byte everywhere.
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


def make_rng(srand: int | None) -> np.random.Generator:
    """A generator for one sequence; None draws a fresh seed from the OS."""
    return np.random.Generator(np.random.PCG64(srand))


def probabilities(logits: np.ndarray, cfg: SamplingConfig) -> np.ndarray:
    """softmax(logits / T) with top-k, top-p and cut-off applied, in float64. logits: (B, V) -> (B, V)."""
    z = logits.astype(np.float64) / cfg.temperature
    z -= z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= np.cumsum(p, axis=-1)[:, -1:]
    if cfg.cutoff:
        p = np.where(p < cfg.cutoff, 0.0, p)
    if cfg.top_k is not None and cfg.top_k < p.shape[-1]:
        kth = -np.sort(-p, axis=-1)[:, cfg.top_k - 1:cfg.top_k]  # (B, 1): the k-th largest probability
        p = np.where(p >= kth, p, 0.0)
    if cfg.top_p is not None and cfg.top_p < 1:
        order = np.argsort(-p, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the bytes ranked above each one
        keep_sorted = before < cfg.top_p * np.cumsum(sorted_p, axis=-1)[:, -1:]
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
    return p


def sample_next(logits: np.ndarray, rngs: list[np.random.Generator], cfg: SamplingConfig) -> np.ndarray:
    """One byte per row of `logits` (B, V), row i drawn with rngs[i]. Returns (B,) int64."""
    p = probabilities(logits, cfg)
    cdf = np.cumsum(p, axis=-1)  # sequential, so identical on every platform
    u = np.array([rng.random() for rng in rngs]) * cdf[:, -1]
    idx = np.array([np.searchsorted(cdf[i], u[i], side="right") for i in range(len(rngs))], dtype=np.int64)
    # A draw can land on the total itself only by rounding; it then belongs to the last byte with mass.
    last_nonzero = p.shape[-1] - 1 - np.argmax((p > 0)[:, ::-1], axis=-1)
    return np.minimum(idx, last_nonzero)
