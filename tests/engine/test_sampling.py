import numpy as np
import pytest

from engine.errors import BadRequestError
from engine.sampling import SamplingConfig, make_rng, probabilities, sample_next


def _logits(rows: int = 1) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((rows, 256)).astype(np.float32) * 3


def test_probabilities_sum_to_one_and_temperature_sharpens() -> None:
    hot = probabilities(_logits(), SamplingConfig(temperature=2.0))
    cold = probabilities(_logits(), SamplingConfig(temperature=0.2))
    assert hot.sum() == pytest.approx(1.0) and cold.sum() == pytest.approx(1.0)
    assert cold.max() > hot.max()


def test_top_k_and_top_p_keep_the_most_likely_bytes() -> None:
    logits = _logits()
    k = probabilities(logits, SamplingConfig(1.0, top_k=5))
    assert (k > 0).sum() == 5 and set(np.flatnonzero(k)) == set(np.argsort(-logits[0])[:5])
    p = probabilities(logits, SamplingConfig(1.0, top_p=0.5))
    full = probabilities(logits, SamplingConfig(1.0))[0]
    kept = np.flatnonzero(p[0])
    assert full[kept].sum() >= 0.5 and full[kept].sum() - full[kept].min() < 0.5


def test_top_k_1_is_greedy() -> None:
    logits = _logits(4)
    rngs = [make_rng(i) for i in range(4)]
    assert (sample_next(logits, rngs, SamplingConfig(1.0, top_k=1)) == logits.argmax(-1)).all()


def test_darknet_cutoff_drops_tiny_probabilities() -> None:
    logits = np.zeros((1, 256), dtype=np.float32)
    logits[0, 65] = 20.0
    p = probabilities(logits, SamplingConfig(1.0, cutoff=1e-4))
    assert p[0, 65] > 0 and (p[0, :65] == 0).all()


def test_same_srand_same_draws_and_rows_are_independent() -> None:
    logits = _logits(3)
    a = [sample_next(logits, [make_rng(7), make_rng(8), make_rng(9)], SamplingConfig(1.5)) for _ in range(1)]
    b = sample_next(logits[1:2], [make_rng(8)], SamplingConfig(1.5))
    assert a[0][1] == b[0]


@pytest.mark.parametrize("bad", [dict(temperature=0), dict(temperature=-1), dict(temperature=float("nan")),
                                 dict(top_k=0), dict(top_p=0), dict(top_p=1.5)])
def test_bad_sampling_options(bad: dict) -> None:
    with pytest.raises(BadRequestError):
        SamplingConfig(**{"temperature": 0.7, **bad})


def test_pcg64_stream_is_pinned() -> None:
    """The generator behind srand: these values are the same on every OS, CPU and numpy release."""
    assert [round(make_rng(0).random(), 12)] == [0.636961687321]


def test_any_integer_is_a_seed_taken_modulo_2_64() -> None:
    """numpy's PCG64 refuses negative seeds; -srand -1 must work, as it does for Darknet (an unsigned int)."""
    first = make_rng(2**64 - 1).random()
    assert make_rng(-1).random() == first and make_rng(2**65 - 1).random() == first
    assert make_rng((-1, 3)).random() == make_rng((2**64 - 1, 3)).random()  # tuples too (impersonation drafts)
    assert make_rng(5).random() == np.random.Generator(np.random.PCG64(5)).random()  # 0 <= srand < 2**64: as given
