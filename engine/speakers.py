"""Who a model can impersonate: the speaker list from the ONNX metadata, and lookup by any name a user types.

Metadata `speakers` is JSON, either {"ztatlock": 1234, ...} (message counts) or
{"ztatlock": {"messages": 1234, "display_name": "Zach", "real_name": "Zachary Tatlock"}, ...}; a
speaker-conditioned model adds each person's embedding row, "slot" (0 or absent: none, written for
unconditioned).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.errors import OptedOutError, TooFewMessagesError, UnknownSpeakerError


@dataclass(frozen=True)
class Speaker:
    name: str  # canonical speaker name, as in the corpus ("name: text")
    messages: int
    display_name: str = ""
    real_name: str = ""
    aliases: tuple[str, ...] = field(default=(), compare=False)
    slot: int = 0  # row of the model's speaker embedding; 0: the model has none for them

    @property
    def shown_name(self) -> str:
        return self.display_name or self.real_name or self.name


def _key(name: str) -> str:
    return name.strip().lstrip("@").casefold()


class SpeakerDirectory:
    def __init__(self, speakers: dict[str, object] | None):
        self.speakers: dict[str, Speaker] = {}
        for name, info in (speakers or {}).items():
            if isinstance(info, dict):
                sp = Speaker(name, int(info.get("messages", 0)), str(info.get("display_name") or ""),
                             str(info.get("real_name") or ""), slot=int(info.get("slot") or 0))
            else:
                sp = Speaker(name, int(info))
            self.speakers[name] = sp
        # Canonical names win over display names, which win over real names, when two people collide.
        self._lookup: dict[str, Speaker] = {}
        for attr in ("real_name", "display_name", "name"):
            for sp in self.speakers.values():
                value = getattr(sp, attr)
                if value:
                    self._lookup[_key(value)] = sp

    def __len__(self) -> int:
        return len(self.speakers)

    def slots(self) -> dict[str, int]:
        """Speaker -> embedding slot, for those the model has a slot for ({} for an unconditioned model)."""
        return {name: sp.slot for name, sp in self.speakers.items() if sp.slot}

    def __iter__(self):
        return iter(sorted(self.speakers.values(), key=lambda s: (-s.messages, s.name)))

    def find(self, query: str) -> Speaker | None:
        return self._lookup.get(_key(query))

    def suggestions(self, query: str, n: int = 3, *, also: Sequence[str] = ()) -> list[str]:
        """Up to `n` speaker names close to `query`, closest first. `also`: other readings of what was typed
        (its first two words, say); the suggestions are those for the reading most like someone's name."""
        names = {_key(k): sp.name for k, sp in self._lookup.items()}
        best: tuple[float, list[str]] = (0.0, [])
        for q in (query, *also):
            typed = _key(q)
            close = difflib.get_close_matches(typed, list(names), n=n * 2, cutoff=0.5)
            if not close:
                continue
            top = difflib.SequenceMatcher(None, close[0], typed).ratio()  # as get_close_matches scores
            if top > best[0]:
                best = (top, close)
        out: list[str] = []
        for c in best[1]:
            if names[c] not in out:
                out.append(names[c])
        return out[:n]

    def resolve(self, query: str, *, opted_out: frozenset[str] = frozenset(), min_messages: int = 0,
                also: Sequence[str] = ()) -> Speaker:
        """The speaker `query` names, or a SpeakerError whose message can be shown to the user as it is.
        `also`: other names the user may have meant (multi-word readings), named in the error with `query`."""
        sp = self.find(query)
        if sp is None:
            hint = self.suggestions(query, also=also)
            more = f"; did you mean {', '.join(hint)}?" if hint else "; try `who` for the list"
            nor = "".join(f" (nor {a.strip()})" for a in also)
            raise UnknownSpeakerError(f"no such person in the model: {query.strip()}{nor}{more}")
        if sp.name in opted_out:
            raise OptedOutError(f"{sp.shown_name} has opted out of being impersonated, sorry.")
        if sp.messages < min_messages:
            raise TooFewMessagesError(f"not enough messages from {sp.shown_name} yet ({sp.messages})")
        return sp
