"""Speaker-conditioned generation: write one chat message the way a given person would.

The model was trained on records `speaker: text\\n`, a message's own line breaks replaced by a reserved
character (metadata `line_break`). To impersonate someone we prime with recent conversation in that format,
then `speaker: ` plus the user's opening words, and generate until the end of the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import BadRequestError, EngineError
from engine.generate import Request, decode_complete
from engine.model_source import LoadedModel
from engine.sampling import SamplingConfig
from engine.speakers import Speaker

END_OF_MESSAGE = b"\n"


@dataclass(frozen=True)
class ImpersonationConfig:
    temperature: float = 0.7
    top_k: int | None = None
    top_p: float | None = None
    max_chars: int = 400  # longest message posted
    min_messages: int = 30  # fewer training messages than this: "not enough messages yet"
    max_attempts: int = 8  # resamples when a draft is empty or copies a training message
    context_lines: int = 12  # most recent conversation lines used for priming

    def __post_init__(self) -> None:
        SamplingConfig(self.temperature, self.top_k, self.top_p)  # validates
        if self.max_chars < 1 or self.max_attempts < 1:
            raise BadRequestError("max_chars and max_attempts must be at least 1")


@dataclass(frozen=True)
class Impersonation:
    speaker: Speaker
    text: str
    attempts: int
    model_version: str


class NoSpeakersError(EngineError):
    pass


class NoAcceptableMessageError(EngineError):
    pass


def encode_record(speaker: str, text: str, line_break: str) -> str:
    return f"{speaker}: {text.replace(chr(10), line_break)}\n"


def build_prompt(model: LoadedModel, speaker: Speaker, context: Sequence[tuple[str, str]] | None,
                 prompt: str | None, context_lines: int) -> bytes:
    """`\\n` + recent `name: text` records + `speaker: ` + the user's opening words, as bytes."""
    lb = model.line_break or "\n"
    lines = [encode_record(name, text, lb) for name, text in (context or [])[-context_lines:] if text.strip()]
    opening = (prompt or "").replace("\n", lb)
    return ("\n" + "".join(lines) + f"{speaker.name}: {opening}").encode("utf-8")


def finish_text(model: LoadedModel, prompt: str | None, generated: bytes, max_chars: int) -> str:
    """The posted message: the user's opening words plus the continuation, line breaks restored, length capped."""
    text = (prompt or "") + decode_complete(generated)
    if model.line_break:
        text = text.replace(model.line_break, "\n")
    text = text.strip()
    if len(text) > max_chars:
        cut = text[:max_chars - 1]
        space = cut.rfind(" ")
        text = (cut[:space] if space > max_chars // 2 else cut).rstrip() + "…"
    return text


def rejection(model: LoadedModel, prompt: str | None, text: str) -> str | None:
    """Why a draft cannot be posted, or None when it can."""
    if not text.strip() or text.strip() == (prompt or "").strip():
        return "empty"
    if model.copy_index is not None and model.copy_index.copies(text):
        return "copies a training message"
    return None


def resolve_speaker(model: LoadedModel, query: str, cfg: ImpersonationConfig,
                    opted_out: frozenset[str] = frozenset()) -> Speaker:
    if not len(model.speakers):
        raise NoSpeakersError("this model was trained on plain text and knows no speakers; "
                              "train it on a chat store (mimic train --db ...)")
    return model.speakers.resolve(query, opted_out=opted_out, min_messages=cfg.min_messages)


def draft_requests(prompt_bytes: bytes, n: int, srand: int | None, attempt: int, max_chars: int) -> list[Request]:
    """n generation requests; each row and attempt gets its own reproducible random stream."""
    seeds = [None if srand is None else (srand, row, attempt) for row in range(n)]
    return [Request(prompt_bytes, max_chars * 4, s, END_OF_MESSAGE) for s in seeds]  # up to 4 bytes a char


@dataclass(frozen=True)
class Job:
    """One impersonation request."""

    speaker: str
    context: Sequence[tuple[str, str]] | None = None
    prompt: str | None = None
    n: int = 1
    temperature: float | None = None
    srand: int | None = None
    opted_out: frozenset[str] = frozenset()


@dataclass
class _Plan:
    job: Job
    speaker: Speaker
    sampling: SamplingConfig
    prompt_bytes: bytes
    done: dict[int, Impersonation]


def impersonate_batch(model: LoadedModel, jobs: Sequence[Job],
                      cfg: ImpersonationConfig = ImpersonationConfig()) -> list[list[Impersonation] | EngineError]:
    """Run many jobs together: every pending draft of every job advances in one batch per sampling setting.

    Returns, per job, its messages or the EngineError to show its requester (unknown speaker, ...).
    """
    results: list[list[Impersonation] | EngineError | None] = [None] * len(jobs)
    plans: dict[int, _Plan] = {}
    for i, job in enumerate(jobs):
        try:
            if job.n < 1:
                raise BadRequestError("n must be at least 1")
            sp = resolve_speaker(model, job.speaker, cfg, job.opted_out)
            temp = job.temperature if job.temperature is not None else cfg.temperature
            sampling = SamplingConfig(temp, cfg.top_k, cfg.top_p)
            plans[i] = _Plan(job, sp, sampling, build_prompt(model, sp, job.context, job.prompt, cfg.context_lines), {})
        except EngineError as exc:
            results[i] = exc
    for attempt in range(1, cfg.max_attempts + 1):
        groups: dict[SamplingConfig, list[tuple[int, int]]] = {}
        for i, plan in plans.items():
            for row in range(plan.job.n):
                if row not in plan.done:
                    groups.setdefault(plan.sampling, []).append((i, row))
        if not groups:
            break
        for sampling, rows in groups.items():
            requests = [draft_requests(plans[i].prompt_bytes, plans[i].job.n, plans[i].job.srand, attempt,
                                       cfg.max_chars)[row] for i, row in rows]
            for (i, row), raw in zip(rows, model.generator.generate_bytes(requests, sampling), strict=True):
                plan = plans[i]
                text = finish_text(model, plan.job.prompt, raw, cfg.max_chars)
                if rejection(model, plan.job.prompt, text) is None:
                    plan.done[row] = Impersonation(plan.speaker, text, attempt, model.version)
    for i, plan in plans.items():
        if len(plan.done) == plan.job.n:
            results[i] = [plan.done[r] for r in range(plan.job.n)]
        else:
            results[i] = NoAcceptableMessageError(
                f"could not write a new message as {plan.speaker.shown_name} "
                "(every draft was empty or a copy); try again")
    return results  # type: ignore[return-value]


def impersonate(model: LoadedModel, speaker: str, context: Sequence[tuple[str, str]] | None = None,
                prompt: str | None = None, n: int = 1, temperature: float | None = None,
                srand: int | None = None, cfg: ImpersonationConfig = ImpersonationConfig(),
                opted_out: frozenset[str] = frozenset()) -> list[Impersonation]:
    """n messages in `speaker`'s voice (raises the EngineError a requester should see)."""
    (result,) = impersonate_batch(model, [Job(speaker, context, prompt, n, temperature, srand, opted_out)], cfg)
    if isinstance(result, EngineError):
        raise result
    return result
