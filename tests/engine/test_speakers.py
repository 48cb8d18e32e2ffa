"""engine/speakers.py: suggestions and the 'no such person' message when a name may run over several words."""

from __future__ import annotations

import pytest

from engine.errors import UnknownSpeakerError
from engine.speakers import SpeakerDirectory

TEAM = SpeakerDirectory({
    "ada": {"messages": 100, "display_name": "Ada", "real_name": "Ada Okonkwo"},
    "linus": {"messages": 100, "display_name": "linus", "real_name": "Linus Brandt"},
    "marvin": 100,
})


def test_suggestions_come_from_the_reading_most_like_a_name() -> None:
    assert TEAM.suggestions("Mr") == ["marvin"]
    assert TEAM.suggestions("Mr", also=("Mr Brandt",)) == ["linus"]  # the two words are closer to someone
    assert TEAM.suggestions("adda", also=("adda hello",)) == TEAM.suggestions("adda") == ["ada"]
    assert TEAM.suggestions("Dr", also=("Dr Who",)) == []


def test_resolve_names_every_reading_it_tried() -> None:
    with pytest.raises(UnknownSpeakerError, match=r"^no such person in the model: Mr \(nor Mr Brandt\); "
                                                  r"did you mean linus\?$"):
        TEAM.resolve("Mr", also=("Mr Brandt",))
    with pytest.raises(UnknownSpeakerError, match=r"^no such person in the model: bob; try `who` for the list$"):
        TEAM.resolve("bob")
