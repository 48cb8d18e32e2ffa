"""Fidelity on new messages: a repost of a whole training message, however short, is not new."""

from bot.eval_fidelity import Attributor
from bot.eval_novelty import SpanIndex
from bot.evaluation import _system

TRAIN = ["My lord?", "What news abroad, good cousin, now the king is crowned again?", "Ay, madam."]


class _Says(Attributor):
    """An attributor whose verdicts are given: {text: speaker}."""

    def __init__(self, verdicts: dict[str, str]):  # no classifier to train
        self.verdicts = verdicts
        self.speakers = ["ann", "bob"]

    def predict(self, texts: list[str]) -> list[str]:
        return [self.verdicts[t] for t in texts]


def test_reposts_are_left_out_of_fidelity_on_new_messages() -> None:
    samples = {"ann": ["My lord?", "Ay, madam.", "A brand new line of hers", "Another new one, not hers"]}
    verdicts = {"My lord?": "ann", "Ay, madam.": "ann", "A brand new line of hers": "ann",
                "Another new one, not hers": "bob"}
    s = _system(_Says(verdicts), SpanIndex(TRAIN), samples, asked=4)
    assert s["fidelity"] == 0.75  # the two reposts are recognised
    assert s["new_messages"] == 2 and s["fidelity_novel"] == 0.5  # of what is new, half
    assert s["exact_copy_rate"] == 0.5 and s["copy_rate"] == 0.0  # short reposts copy no 40 characters


def test_a_long_copy_is_not_new_either() -> None:
    copied = "Say: what news abroad, good cousin, now the king is crowned again"
    s = _system(_Says({copied: "ann", "fresh words": "bob"}), SpanIndex(TRAIN), {"ann": [copied, "fresh words"]}, 2)
    assert s["copy_rate"] == 0.5 and s["new_messages"] == 1 and s["fidelity_novel"] == 0.0


def test_median_chars_is_the_median_message_length() -> None:
    s = _system(_Says({"ab": "ann", "abcd": "ann", "abcdefgh": "bob"}), SpanIndex(TRAIN),
                {"ann": ["ab", "abcdefgh"], "bob": ["abcd"]}, 2)
    assert s["median_chars"] == 4


def test_fidelity_at_real_lengths_weighs_bands_as_the_real_messages_fall() -> None:
    from bot.eval_fidelity import at_lengths

    real = [{"fidelity": 0.2, "messages": 30}, {"fidelity": 0.1, "messages": 10}, {"fidelity": None, "messages": 0}]
    # A generator that writes long and scores well there, badly on short ones: weighed 3 to 1 as the real ones.
    ours = [{"fidelity": 0.5, "messages": 2}, {"fidelity": 1.0, "messages": 50}, {"fidelity": 1.0, "messages": 40}]
    assert at_lengths(ours, real) == 0.5 * 0.75 + 1.0 * 0.25
    # Nothing written in a band the real messages use: no figure rather than a made-up one.
    assert at_lengths([{"fidelity": None, "messages": 0}, *ours[1:]], real) is None
    assert at_lengths(ours, [{"fidelity": None, "messages": 0}] * 3) is None
