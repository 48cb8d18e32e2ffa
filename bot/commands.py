"""Mimic's verbs, the same on every platform: an `Invocation` (who, where, what) in, a `Reply` out.

    impersonate <person> [prompt]   write a message as <person>, posted under their name + a marker;
                                    <person> may run over several words ("Sir Toby"), or be "quoted"
    who                             who can be impersonated, with message counts
    optout / optin                  stop (or allow again) being impersonated and learned from
    help
    forget <person>                 admin: delete a person's messages and profile for good
    retrain                         admin: start a retraining run now (queued to the worker process)

Nothing here knows Slack or Discord beyond the platform's name: adapters turn events into Invocations and
Replies into posts. Every reply's text is made safe for its platform here (bot/safety.py), so no adapter
can forget. User errors (ours, the engine's, the store's) become a private reply with their one-line
message; anything else is logged with its traceback and the requester gets a short apology.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot import safety
from bot.capture import StoreAccess
from bot.config import Settings
from bot.errors import ConfigError, UsageError
from bot.forget import forget_in_models
from bot.ratelimit import Clock, RateLimits
from engine.errors import EngineError, ModelLoadError, OptedOutError, UnknownSpeakerError, damage
from engine.impersonate import ImpersonationConfig
from engine.model_source import ModelHolder
from engine.service import ImpersonationService
from engine.speakers import Speaker, SpeakerDirectory
from training import normalize
from training.errors import TrainingError, UnknownUserError
from training.store import UserRecord

log = logging.getLogger(__name__)

USER_ERRORS = (UsageError, ConfigError, EngineError, TrainingError)
CONSOLE = "console"
GENERATION_TIMEOUT = 60.0  # seconds; a stuck batch must not hold a chat thread forever
_WHO_LINES = 40
# A person as typed: a platform mention (<@U1>, <@U1|name>, <@!123>), a "quoted name", or one word.
_PERSON = re.compile(r'^\s*(<@!?[A-Za-z0-9]+(?:\|[^>]*)?>|"[^"]+"|\S+)\s*(.*)$', re.DOTALL)
_MENTION = re.compile(r"^<@!?(?P<id>[A-Za-z0-9]+)(?:\|(?P<label>[^>]*))?>$")
_WORD = re.compile(r"\S+")
# Bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and marks (LRM, RLM, ALM).
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
# An unquoted name may run over this many words ("King Edward hello": "King Edward", then the opening words).
MAX_NAME_WORDS = 6

Notify = Callable[[str], None]
# The admin `retrain` hook: (requested_by "platform:user id", report progress privately) -> the first reply.
# bot/scheduler.py's RetrainQueue fits it: it queues a run for the worker; the bot process never trains.
Retrain = Callable[[str, Notify], str]

HELP = {
    "impersonate": "impersonate <person> [opening words] - write a message the way <person> would; <person> "
                   "is a name as `who` shows it, spaces and all (`impersonate Sir Toby Good morrow`), "
                   'or "in quotes"',
    "who": "who - the people I can write as, with how many of their messages I learned from",
    "optout": "optout - never impersonate me or learn from my messages",
    "optin": "optin - undo optout",
    "help": "help - this list",
    "forget": "forget <person> - (admin) delete everything stored about <person>",
    "retrain": "retrain - (admin) start retraining the model now",
}
ADMIN_COMMANDS = frozenset({"forget", "retrain"})


@dataclass(frozen=True)
class Invocation:
    platform: str  # "slack", "discord" or "console"
    user_id: str
    channel_id: str
    command: str  # the verb: "impersonate", "who", ...
    args: str = ""  # the rest, as typed
    channel_name: str | None = None
    channel_kind: str = "public"  # public | private | dm | mpim
    user_name: str | None = None  # the requester's handle, stored with their consent choice
    # Tells the requester something later, privately (a long job's progress); None: the log only.
    notify: Notify | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_text(cls, text: str, **where: Any) -> Invocation:
        """`"impersonate ada hi"` -> command "impersonate", args "ada hi" (an empty text asks for help).
        `where` holds the other fields (platform, user_id, channel_id, ...)."""
        verb, rest = ([*text.split(maxsplit=1), "", ""])[:2]
        return cls(command=verb.lower() or "help", args=rest.strip(), **where)


@dataclass(frozen=True)
class Reply:
    text: str
    as_name: str | None = None  # post under this display name (already carries the marker)
    as_icon: str | None = None
    private: bool = False  # only the requester sees it (ephemeral on Slack and Discord)
    person_id: str | None = None  # platform id of the impersonated person, when the store knows it
    model_version: str | None = None


def impersonation_config(settings: Settings) -> ImpersonationConfig:
    g = settings.generation
    return ImpersonationConfig(temperature=g.temperature, top_k=g.top_k or None,
                               top_p=g.top_p if g.top_p < 1.0 else None, max_chars=g.max_chars,
                               min_messages=settings.limits.min_messages, max_attempts=g.max_attempts,
                               context_lines=g.context_lines, voice=g.voice_memory, voice_beta=g.voice_beta,
                               drafts=g.drafts, style=g.style_ranker, max_rows=g.draft_rows)


class ModelGate:
    """The impersonation service, once a model can be loaded.

    A bot may start before its first model exists (capture fills the store; nightly training makes the
    model); until then impersonation answers "no model loaded yet", and the path is tried again at most
    every `retry_seconds`. Once loaded, the model is watched and hot-swapped by engine/model_source.py.
    """

    def __init__(self, path: str | Path, cfg: ImpersonationConfig, *, batch_window: float = 0.01,
                 max_rows: int = 64, watch_seconds: float | None = 5.0, retry_seconds: float = 30.0,
                 threads: int = 1, clock: Clock = time.monotonic):
        self.path = Path(path)
        self.cfg = cfg
        self.batch_window = batch_window
        self.max_rows = max_rows
        self.watch_seconds = watch_seconds
        self.retry_seconds = retry_seconds
        self.threads = threads
        self.clock = clock
        self._service: ImpersonationService | None = None
        self._failed: tuple[float, str] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **kw: float | int | None) -> ModelGate:
        g = settings.generation
        options: dict = {"batch_window": g.batch_window_ms / 1000, "max_rows": g.max_batch,
                         "watch_seconds": settings.storage.watch_seconds, **kw}
        return cls(settings.storage.model_path, impersonation_config(settings), **options)

    def service(self) -> ImpersonationService:
        with self._lock:
            if self._service is not None:
                return self._service
            now = self.clock()
            if self._failed is not None and now - self._failed[0] < self.retry_seconds:
                raise ModelLoadError(self._failed[1])
            try:
                holder = ModelHolder.open(self.path, threads=self.threads)
            except Exception as exc:  # a damaged file of any kind: retried like a missing one, not per request
                why = str(exc) if isinstance(exc, ModelLoadError) else damage(exc)
                if not isinstance(exc, ModelLoadError):  # unforeseen: keep its traceback
                    log.exception("loading the model at %s failed", self.path)
                self._failed = (now, f"no model loaded yet ({why}); {self._how_to_get_one()}")
                raise ModelLoadError(self._failed[1]) from exc
            if self.watch_seconds:
                holder.watch(self.watch_seconds)
            self._service = ImpersonationService(holder, self.cfg, self.batch_window, self.max_rows)
            self._failed = None
            return self._service

    def _how_to_get_one(self) -> str:
        """The hint after "no model loaded yet": what writes a model where this bot looks for one."""
        if self.path.suffix.lower() == ".onnx":  # one file: `mimic retrain` writes registries only
            return (f"export one there with `mimic export CKPT {self.path} --db ...` and it is picked up "
                    "without a restart")
        return ("train one with `mimic retrain` (or promote a version with `mimic models promote`) and it is "
                "picked up without a restart")

    def loaded(self) -> ImpersonationService | None:
        """The service if a model is loaded (tries once, never raises): for health logs."""
        try:
            return self.service()
        except ModelLoadError:
            return None

    def close(self) -> None:
        with self._lock:
            if self._service is not None:
                self._service.close()
                self._service.holder.close()
                self._service = None


def split_person(args: str) -> tuple[str, str]:
    """(person, rest) of `<@U1|ada> hello`, `"Ada Lovelace" hello`, `@ada hello` or `ada hello`."""
    m = _PERSON.match(args)
    if not m:
        return "", ""
    person = m.group(1)
    if person.startswith('"') and person.endswith('"'):
        person = person[1:-1].strip()
    return person, m.group(2).strip()


def name_forms(name: str) -> list[str]:
    """The ways `name` may be stored: as typed, its words one space apart, and joined by underscores (a
    corpus speaker name: `King Edward` is the speaker `King_Edward`)."""
    words = name.split()
    return list(dict.fromkeys([name, " ".join(words), "_".join(words)])) if words else [name]


def leading_names(args: str, most: int = MAX_NAME_WORDS) -> list[tuple[str, str]]:
    """(name, rest) for each run of two or more leading words of an unquoted `args`, longest first:
    `King Edward hi` -> [("King Edward hi", ""), ("King Edward", "hi")]."""
    words = list(_WORD.finditer(args))
    return [(" ".join(w.group() for w in words[:k]), args[words[k - 1].end():].strip())
            for k in range(min(len(words), most), 1, -1)]


def _plain_name(args: str) -> bool:
    """Whether `args` starts with a plain word (not a mention, not a "quoted name"): a name that may run
    over several words."""
    m = _PERSON.match(args)
    return bool(m) and not (m.group(1).startswith('"') or _MENTION.match(m.group(1)))


def shown_name(user: UserRecord | None, speaker: Speaker) -> str:
    if user is not None:
        return user.display_name or user.real_name or user.handle or speaker.shown_name
    return speaker.shown_name


class Commands:
    """The dispatcher. Thread-safe: adapters call `handle` from many threads at once."""

    def __init__(self, settings: Settings, models: ModelGate | None, people: StoreAccess | None = None, *,
                 limits: RateLimits | None = None, retrain: Retrain | None = None,
                 clock: Clock = time.monotonic):
        self.settings = settings
        self.models = models
        self.people = people
        lim = settings.limits
        self.limits = limits or RateLimits(lim.user_limit, lim.channel_limit, lim.window_seconds, clock)
        self.retrain = retrain

    # ---- entry points -------------------------------------------------------------------------------------

    def is_admin(self, inv: Invocation) -> bool:
        # The console is the operator at their own terminal, with the data on their own disk.
        return inv.platform == CONSOLE or inv.user_id in self.settings.admins(inv.platform)

    def check(self, inv: Invocation) -> Reply | None:
        """The cheap refusals (unknown command, missing argument, not admin, not in this channel), decided
        without the model or the store: adapters answer these in their ack."""
        if inv.command not in HELP:
            return self._private(inv, f"I don't know the command '{inv.command}'; try `help`.")
        if inv.command in ADMIN_COMMANDS and not self.is_admin(inv):
            return self._private(inv, f"only Mimic's admins can use `{inv.command}`.")
        if inv.command in ("impersonate", "forget"):
            person, prompt = split_person(inv.args)
            if not person:
                return self._private(inv, f"usage: {HELP[inv.command].split(' - ')[0]}")
            # Where an unquoted name ends ("King Edward hi") takes the store and the model to tell, so only
            # a mention's or a quoted name's opening words are measured here; _cmd_impersonate measures all.
            if inv.command == "impersonate" and not _plain_name(inv.args):
                too_long = self._prompt_too_long(inv, prompt)
                if too_long is not None:
                    return too_long
        if inv.command == "impersonate" and inv.platform != CONSOLE:
            rules = self.settings.speak_rules(inv.platform)
            if not rules.allows(inv.channel_id, inv.channel_name, inv.channel_kind):
                where = "public channels" if inv.channel_kind == "public" else "DMs and private channels"
                return self._private(inv, f"I don't post in this channel ({where} must be listed in "
                                          f"[{inv.platform}] speak_channels).")
        return None

    def _prompt_too_long(self, inv: Invocation, prompt: str) -> Reply | None:
        if len(prompt) > self.settings.limits.max_prompt_chars:
            return self._private(inv, self._too_long(prompt))
        return None

    def _too_long(self, prompt: str) -> str:
        return (f"the opening words are too long ({len(prompt)} characters; at most "
                f"{self.settings.limits.max_prompt_chars}).")

    def handle(self, inv: Invocation) -> Reply:
        """Run one command. Never raises: every failure is a private reply to the requester."""
        try:
            refused = self.check(inv)
            if refused is not None:
                return refused
            return getattr(self, f"_cmd_{inv.command}")(inv)
        except USER_ERRORS as exc:
            return self._private(inv, str(exc))
        except concurrent.futures.TimeoutError:
            log.error("generation took more than %.0f s", GENERATION_TIMEOUT)
            return self._private(inv, "that took too long; please try again in a moment.")
        except Exception:
            log.exception("command %r failed", inv.command)
            return self._private(inv, "sorry, something went wrong on my side; it has been logged.")

    # ---- impersonation ------------------------------------------------------------------------------------

    def write_as(self, person: str, prompt: str | None = None, *, platform: str = CONSOLE,
                 temperature: float | None = None, srand: int | None = None) -> Reply:
        """One message as `person`, not rate limited; raises the user error to show (for the CLI)."""
        if prompt and len(prompt) > self.settings.limits.max_prompt_chars:  # as the chat command: one rule
            raise UsageError(self._too_long(prompt))
        service = self._service()
        speaker, user = self._resolve(platform, person, service)
        return self._generate(service, platform, speaker, user, prompt, temperature, srand)

    def _cmd_impersonate(self, inv: Invocation) -> Reply:
        service = self._service()
        person, prompt, also = self._split_impersonation(inv.platform, inv.args, service)
        too_long = self._prompt_too_long(inv, prompt)
        if too_long is not None:
            return too_long
        speaker, user = self._resolve(inv.platform, person, service, also)  # refusals do not count as requests
        if inv.platform != CONSOLE:  # limits protect shared channels; the console is one person's terminal
            self.limits.acquire(f"{inv.platform}:{inv.user_id}", f"{inv.platform}:{inv.channel_id}")
        context = None
        if self.people is not None and inv.channel_id and self.settings.generation.context_lines:
            # Answer the conversation in this channel: its recent (captured, learnable) messages prime the model.
            context = self.people.conversation(inv.platform, inv.channel_id, self.settings.generation.context_lines)
        return self._generate(service, inv.platform, speaker, user, prompt, context=context)

    def _generate(self, service: ImpersonationService, platform: str, speaker: Speaker, user: UserRecord | None,
                  prompt: str | None, temperature: float | None = None, srand: int | None = None,
                  context: list[tuple[str, str]] | None = None) -> Reply:
        prompt = self._plain(platform, prompt) if prompt else None
        (msg,) = service.impersonate(speaker.name, context=context, prompt=prompt, temperature=temperature,
                                     srand=srand, timeout=GENERATION_TIMEOUT)
        text = msg.text[: self.settings.limits.max_message_chars]
        return Reply(self._safe(platform, text), as_name=shown_name(user, msg.speaker) + self.settings.posting.marker,
                     as_icon=user.avatar_url if user else None,
                     person_id=user.platform_id if user and user.platform == platform else None,
                     model_version=msg.model_version)

    def _service(self) -> ImpersonationService:
        if self.models is None:
            raise ModelLoadError("no model loaded: start Mimic with --model PATH (an .onnx file or a registry)")
        return self.models.service()

    def _split_impersonation(self, platform: str, args: str,
                             service: ImpersonationService) -> tuple[str, str, tuple[str, ...]]:
        """(person, opening words, other names the user may have meant) of `impersonate`'s arguments.

        A mention or a "quoted name" is the person as typed. Otherwise the person is the longest run of
        leading words that names someone exactly (in the store or the model, by any name they go by, with
        spaces or underscores): `King Edward hello` is King Edward and "hello" even when "King" is someone
        too. When no run of two or more words names anyone, the first word is the person, as it always was
        (`ada Good morning`); the first two words then come back as the other name meant, for the error."""
        person, prompt = split_person(args)
        if not _plain_name(args):
            return person, prompt, ()
        speakers = service.holder.get().speakers
        for name, rest in leading_names(args):
            if self._names_someone(platform, name, speakers):
                return name, rest, ()
        two = leading_names(args, 2)
        return person, prompt, (two[0][0],) if two else ()

    def _names_someone(self, platform: str, name: str, speakers: SpeakerDirectory) -> bool:
        """Whether `name` is exactly some person's name, in the store (several people count: _resolve then
        says whom it fits) or in the model."""
        if self.people is not None:
            try:
                if self._find_user(platform, name)[0] is not None:
                    return True
            except UnknownUserError:  # fits several people
                return True
        return any(speakers.find(form) is not None for form in name_forms(name))

    def _resolve(self, platform: str, person: str, service: ImpersonationService,
                 also: tuple[str, ...] = ()) -> tuple[Speaker, UserRecord | None]:
        """The model's speaker for what was typed, and their store record; refuses unknown, opted-out and
        forgotten people, and people with too few messages. `also`: other names the user may have meant,
        for the "no such person" reply."""
        user, typed = self._find_user(platform, person)
        if user is not None and self.people is not None:
            user = self.people.person_of(user)  # a linked account: the model knows its person's name
        query = user.speaker if user is not None and user.speaker else typed
        if user is not None and user.forgotten:  # found by the name they had, kept only to refuse it
            model = service.holder.get()
            known = next((sp for form in name_forms(query) if (sp := model.speakers.find(form)) is not None), None)
            raise OptedOutError(f"{known.shown_name if known else query} asked to be forgotten; I won't write as "
                                "them.")
        if user is not None and user.opted_out:
            raise OptedOutError(f"{shown_name(user, Speaker(query, 0))} has opted out of being impersonated, sorry.")
        model = service.holder.get()
        if not len(model.speakers):
            raise UnknownSpeakerError("this model was trained on plain text and knows no people; train one on a "
                                      "chat store with `mimic retrain` (served from the model registry), or with "
                                      "`mimic train --db PATH` and serve it with `--model runs/.../model.onnx`")
        speaker = next((sp for form in name_forms(query) if (sp := model.speakers.find(form)) is not None), None)
        if speaker is None:
            if user is not None:
                raise UnknownSpeakerError(f"{shown_name(user, Speaker(query, 0))} is not in the current model yet "
                                          "(it learns new people when it is retrained); try `who`.")
            model.speakers.resolve(query, also=also)  # raises "no such person in the model; did you mean ..."
            raise UnknownSpeakerError(f"no such person in the model: {query}")  # unreachable in practice
        # Checked here as well as at generation, so asking for someone with too few messages costs no quota.
        model.speakers.resolve(speaker.name, min_messages=self.settings.limits.min_messages)
        if self.people is not None and user is None:
            user = self.people.find_person(speaker.name)
            if user is None:  # in the model, gone from the store: forgotten since the last training
                raise OptedOutError(f"{speaker.shown_name} asked to be forgotten; I won't write as them.")
            if user.opted_out or user.forgotten:
                raise OptedOutError(f"{shown_name(user, speaker)} has opted out of being impersonated, sorry.")
        return speaker, user

    def _find_user(self, platform: str, person: str) -> tuple[UserRecord | None, str]:
        """The store's record for a mention (by platform id) or a name (None when unknown or no store), and
        the name as typed (a mention's label), for the model's own lookup."""
        m = _MENTION.match(person)
        if m:
            user = self.people.person_by_id(platform, m["id"]) if self.people else None
            if user is not None:
                return user, user.speaker or m["id"]
            label = (m["label"] or "").lstrip("@")
            if not label:
                raise UnknownSpeakerError("I have no messages from that person yet; try `who`.")
            person = label
        person = person.lstrip("@")
        if self.people is None:
            return None, person
        for form in name_forms(person):
            user = self.people.find_person(form)
            if user is not None:
                return user, form
        return None, person

    def _named(self, platform: str, args: str) -> tuple[UserRecord | None, str]:
        """The person `forget`/`optout`/`optin` name: a mention or a "quoted name", else all the words
        (`forget King Edward` must never forget "King"). As _find_user."""
        person = split_person(args)[0] if not _plain_name(args) else " ".join(args.split())
        return self._find_user(platform, person)

    # ---- the other verbs ------------------------------------------------------------------------------------

    def _cmd_who(self, inv: Invocation) -> Reply:
        service = self._service()
        model = service.holder.get()
        min_messages = self.settings.limits.min_messages
        lines, too_few = [], 0
        for sp in model.speakers:
            user = self.people.find_person(sp.name) if self.people is not None else None
            if self.people is not None and (user is None or user.opted_out or user.forgotten):
                continue
            if sp.messages < min_messages:
                too_few += 1
                continue
            name = shown_name(user, sp)
            lines.append(f"• {sp.name}" + (f" ({name})" if name != sp.name else "") + f": {sp.messages:,} messages")
        if not lines:
            text = "I can't write as anyone yet" + (f" ({too_few} people have fewer than {min_messages} messages)"
                                                   if too_few else "") + "."
            return self._private(inv, text)
        # The whole list only where it cannot flood a chat: the console and `mimic who --all`.
        shown = len(lines) if inv.platform == CONSOLE and inv.args.strip() == "all" else _WHO_LINES
        more = f"\n…and {len(lines) - shown} more (`mimic who --all` lists everyone)" if len(lines) > shown else ""
        note = f"\n({too_few} more need at least {min_messages} messages.)" if too_few else ""
        head = f"I can write as {len(lines)} {'person' if len(lines) == 1 else 'people'} (model {model.version}):\n"
        return self._private(inv, head + "\n".join(lines[:shown]) + more + note)

    def _consent(self, inv: Invocation, opted_out: bool) -> Reply:
        if self.people is None:
            raise UsageError("this Mimic runs without a message store, so there is nothing to opt out of.")
        if inv.args.strip():  # an admin acting for someone (the console, or a person who asked an admin)
            if not self.is_admin(inv):
                raise UsageError(f"`{inv.command}` is for yourself; only admins can name someone else.")
            user, named = self._named(inv.platform, inv.args)
            if user is None:
                raise UsageError(f"no one called '{named}' in the message store.")
            platform, platform_id, who = user.platform, user.platform_id, shown_name(user, Speaker(named, 0))
        elif inv.platform == CONSOLE:
            raise UsageError(f"the console has no chat identity; use `{inv.command} <person>`.")
        else:
            platform, platform_id, who = inv.platform, inv.user_id, "you"
        user = self.people.set_opted_out(platform, platform_id, opted_out, handle=inv.user_name if who == "you" else None)
        if user.forgotten:
            return self._private(inv, f"{'You were' if who == 'you' else who + ' was'} forgotten; "
                                      "that cannot be undone with optin.")
        if opted_out:
            return self._private(inv, f"Done: I won't impersonate {who} or learn from {'your' if who == 'you' else 'their'} "
                                      "messages any more. `optin` undoes this.")
        return self._private(inv, f"Done: {'you are' if who == 'you' else who + ' is'} back in. New messages are "
                                  "learned from the next retraining on.")

    def _cmd_optout(self, inv: Invocation) -> Reply:
        return self._consent(inv, True)

    def _cmd_optin(self, inv: Invocation) -> Reply:
        return self._consent(inv, False)

    def _cmd_forget(self, inv: Invocation) -> Reply:
        if self.people is None:
            raise UsageError("this Mimic runs without a message store; there is nothing to forget.")
        user, typed = self._named(inv.platform, inv.args)
        if user is None or user.speaker is None:
            raise UsageError(f"no one called '{typed}' in the message store.")
        name = shown_name(user, Speaker(user.speaker, 0))
        deleted, speakers = self.people.forget(user.speaker)
        memories = sum(forget_in_models(self.settings.storage.model_path, speaker) for speaker in speakers)
        log.info("forgot %s:%s on request of %s:%s (%d messages, %d voice memories)", user.platform,
                 user.platform_id, inv.platform, inv.user_id, deleted, memories)
        return self._private(inv, f"Forgot {name}: deleted {deleted:,} messages and their profile, and their words "
                                  "from the models' voice memories. I won't write as them again; the model itself "
                                  "forgets them at the next retraining.")

    def _cmd_retrain(self, inv: Invocation) -> Reply:
        if self.retrain is None:
            return self._private(inv, "retraining is not configured here.")
        notify = inv.notify

        def report(text: str) -> None:
            if notify is not None:
                notify(self._safe(inv.platform, text))
            else:
                log.info("retrain for %s:%s: %s", inv.platform, inv.user_id, text)

        return self._private(inv, self.retrain(f"{inv.platform}:{inv.user_id}", report))

    def _cmd_help(self, inv: Invocation) -> Reply:
        shown = [line for verb, line in HELP.items() if verb not in ADMIN_COMMANDS or self.is_admin(inv)]
        return self._private(inv, "Mimic writes messages the way people here do, marked as the bot.\n"
                             + "\n".join(shown))

    # ---- text in, text out -------------------------------------------------------------------------------

    def _name_of(self, platform: str) -> Callable[[str], str | None]:
        people = self.people

        def name_of(user_id: str) -> str | None:  # a linked account reads as its person, as in the corpus
            return people.speaker_of(platform, user_id) if people else None

        return name_of

    def _plain(self, platform: str, prompt: str) -> str:
        """The opening words as the model saw text in training: the same normalisation as the corpus (Slack's
        escapes undone, mention tokens as @names), so a prompt reads like the chat the model learned; and
        without bidi controls, which would let a requester make a post under a colleague's name display
        reversed or reordered (only here: people's own messages keep theirs)."""
        if platform == "slack":
            text = normalize.slack_text(prompt, self._name_of(platform))
        elif platform == "discord":
            text = normalize.discord_text(prompt, self._name_of(platform))
        else:
            text = normalize.clean_text(prompt)
        return _BIDI.sub("", text).strip()

    # ---- replies ------------------------------------------------------------------------------------------

    def _safe(self, platform: str, text: str) -> str:
        return safety.render(text, platform, users=self._name_of(platform))

    def _private(self, inv: Invocation, text: str) -> Reply:
        return Reply(self._safe(inv.platform, text), private=True)
