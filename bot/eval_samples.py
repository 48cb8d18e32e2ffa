"""Messages generated as each speaker by the served model, with the copy guard off and on.

This is the engine's own impersonation (same prompt, same per-row, per-attempt random streams, same
finishing and length cap, see engine/impersonate.py), advanced for all speakers together in one batch, and
split into two phases so both novelty figures come from one run:

1. guard off: each row keeps its first non-empty draft (what a bot without a copy guard would post);
2. guard on: rows whose draft the model's copy index rejects are sampled again with the next attempts'
   streams, as `impersonate` would, up to `max_attempts`; a row that never passes is "refused" (the bot
   would answer "could not write a new message").

A row's guarded message is therefore exactly what `impersonate(model, speaker, n=..., srand=...)` returns
for that row (with the speaker's derived seed), without giving up the whole speaker when one row fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.impersonate import (
    ImpersonationConfig,
    Prompt,
    build_prompt,
    draft_requests,
    finish_text,
    rejection,
)
from engine.model_source import LoadedModel
from engine.sampling import SamplingConfig


@dataclass
class ModelSamples:
    unguarded: list[str]
    guarded: list[str | None]  # None: refused after max_attempts drafts
    attempts: list[int]  # drafts the guarded message took


def model_samples(model: LoadedModel, speakers: Sequence[str], n: int, seeds: Mapping[str, int],
                  cfg: ImpersonationConfig, contexts: Mapping[str, Sequence[Sequence[tuple[str, str]]]] | None = None
                  ) -> dict[str, ModelSamples]:
    """n messages per speaker, speaker s drawing from seed `seeds[s]`; `contexts[s][row]`, when given, is the
    conversation (speaker, text) lines row `row` is primed with."""
    unguarded_model = dataclasses.replace(model, copy_index=None)
    prompts: dict[tuple[str, int], Prompt] = {}
    for s in speakers:
        sp = model.speakers.find(s)
        for row in range(n):
            ctx = contexts[s][row] if contexts and contexts.get(s) else None
            prompts[(s, row)] = build_prompt(model, sp, ctx, None, cfg.context_lines)
    out = {s: ModelSamples([""] * n, [None] * n, [0] * n) for s in speakers}

    sampling = SamplingConfig(cfg.temperature, cfg.top_k, cfg.top_p)

    def run(rows: list[tuple[str, int]], attempt: int) -> list[str]:
        """One draft per row, all rows in one batch; row `row`'s request is the one impersonate would make."""
        requests = [draft_requests(prompts[(s, row)], n, seeds[s], attempt, cfg.max_chars)[row] for s, row in rows]
        return [finish_text(model, None, raw, cfg.max_chars) for raw in model.generator.generate_bytes(requests, sampling)]

    pending = [(s, row) for s in speakers for row in range(n)]
    for attempt in range(1, cfg.max_attempts + 1):  # phase 1: guard off (empty drafts still resampled)
        if not pending:
            break
        still = []
        for key, text in zip(pending, run(pending, attempt), strict=True):
            if rejection(unguarded_model, None, text) is None:
                out[key[0]].unguarded[key[1]] = text
                out[key[0]].attempts[key[1]] = attempt
            else:
                still.append(key)
        pending = still
    for s, row in pending:  # empty every time: nothing to post either way
        out[s].attempts[row] = cfg.max_attempts
    pending = []
    for s in speakers:  # phase 2: the copy guard, continuing each row's own sequence of attempts
        for row in range(n):
            text = out[s].unguarded[row]
            if text and rejection(model, None, text) is None:
                out[s].guarded[row] = text
            elif text:
                pending.append((s, row))
    for attempt in range(2, cfg.max_attempts + 1):
        todo = [(s, row) for s, row in pending if out[s].attempts[row] < attempt]
        if not todo:
            break
        for (s, row), text in zip(todo, run(todo, attempt), strict=True):
            out[s].attempts[row] = attempt
            if rejection(model, None, text) is None:
                out[s].guarded[row] = text
                pending.remove((s, row))
    return out
