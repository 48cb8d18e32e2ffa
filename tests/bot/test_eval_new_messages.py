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
