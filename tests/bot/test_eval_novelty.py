"""The copied-span measurement is exact: checked on hand-made cases and against brute force."""

import random

import numpy as np
import pytest

from bot.eval_novelty import COPY_SPAN, SpanIndex, measure, normalize_space, suffix_array


def brute_longest(messages: list[str], text: str) -> int:
    q = normalize_space(text)
    best = 0
    for m in (normalize_space(x) for x in messages):
        for i in range(len(q)):
            for j in range(i + best + 1, len(q) + 1):
                if q[i:j] in m:
                    best = j - i
                else:
                    break
    return best


def test_suffix_array_is_sorted_suffix_order() -> None:
    rng = random.Random(1)
    for text in ["", "a", "aaaa", "banana", "abracadabra", "".join(rng.choice("ab") for _ in range(300)),
                 "é€😀ab" * 20]:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        assert suffix_array(codes).tolist() == sorted(range(len(text)), key=lambda i: text[i:])


def test_hand_made_spans() -> None:
    fox = "the quick brown fox jumps over the lazy dog"
    index = SpanIndex([fox, "hello world", "x" * 50])
    assert index.longest_span(fox) == len(fox)
    assert index.longest_span("and then the quick brown fox slept") == len("the quick brown fox ")  # no space before it
    assert index.longest_span("####") == 0
    assert index.longest_span("x" * 80) == 50  # never longer than the training message itself
    # A match may not run across two training messages: "lazy dog" ends one, "hello" starts the next.
    assert index.longest_span("lazy doghello") == len("lazy dog")
    assert index.longest_span("lazy dog hello") == len("lazy dog")
    # Layout is not novelty: line breaks and runs of spaces count as one space on both sides.
    assert index.longest_span("the quick\nbrown   fox") == len("the quick brown fox")
    assert index.is_exact_copy("hello  world ") and not index.is_exact_copy("hello")


def test_copy_threshold_is_forty_characters() -> None:
    training = "".join(chr(ord("a") + i % 26) for i in range(60))  # 60 distinct-window characters
    index = SpanIndex([training])
    just_under = "#" + training[5:5 + COPY_SPAN - 1] + "#"
    exactly = "#" + training[5:5 + COPY_SPAN] + "#"
    result = measure(index, [just_under, exactly])
    assert [index.longest_span(t) for t in (just_under, exactly)] == [COPY_SPAN - 1, COPY_SPAN]
    assert result.copy_rate == 0.5 and result.mean_longest_span == COPY_SPAN - 0.5 and result.exact_copy_rate == 0


def test_agrees_with_brute_force_on_random_text() -> None:
    rng = random.Random(7)
    words = ["to", "be", "or", "not", "my", "lord", "the", "king", "é", "a\nb"]
    messages = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(40)]
    index = SpanIndex(messages)
    for _ in range(60):
        query = " ".join(rng.choice(words) for _ in range(rng.randint(0, 15)))
        assert index.longest_span(query) == brute_longest(messages, query), query


def test_empty_inputs() -> None:
    index = SpanIndex([])
    assert index.longest_span("anything") == 0
    assert measure(SpanIndex(["a"]), []).messages == 0


@pytest.mark.parametrize("text", ["", "   ", "\x00\x00"])
def test_separator_and_blank_queries(text: str) -> None:
    assert SpanIndex(["a b", "c"]).longest_span(text) == 0
