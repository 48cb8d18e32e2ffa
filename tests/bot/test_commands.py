"""bot/commands.py: every verb and every error path, on a real store and a real (tiny) speaker-tagged model."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from bot.capture import StoreAccess
from bot.commands import Commands, Invocation, ModelGate, Reply, split_person
from bot.config import Settings, SlackSettings
from bot.errors import UsageError
from bot.ratelimit import RateLimits
from bot.safety import ZWSP
from engine.model_source import ModelHolder
from tests.bot.conftest import ADA, GENERAL, GRACE, SAM, ChatWorld, make_settings


def slack(text: str, *, user: str = GRACE, channel: str = GENERAL, kind: str = "public", name: str = "general",
          **kw) -> Invocation:
    return Invocation.from_text(text, platform="slack", user_id=user, channel_id=channel, channel_kind=kind,
                                channel_name=name, **kw)


def console(text: str) -> Invocation:
    return Invocation.from_text(text, platform="console", user_id="you", channel_id="console")


@pytest.mark.parametrize("person", ["ada", "ADA", "@ada", "Ada", "ada okonkwo", '"Ada Okonkwo"', f"<@{ADA}>",
                                    f"<@{ADA}|ada>", "<@U0NOTSTORED|ada>"])
def test_impersonate_by_any_name(commands: Commands, person: str) -> None:
    reply = commands.handle(slack(f"impersonate {person}"))
    assert not reply.private, reply.text
    assert reply.as_name == "Ada (mimic)"
    assert reply.as_icon == "https://avatars.example.invalid/ada_192.png"
    assert reply.person_id == ADA and reply.text.strip() and reply.model_version


def test_the_prompt_opens_the_message_and_mentions_in_it_are_neutralised(commands: Commands) -> None:
    reply = commands.handle(slack(f"impersonate grace <!channel> thanks <@{ADA}> & all"))
    assert reply.text.startswith(f"@{ZWSP}channel thanks @ada &amp; all"), reply.text
    assert "<!" not in reply.text and "<@" not in reply.text


def test_split_person() -> None:
    assert split_person("<@U1|ada lovelace> hi there") == ("<@U1|ada lovelace>", "hi there")
    assert split_person('"Ada Okonkwo" hi') == ("Ada Okonkwo", "hi")
    assert split_person("@ada") == ("@ada", "")
    assert split_person("  ") == ("", "")


@pytest.mark.parametrize(("text", "needle"), [
    ("impersonate bob", "no such person in the model: bob"),
    ("impersonate adda", "did you mean ada"),
    ("impersonate sam", "not enough messages from Sam yet (6)"),
    ("impersonate <@U0NOBODY>", "I have no messages from that person yet"),
    ("impersonate", "usage: impersonate &lt;person&gt;"),  # Slack text: escaped
    ("dance", "I don't know the command 'dance'"),
    ("forget ada", "only Mimic's admins can use `forget`"),
    ("retrain", "only Mimic's admins can use `retrain`"),
    ("impersonate ada " + "x" * 201, "the opening words are too long (201 characters; at most 200)"),
])
def test_errors_are_private_one_liners(commands: Commands, text: str, needle: str) -> None:
    reply = commands.handle(slack(text))
    assert reply.private and needle in reply.text, reply.text
    assert reply.as_name is None and "\n" not in reply.text and "Traceback" not in reply.text


def test_opted_out_people_are_refused_politely(commands: Commands) -> None:
    assert "Done: I won't impersonate you" in commands.handle(slack("optout", user=ADA)).text
    for person in ("ada", f"<@{ADA}>", "Ada Okonkwo"):
        reply = commands.handle(slack(f"impersonate {person}"))
        assert reply.private and reply.text == "Ada has opted out of being impersonated, sorry."
    assert "ada" not in commands.handle(slack("who")).text
    assert "back in" in commands.handle(slack("optin", user=ADA)).text
    assert not commands.handle(slack("impersonate ada")).private


def test_optout_before_ever_speaking(commands: Commands, db: Path) -> None:
    reply = commands.handle(slack("optout", user="U0LURKER", user_name="lurker"))
    assert "Done" in reply.text
    user = StoreAccess(db).person_by_id("slack", "U0LURKER")
    assert user is not None and user.opted_out  # recorded before their first message is ever captured


def test_consent_for_someone_else_needs_an_admin(commands: Commands) -> None:
    assert "only admins can name someone else" in commands.handle(slack("optout ada")).text
    assert "Done: I won't impersonate Ada" in commands.handle(console("optout ada")).text
    assert "the console has no chat identity" in commands.handle(console("optout")).text


def test_forget(settings: Settings, gate: ModelGate, db: Path, served_model: Path) -> None:
    from engine.voice import VoiceMemory, voice_path_for

    admin = replace(settings, slack=SlackSettings(admins=(GRACE,)))
    commands = Commands(admin, gate, StoreAccess(db))
    memory = voice_path_for(served_model)
    assert VoiceMemory(memory).speaker_id("ada") >= 0
    reply = commands.handle(slack(f"forget <@{ADA}>"))
    assert reply.private and reply.text.startswith("Forgot Ada: deleted ") and "messages" in reply.text
    assert "voice memories" in reply.text
    assert VoiceMemory(memory).speaker_id("ada") == -1 and VoiceMemory(memory).speaker_id("grace") >= 0
    # The model still knows ada until it is retrained: Mimic must refuse anyway, by every name.
    for person in ("ada", "Ada", f"<@{ADA}>"):
        refused = commands.handle(slack(f"impersonate {person}"))
        assert refused.private and ("forgotten" in refused.text or "opted out" in refused.text), refused.text
    assert "• ada" not in commands.handle(slack("who")).text
    assert "forgotten" in commands.handle(slack("optin", user=ADA)).text  # forgetting is for good
    assert "no one called 'nobody'" in commands.handle(slack("forget nobody")).text


def test_retrain_hook(settings: Settings, gate: ModelGate, db: Path) -> None:
    admin = replace(settings, slack=SlackSettings(admins=(GRACE,)))
    assert Commands(admin, gate).handle(slack("retrain")).text == "retraining is not configured here."
    calls: list[str] = []
    told: list[str] = []

    def queue(requested_by: str, report) -> str:
        calls.append(requested_by)
        report("training <!channel> 50%")  # progress arrives later, privately, and safe for the platform
        return "Retraining queued."

    reply = Commands(admin, gate, retrain=queue).handle(slack("retrain", notify=told.append))
    assert reply.private and reply.text == "Retraining queued." and calls == [f"slack:{GRACE}"]
    assert told == [f"training @{ZWSP}channel 50%"]


def test_who_lists_people_with_counts(commands: Commands) -> None:
    reply = commands.handle(slack("who"))
    assert reply.private
    lines = reply.text.splitlines()
    assert lines[0].startswith("I can write as 5 people")
    assert any(line.startswith("• ada (Ada): ") and line.endswith(" messages") for line in lines)
    assert "sam" not in reply.text.split("(")[0] and "1 more need at least 30 messages" in reply.text


def test_help_shows_admin_commands_to_admins_only(commands: Commands) -> None:
    assert "forget" not in commands.handle(slack("help")).text
    assert "forget <person>" in commands.handle(console("help")).text
    assert commands.handle(slack("")).text == commands.handle(slack("help")).text


def test_speak_channels(settings: Settings, gate: ModelGate, db: Path) -> None:
    commands = Commands(settings, gate, StoreAccess(db))
    for kind in ("dm", "private", "mpim", "unknown"):
        reply = commands.handle(slack("impersonate ada", channel="G0SECRET", kind=kind, name="secret"))
        assert reply.private and "I don't post in this channel" in reply.text
    listed = Commands(replace(settings, slack=SlackSettings(speak_channels=("public", "G0SECRET"))), gate)
    assert not listed.handle(slack("impersonate ada", channel="G0SECRET", kind="private")).private
    quiet = Commands(replace(settings, slack=SlackSettings(speak_channels=("#bots",))), gate)
    assert quiet.handle(slack("impersonate ada")).private
    assert not quiet.handle(slack("impersonate ada", channel="C0BOTS", name="bots")).private
    assert quiet.handle(slack("who")).text.startswith("I can write as")  # private replies work anywhere


def test_rate_limits_per_person_and_channel(settings: Settings, gate: ModelGate, db: Path) -> None:
    now = [0.0]
    limits = RateLimits(user_limit=2, channel_limit=3, window=60, clock=lambda: now[0])
    commands = Commands(settings, gate, StoreAccess(db), limits=limits)
    assert not commands.handle(slack("impersonate ada")).private
    assert commands.handle(slack("impersonate bob")).private  # refused before generation: does not count
    assert commands.handle(slack("impersonate sam")).private  # too few messages: does not count either
    assert not commands.handle(slack("impersonate grace")).private
    slow = commands.handle(slack("impersonate ada"))
    assert slow.private and slow.text.startswith("slow down: you can ask for 2 impersonations every 60 s")
    assert not commands.handle(slack("impersonate ada", user=ADA)).private
    busy = commands.handle(slack("impersonate ada", user=SAM))
    assert busy.private and "this channel has had its 3 impersonations" in busy.text
    assert not commands.handle(slack("impersonate ada", user=SAM, channel="C0OTHER", name="other")).private
    now[0] += 61
    assert not commands.handle(slack("impersonate ada")).private
    for _ in range(5):  # the console is one person at their own terminal: no limits
        assert not commands.handle(console("impersonate ada")).private


def test_no_model_loaded_yet_then_one_appears(tmp_path: Path, chat_world: ChatWorld, db: Path) -> None:
    model = tmp_path / "models" / "model.onnx"
    settings = make_settings(model, db)
    now = [0.0]
    gate = ModelGate.from_settings(settings, watch_seconds=None, retry_seconds=30, clock=lambda: now[0])
    commands = Commands(settings, gate, StoreAccess(db))
    try:
        for text in ("impersonate ada", "who"):
            reply = commands.handle(slack(text))
            assert reply.private and reply.text.startswith("no model loaded yet"), reply.text
        assert Commands(settings, None).handle(slack("impersonate ada")).text.startswith("no model loaded")
        model.parent.mkdir()
        for f in chat_world.model.parent.glob("model.*"):  # the model, its copy index and voice memory
            shutil.copy(f, model.parent / f.name)
        assert commands.handle(slack("impersonate ada")).private  # not looked for again before retry_seconds
        now[0] += 31
        assert not commands.handle(slack("impersonate ada")).private
    finally:
        gate.close()


def test_a_plain_text_model_knows_no_people(tiny_model: Path, db: Path) -> None:
    gate = ModelGate.from_settings(make_settings(tiny_model, db), watch_seconds=None)
    try:
        reply = Commands(make_settings(tiny_model, db), gate).handle(slack("impersonate ada"))
        assert reply.private and "trained on plain text" in reply.text
    finally:
        gate.close()


def test_a_bug_becomes_an_apology_and_a_logged_traceback(commands: Commands, caplog: pytest.LogCaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(commands, "_generate", broken)
    with caplog.at_level(logging.ERROR, logger="bot.commands"):
        reply = commands.handle(slack("impersonate ada"))
    assert reply == Reply("sorry, something went wrong on my side; it has been logged.", private=True)
    assert "boom" in caplog.text


def test_write_as_is_repeatable_with_a_seed(commands: Commands) -> None:
    first = commands.write_as("grace", "Good", srand=5)
    assert first == commands.write_as("grace", "Good", srand=5)
    assert first.text.startswith("Good")


def test_hot_reload_under_concurrent_requests(tmp_path: Path, chat_world: ChatWorld, db: Path) -> None:
    """Requests keep coming from many threads while the registry's `current` moves to a new version: none
    fails, and the requests after the switch are served by the new version."""
    registry = tmp_path / "registry"
    for version in ("v1", "v2"):
        (registry / "versions" / version).mkdir(parents=True)
        for f in chat_world.model.parent.glob("model.*"):
            shutil.copy(f, registry / "versions" / version / f.name)
    (registry / "current").write_text("v1\n")
    settings = make_settings(registry, db)
    gate = ModelGate.from_settings(settings, watch_seconds=None)
    commands = Commands(settings, gate, StoreAccess(db))
    try:
        assert commands.handle(slack("impersonate ada")).model_version == "v1"
        switched = threading.Event()

        def ask(i: int) -> tuple[bool, Reply]:
            after = switched.is_set()
            return after, commands.handle(slack(f"impersonate {('ada', 'grace', 'linus')[i % 3]}", user=f"U{i}"))

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(ask, i) for i in range(24)]
            tmp = registry / "current.tmp"
            tmp.write_text("v2\n")
            os.replace(tmp, registry / "current")  # the atomic switch nightly retraining makes
            assert gate.service().holder.refresh()
            switched.set()
            futures += [pool.submit(ask, i) for i in range(24, 48)]
            results = [f.result() for f in futures]
        assert all(not reply.private for _, reply in results), [r.text for _, r in results if r.private]
        assert all(reply.model_version == "v2" for after, reply in results if after)
        assert {reply.model_version for _, reply in results} <= {"v1", "v2"}
    finally:
        gate.close()


def test_the_no_model_hint_names_what_writes_a_model_there(tmp_path: Path, db: Path) -> None:
    (tmp_path / "models").mkdir()
    for path, hint in ((tmp_path / "models", "train one with `mimic retrain`"),
                       (tmp_path / "m.onnx", f"export one there with `mimic export CKPT {tmp_path / 'm.onnx'} --db")):
        gate = ModelGate.from_settings(make_settings(path, db), watch_seconds=None)
        text = Commands(make_settings(path, db), gate).handle(console("impersonate ada")).text
        assert text.startswith("no model loaded yet") and hint in text, text
        assert "mimic train --db" not in text and "not an .onnx model" not in text


def test_an_empty_registry_is_called_one(tmp_path: Path, db: Path) -> None:
    (tmp_path / "models").mkdir()
    gate = ModelGate.from_settings(make_settings(tmp_path / "models", db), watch_seconds=None)
    text = Commands(make_settings(tmp_path / "models", db), gate).handle(console("impersonate ada")).text
    assert f"({tmp_path / 'models'}: an empty model registry (no versions in it yet))" in text, text


def test_a_damaged_model_is_retried_not_loaded_per_request(tmp_path: Path, chat_world: ChatWorld, db: Path,
                                                           caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "served"
    folder.mkdir()
    for f in chat_world.model.parent.glob("model.*"):
        shutil.copy(f, folder / f.name)
    voice = folder / "model.voice.npz"
    good = voice.read_bytes()
    voice.write_bytes(good[: len(good) // 2])  # a truncated copy: zipfile.BadZipFile underneath
    settings = make_settings(folder / "model.onnx", db)
    now = [0.0]
    gate = ModelGate.from_settings(settings, watch_seconds=None, retry_seconds=30, clock=lambda: now[0])
    commands = Commands(settings, gate, StoreAccess(db))
    try:
        reply = commands.handle(slack("impersonate ada"))
        assert reply.private and reply.text.startswith("no model loaded yet") and "voice memory" in reply.text
        opened = []
        real = ModelHolder.open

        def counting(*args, **kwargs):
            opened.append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr("bot.commands.ModelHolder.open", counting)
        assert commands.handle(slack("impersonate ada")).text.startswith("no model loaded yet")
        assert opened == []  # within retry_seconds: the last answer, not another load
        voice.write_bytes(good)
        now[0] += 31
        assert not commands.handle(slack("impersonate ada")).private and len(opened) == 1
    finally:
        gate.close()


def test_an_unforeseen_load_error_is_logged_with_its_traceback_and_retried(
        tmp_path: Path, db: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("bot.commands.ModelHolder.open", broken)
    now = [0.0]
    settings = make_settings(tmp_path / "m.onnx", db)
    gate = ModelGate.from_settings(settings, watch_seconds=None, retry_seconds=30, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="bot.commands"):
        for _ in range(3):
            reply = Commands(settings, gate).handle(console("impersonate ada"))
            assert reply.text.startswith("no model loaded yet (RuntimeError: boom)"), reply.text
    assert [r.exc_info is not None for r in caplog.records] == [True]  # logged once, with its traceback


def test_write_as_refuses_opening_words_over_the_limit(commands: Commands) -> None:
    with pytest.raises(UsageError, match=r"^the opening words are too long \(201 characters; at most 200\)\.$"):
        commands.write_as("grace", "x" * 201)
    assert commands.write_as("grace", "x" * 20, srand=1).text.startswith("x" * 20)


@pytest.mark.parametrize("platform", ["slack", "discord", "console"])
def test_bidi_controls_in_the_opening_words_never_reach_the_post(commands: Commands, platform: str) -> None:
    controls = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    inv = Invocation.from_text(f"impersonate grace \u202eGood {controls}morning \u05e9\u05dc\u05d5\u05dd 😀",
                               platform=platform, user_id=GRACE, channel_id=GENERAL, channel_name="general")
    reply = commands.handle(inv)
    assert not reply.private, reply.text
    assert reply.text.startswith("Good morning \u05e9\u05dc\u05d5\u05dd 😀"), repr(reply.text)
    assert not any(c in reply.text for c in controls)


def test_forget_goes_on_past_a_damaged_voice_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bot.forget import forget_in_models
    from engine.voice import VoiceMemory, build_voice_memory

    records = [("ada", "lol the build is green"), ("grace", "Good morning, team!")] * 5
    for version in ("v1", "v2"):
        (tmp_path / "versions" / version).mkdir(parents=True)
        build_voice_memory(records, tmp_path / "versions" / version / "model.voice.npz", "\x1e")
    damaged = tmp_path / "versions" / "v1" / "model.voice.npz"
    damaged.write_bytes(damaged.read_bytes()[:300])  # zipfile.BadZipFile underneath
    with caplog.at_level(logging.ERROR, logger="bot.forget"):
        assert forget_in_models(tmp_path, "ada") == 1
    assert VoiceMemory(tmp_path / "versions" / "v2" / "model.voice.npz").speaker_id("ada") == -1
    assert "v1/model.voice.npz" in caplog.text and "unreadable voice memory" in caplog.text


def test_forget_in_chat_takes_every_linked_account(settings: Settings, gate: ModelGate, db: Path,
                                                    served_model: Path) -> None:
    """Two accounts linked as one person (say Slack and Discord): forgetting one forgets both, voice memories
    included."""
    from engine.voice import VoiceMemory, voice_path_for
    from training.store import Store

    with Store.open(db) as store:
        store.link("ada", "grace")
    commands = Commands(replace(settings, slack=SlackSettings(admins=(GRACE,))), gate, StoreAccess(db))
    assert commands.handle(slack(f"forget <@{ADA}>")).text.startswith("Forgot Ada")
    memory = VoiceMemory(voice_path_for(served_model))
    assert memory.speaker_id("ada") == -1 and memory.speaker_id("grace") == -1
    with Store.open(db) as store:
        assert store.find_user("grace").forgotten


def test_who_all_lists_everyone_on_the_console_only(commands: Commands, monkeypatch: pytest.MonkeyPatch) -> None:
    import bot.commands

    monkeypatch.setattr(bot.commands, "_WHO_LINES", 2)  # five people, two shown
    short = commands.handle(console("who")).text
    assert "…and 3 more (`mimic who --all` lists everyone)" in short
    everyone = commands.handle(console("who all")).text
    assert "more (" not in everyone and everyone.count("• ") == 5
    assert commands.handle(slack("who all")).text.count("• ") == 2  # never a flood in a chat


def test_a_linked_account_is_impersonated_as_its_person(settings: Settings, gate: ModelGate, db: Path) -> None:
    """grace's account linked to ada's: the model learns them as ada from the next training on, so asking for
    grace (by name or mention) writes as ada rather than "not in the model"."""
    from training.store import Store

    with Store.open(db) as store:
        store.link("ada", "grace")
    commands = Commands(settings, gate, StoreAccess(db))
    for person in ("grace", f"<@{GRACE}>"):
        reply = commands.handle(slack(f"impersonate {person}"))
        assert not reply.private and reply.as_name == "Ada (mimic)", reply.text
