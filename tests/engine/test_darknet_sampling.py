"""engine/darknet_sampling.py: glibc rand(), Darknet's softmax + cut-off + sample_array, bit for bit."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from engine.darknet_sampling import GlibcRandom, darknet_probabilities, sample_array

# glibc 2.36, from a C program calling srand(seed) then rand() (the values below are what it printed).
GLIBC_FIRST_FIVE = {
    0: [1804289383, 846930886, 1681692777, 1714636915, 1957747793],  # srand(0) is srand(1)
    1: [1804289383, 846930886, 1681692777, 1714636915, 1957747793],
    2: [1505335290, 1738766719, 190686788, 260874575, 747983061],
    12345: [383100999, 858300821, 357768173, 455528251, 133005921],
    2147483647: [1065668062, 2142264300, 1066566375, 1064012770, 2141034222],
    2147483648: [1336741213, 1210407648, 1447044896, 337392383, 82502902],
    3000000000: [2058147116, 854483408, 922419988, 286396165, 2068523933],
    4294967295: [254925627, 1205188300, 366127624, 1401405153, 76053476],
}
# srand(0), then 8,912,896 rand() calls (cfg/rnn.cfg's weight initialisation), then five more.
AFTER_RNN_CFG_INIT = [1896975549, 1683747956, 1083003153, 836683716, 1583028242]


@pytest.mark.parametrize("seed", sorted(GLIBC_FIRST_FIVE))
def test_glibc_rand_first_values(seed: int) -> None:
    rng = GlibcRandom(seed)
    assert [rng.rand() for _ in range(5)] == GLIBC_FIRST_FIVE[seed]


def test_jump_ahead_past_rnn_cfg_weight_init() -> None:
    rng = GlibcRandom(0)
    rng.skip(8_912_896)
    assert [rng.rand() for _ in range(5)] == AFTER_RNN_CFG_INIT


@pytest.mark.parametrize("n", [0, 1, 30, 1999, 2000, 5003])
def test_skip_equals_drawing(n: int) -> None:
    a, b = GlibcRandom(42), GlibcRandom(42)
    a.skip(n)
    for _ in range(n):
        b.rand()
    assert [a.rand() for _ in range(40)] == [b.rand() for _ in range(40)]


def _glibc() -> ctypes.CDLL:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        pytest.skip("needs glibc")
    return libc


def test_matches_this_machines_glibc() -> None:
    libc = _glibc()
    for seed in (0, 7, 99991, 2**31 + 5):
        libc.srand(ctypes.c_uint(seed))
        want = [libc.rand() for _ in range(2000)]
        rng = GlibcRandom(seed)
        assert [rng.rand() for _ in range(2000)] == want


# ---------------------------------------------------------------------- softmax, cut-off, sample_array


def literal_darknet_step(logits: np.ndarray, temp: float, rand_value: int) -> int:
    """softmax (blas.c), the .0001 cut (rnn.c) and sample_array (utils.c), one C statement at a time."""
    f = np.float32
    t = f(temp)
    largest = f(-3.4028234663852886e38)
    for x in logits:
        if x > largest:
            largest = x
    out, total = [], f(0)
    for x in logits:
        e = f(math.exp(float(f(x / t) - f(largest / t))))  # C's exp() takes and returns double
        total = f(total + e)
        out.append(e)
    out = [f(e / total) for e in out]
    out = [f(0) if float(p) < 0.0001 else p for p in out]
    s = f(0)
    for p in out:
        s = f(s + p)
    scale = f(1.0 / float(s))
    out = [f(p * scale) for p in out]
    r = f(f(rand_value) / f(2147483647))
    for i, p in enumerate(out):
        r = f(r - p)
        if r <= 0:
            return i
    return len(out) - 1


class FixedRand:
    def __init__(self, values: list[int]):
        self.values = list(values)

    def rand(self) -> int:
        return self.values.pop(0)


def test_vectorised_step_equals_the_literal_c_transcription() -> None:
    rng = np.random.default_rng(0)
    draws = GlibcRandom(3)
    for trial in range(300):
        scale = [0.5, 2.0, 8.0][trial % 3]
        logits = (rng.standard_normal(256) * scale).astype(np.float32)
        temp = [0.7, 1.0, 0.3, 1.7][trial % 4]
        value = draws.rand()
        got = sample_array(darknet_probabilities(logits, temp), FixedRand([value]))
        assert got == literal_darknet_step(logits, temp, value)


def test_the_cut_compares_against_the_double_constant() -> None:
    # These logits give p[1] == float32(1e-4) exactly, which is just below the double .0001 that C compares
    # with: Darknet cuts it; a float32 comparison would keep it.
    logits = np.full(256, -1e30, dtype=np.float32)
    logits[0], logits[1] = 0.0, -9.210240364074707
    e1 = np.float32(np.exp(np.float64(logits[1])))
    assert e1 / (np.float32(1) + e1) == np.float32(0.0001) and float(np.float32(0.0001)) < 0.0001
    p = darknet_probabilities(logits, 1.0)
    assert p[1] == 0 and p[0] > 0.99


def test_tiny_temperature_is_argmax_and_degenerate_walks_to_the_end() -> None:
    logits = np.random.default_rng(1).standard_normal(256).astype(np.float32)
    p = darknet_probabilities(logits, 1e-6)
    assert np.count_nonzero(p) == 1
    for value in (1, 12345, 2147483647):
        assert sample_array(p, FixedRand([value])) == int(np.argmax(logits))
    assert sample_array(np.full(256, np.nan, dtype=np.float32), FixedRand([5])) == 255  # NaN: C returns n-1
    assert sample_array(p, FixedRand([0])) == 0  # rand() == 0: r = 0 and `0 - 0 <= 0` stops at index 0, as in C


C_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <float.h>
/* Darknet's softmax (blas.c), rnn.c's cut and sample_array/rand_uniform (utils.c), as the notes give them. */
static void softmax(float *input, int n, float temp, float *output) {
    float sum = 0, largest = -FLT_MAX;
    for (int i = 0; i < n; ++i) if (input[i] > largest) largest = input[i];
    for (int i = 0; i < n; ++i) { float e = exp(input[i]/temp - largest/temp); sum += e; output[i] = e; }
    for (int i = 0; i < n; ++i) output[i] /= sum;
}
static float rand_uniform(float min, float max) { return ((float)rand()/RAND_MAX * (max - min)) + min; }
static int sample_array(float *a, int n) {
    float sum = 0; for (int i = 0; i < n; ++i) sum += a[i];
    float s = 1./sum; for (int i = 0; i < n; ++i) a[i] *= s;
    float r = rand_uniform(0, 1);
    for (int i = 0; i < n; ++i) { r = r - a[i]; if (r <= 0) return i; }
    return n - 1;
}
int main(int argc, char **argv) {
    unsigned seed = atoi(argv[1]); long skip = atol(argv[2]); float temp = atof(argv[3]);
    FILE *f = fopen(argv[4], "rb"); float logits[256], out[256];
    srand(seed); for (long i = 0; i < skip; ++i) rand();
    while (fread(logits, sizeof(float), 256, f) == 256) {
        softmax(logits, 256, temp, out);
        for (int j = 0; j < 256; ++j) if (out[j] < .0001) out[j] = 0;
        printf("%d\n", sample_array(out, 256));
    }
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("seed,skip,temp", [(0, 21_504, 0.7), (5, 0, 1.0), (123, 8_912_896, 0.5)])
def test_same_draws_as_darknets_c_code(tmp_path: Path, seed: int, skip: int, temp: float) -> None:
    src, exe, data = tmp_path / "d.c", tmp_path / "d", tmp_path / "logits.bin"
    src.write_text(C_PROGRAM)
    subprocess.run(["gcc", "-O2", "-std=c99", str(src), "-o", str(exe), "-lm"], check=True, timeout=60)
    rows = (np.random.default_rng(seed).standard_normal((400, 256)) * 3).astype("<f4")
    data.write_bytes(rows.tobytes())
    want = [int(x) for x in subprocess.run([str(exe), str(seed), str(skip), str(temp), str(data)], check=True,
                                           capture_output=True, text=True, timeout=60).stdout.split()]
    rng = GlibcRandom(seed)
    rng.skip(skip)
    got = [sample_array(darknet_probabilities(row, temp), rng) for row in rows]
    assert got == want
