"""Messages generated as each speaker by the served model, with the copy guard off and on.

This is the engine's own impersonation (same prompt, same per-row, per-attempt random streams, same
finishing and length cap, see engine/impersonate.py), advanced for all speakers together in one batch, and
split into two phases so both novelty figures come from one run:

1. guard off: each row keeps the best non-empty draft of its first attempt that has one (what a bot without
   a copy guard would post);
2. guard on: the best draft the model's copy index accepts, attempt after attempt with each attempt's own
   streams, as `impersonate` would, up to `max_attempts`; a row that never passes is "refused" (the bot
   would answer "could not write a new message").

"Best" is impersonate's choice among an attempt's drafts (several with a voice memory, see
engine/impersonate.py), as a bot that is not under load makes it: cfg.drafts for every message.

A row's guarded message is therefore exactly what `impersonate(model, speaker, n=..., srand=...)` returns
for that row (with the speaker's derived seed), without giving up the whole speaker when one row fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.impersonate import ImpersonationConfig, Prompt, best_draft, build_prompt, write_drafts
from engine.model_source import LoadedModel
from engine.sampling import SamplingConfig


@dataclass
class ModelSamples:
    unguarded: list[str]
    guarded: list[str | None]  # None: refused after max_attempts attempts
    attempts: list[int]  # attempts the guarded message took


def model_samples(model: LoadedModel, speakers: Sequence[str], n: int, seeds: Mapping[str, int],
                  cfg: ImpersonationConfig, contexts: Mapping[str, Sequence[Sequence[tuple[str, str]]]] | None = None
                  ) -> dict[str, ModelSamples]:
    """n messages per speaker, speaker s drawing from seed `seeds[s]`; `contexts[s][row]`, when given, is the
    conversation (speaker, text) lines row `row` is primed with."""
    prompts: dict[tuple[str, int], Prompt] = {}
    for s in speakers:
        sp = model.speakers.find(s)
        for row in range(n):
            ctx = contexts[s][row] if contexts and contexts.get(s) else None
            prompts[(s, row)] = build_prompt(model, sp, ctx, None, cfg.context_lines, cfg.voice)
    out = {s: ModelSamples([""] * n, [None] * n, [cfg.max_attempts] * n) for s in speakers}
    sampling = SamplingConfig(cfg.temperature, cfg.top_k, cfg.top_p)
    open_off, open_on = set(prompts), set(prompts)  # rows still without a guard-off / guard-on message
    for attempt in range(1, cfg.max_attempts + 1):
        todo = [key for key in prompts if key in open_off or key in open_on]
        if not todo:
            break
        drafts = write_drafts(model, [prompts[k] for k in todo], [None] * len(todo),
                              [(seeds[s], row) for s, row in todo], attempt, sampling, cfg)
        for (s, row), candidates in zip(todo, drafts, strict=True):
            if (s, row) in open_off and (text := best_draft(model, None, candidates, guard=False)) is not None:
                out[s].unguarded[row] = text
                open_off.discard((s, row))
            if (s, row) in open_on and (text := best_draft(model, None, candidates)) is not None:
                out[s].guarded[row] = text
                out[s].attempts[row] = attempt
                open_on.discard((s, row))
    return out
