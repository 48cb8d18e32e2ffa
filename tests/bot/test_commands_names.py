"""bot/commands.py: people named by several words ("King Edward", "Ada Okonkwo"), unquoted, as `who` shows them.

Two worlds: the demo team's store and tiny model (conftest.py), where real names have two words; and a play's
cast (speakers `King`, `King_Edward`, `Sir_Toby`, ... as a `name: text` import names them) over a stand-in
model, so that one name can be the start of another.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.capture import StoreAccess
from bot.commands import HELP, Commands, Invocation, leading_names, name_forms
from bot.slack_adapter import _slash_invocation
from engine.impersonate import Impersonation
from engine.speakers import SpeakerDirectory
from tests.bot.conftest import ADA, GENERAL, GRACE, make_settings
from training.store import Store, UserRecord


def slack(text: str) -> Invocation:
    return Invocation.from_text(text, platform="slack", user_id=GRACE, channel_id=GENERAL, channel_kind="public",
                                channel_name="general")


def console(text: str) -> Invocation:
    return Invocation.from_text(text, platform="console", user_id="you", channel_id="console")


# ---- the demo team: a real store and a real model ------------------------------------------------------------


@pytest.mark.parametrize(("text", "name", "opening"), [
    ("impersonate Ada Okonkwo hello there", "Ada", "hello there"),  # a real name, then the opening words
    ("impersonate ada okonkwo hello there", "Ada", "hello there"),  # any case
    ("impersonate Grace Lindqvist Review at", "Grace", "Review at"),
    ("impersonate Master Yoda Patience", "Yoda", "Patience"),
    ("impersonate @Ada Okonkwo hello", "Ada", "hello"),
    ("impersonate Ada   Okonkwo  hello\nthere", "Ada", "hello\nthere"),  # any spacing
    ("impersonate ada Good morning", "Ada", "Good morning"),  # one word, as always: "ada Good" names nobody
    ("impersonate Ada Lovelace hi", "Ada", "Lovelace hi"),  # "Ada Lovelace" is nobody: Ada, as before
    ('impersonate "Ada Okonkwo" hello there', "Ada", "hello there"),  # quoting still works
    ('impersonate "Ada" Okonkwo hi', "Ada", "Okonkwo hi"),  # a quoted name ends where its quotes do
    (f"impersonate <@{ADA}|ada> Grace Lindqvist said", "Ada", "Grace Lindqvist said"),  # Discord's shape
])
def test_a_name_of_several_words_then_the_opening_words(commands: Commands, text: str, name: str,
                                                        opening: str) -> None:
    reply = commands.handle(slack(text))
    assert not reply.private, reply.text
    assert reply.as_name == f"{name} (mimic)"
    assert reply.text.startswith(opening), reply.text


def test_a_name_of_several_words_alone(commands: Commands) -> None:
    for text in ("impersonate Ada Okonkwo", "impersonate Marvin Paranoid", "impersonate Master Yoda"):
        reply = commands.handle(slack(text))
        assert not reply.private and reply.as_name != "Mimic", reply.text
        assert not reply.text.startswith(("Okonkwo", "Paranoid", "Yoda")), reply.text  # no name left as a prompt


def test_slack_slash_commands_take_names_of_several_words(commands: Commands) -> None:
    where = {"user_id": GRACE, "channel_id": GENERAL, "channel_name": "general", "user_name": "grace"}
    for command, verb_in_text in (({**where, "text": "Ada Okonkwo hello there"}, False),  # /impersonate ...
                                  ({**where, "text": "impersonate Ada Okonkwo hello there"}, True)):  # /mimic ...
        inv = _slash_invocation(command, verb_in_text, "public")
        assert commands.check(inv) is None
        reply = commands.handle(inv)
        assert reply.as_name == "Ada (mimic)" and reply.text.startswith("hello there"), reply.text


@pytest.mark.parametrize(("text", "needle"), [
    ("impersonate Neeraj Tandon", "no such person in the model: Neeraj (nor Neeraj Tandon); try `who`"),
    ("impersonate Neeraj Tandon I think", "no such person in the model: Neeraj (nor Neeraj Tandon); try `who`"),
    # The first word alone resembles no one; the first two words resemble Grace's real name.
    ("impersonate Dr Lindqvist", "no such person in the model: Dr (nor Dr Lindqvist); did you mean grace?"),
    ("impersonate Dr Lindqvist hello", "no such person in the model: Dr (nor Dr Lindqvist); did you mean grace?"),
    ("impersonate adda hello", "no such person in the model: adda (nor adda hello); did you mean ada"),
    ("impersonate bob", "no such person in the model: bob; try `who`"),
    ('impersonate "Ada Lovelace" hi', "no such person in the model: Ada Lovelace; try `who`"),  # quoted: as typed
])
def test_unknown_names_of_several_words(commands: Commands, text: str, needle: str) -> None:
    reply = commands.handle(slack(text))
    assert reply.private and needle in reply.text, reply.text
    assert "\n" not in reply.text


def test_opening_words_too_long_after_a_name_of_several_words(commands: Commands) -> None:
    exactly = "x" * 200  # the limit counts the opening words only, not the rest of the name
    assert not commands.handle(slack(f"impersonate Ada Okonkwo {exactly}")).private
    reply = commands.handle(slack(f"impersonate Ada Okonkwo {exactly}y"))
    assert reply.private and "the opening words are too long (201 characters; at most 200)" in reply.text
    assert commands.check(slack(f'impersonate "Ada Okonkwo" {exactly}y')) is not None  # known in the ack


def test_optout_and_forget_by_a_name_of_several_words(commands: Commands) -> None:
    assert "Done: I won't impersonate Ada" in commands.handle(console("optout Ada Okonkwo")).text
    assert "opted out" in commands.handle(slack("impersonate Ada Okonkwo hi")).text
    assert "Ada is back in" in commands.handle(console("optin ada okonkwo")).text
    # The whole text is the name: never someone named by its first word.
    assert "no one called 'Grace Hopper'" in commands.handle(console("forget Grace Hopper")).text
    assert commands.handle(console("forget Grace Lindqvist")).text.startswith("Forgot Grace")


def test_help_says_names_may_have_spaces_or_quotes(commands: Commands) -> None:
    text = commands.handle(slack("help")).text
    line = next(line for line in text.splitlines() if line.startswith("impersonate"))
    assert "`who`" in line and "spaces" in line and "quotes" in line
    assert HELP["impersonate"].split(" - ")[0] == "impersonate <person> [opening words]"  # the usage line


def test_leading_names_and_name_forms() -> None:
    assert leading_names("King Edward  Good\nmorrow") == [("King Edward Good morrow", ""),
                                                          ("King Edward Good", "morrow"),
                                                          ("King Edward", "Good\nmorrow")]
    assert leading_names("ada") == [] and leading_names("") == []
    assert [n for n, _ in leading_names("a b c d e f g h")][0] == "a b c d e f"  # six words at most
    assert name_forms("King  Edward") == ["King  Edward", "King Edward", "King_Edward"]
    assert name_forms("ada") == ["ada"]


# ---- a play's cast, where one name starts another -------------------------------------------------------------

CAST = ("King", "King Edward", "Sir Toby", "Don Pedro", "First Lord", "Neeraj Tandon", "ada")


class StandIn:
    """The model's side of the command layer: its speaker list, and 'messages' that are the opening words."""

    def __init__(self, speakers: dict[str, Any]):
        model = SimpleNamespace(speakers=SpeakerDirectory(speakers), version="v-test")
        self.holder = SimpleNamespace(get=lambda: model)

    def impersonate(self, speaker: str, *, prompt: str | None = None, **_: Any) -> list[Impersonation]:
        sp = self.holder.get().speakers.find(speaker)
        return [Impersonation(sp, f"{prompt or ''}|as {sp.name}", 1, "v-test")]

    def service(self) -> StandIn:  # the ModelGate's one method the commands use
        return self


@pytest.fixture
def cast_model() -> StandIn:
    # As `mimic ingest text` names them: a `King Edward: ...` line is the speaker King_Edward.
    return StandIn({name.replace(" ", "_"): 100 for name in CAST})


@pytest.fixture
def cast_store(tmp_path: Path) -> Path:
    db = tmp_path / "cast.db"
    with Store.open(db) as store:
        store.upsert_users([UserRecord("text", name, handle=name, workspace_id="play") for name in CAST])
    return db


@pytest.fixture(params=["store", "no store"])
def cast(request: pytest.FixtureRequest, cast_model: StandIn, cast_store: Path, tmp_path: Path) -> Commands:
    settings = make_settings(tmp_path / "none.onnx", cast_store)
    return Commands(settings, cast_model, StoreAccess(cast_store) if request.param == "store" else None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("typed", "speaker", "opening"), [
    ("King Edward Good morrow", "King_Edward", "Good morrow"),  # the longest name wins ...
    ("King Edward", "King_Edward", ""),
    ("King Good morrow", "King", "Good morrow"),  # ... and a shorter one still works
    ("King", "King", ""),
    ("king edward good morrow", "King_Edward", "good morrow"),
    ("King_Edward Good morrow", "King_Edward", "Good morrow"),  # the underscore handle, as before
    ("Sir Toby", "Sir_Toby", ""),
    ("Sir Toby Out of tune, sir", "Sir_Toby", "Out of tune, sir"),
    ("Don Pedro", "Don_Pedro", ""),
    ("First Lord", "First_Lord", ""),
    ("Neeraj Tandon I think", "Neeraj_Tandon", "I think"),
    ("@Neeraj Tandon", "Neeraj_Tandon", ""),
    ("ada Good morning", "ada", "Good morning"),
    ('"King" Edward hi', "King", "Edward hi"),  # quoted: the quotes say where the name ends
    ('"King Edward" hi', "King_Edward", "hi"),
])
def test_the_longest_leading_name_wins(cast: Commands, typed: str, speaker: str, opening: str) -> None:
    reply = cast.handle(console(f"impersonate {typed}"))
    assert not reply.private, reply.text
    assert reply.text == f"{opening}|as {speaker}"


def test_every_name_who_shows_works_unquoted(cast: Commands) -> None:
    listed = cast.handle(console("who")).text.splitlines()[1:]
    assert len(listed) == len(CAST)
    for line in listed:
        names = line.removeprefix("• ").split(":")[0]  # "King_Edward (King Edward)" or "King_Edward"
        speaker, _, shown = names.partition(" (")
        for name in (speaker, shown.rstrip(")") or speaker.replace("_", " ")):
            reply = cast.handle(console(f"impersonate {name} hello there"))
            assert reply.text == f"hello there|as {speaker}", (name, reply.text)


def test_unknown_names_in_a_cast(cast: Commands) -> None:
    reply = cast.handle(console("impersonate Sir Andrew hello"))
    assert reply.private and reply.text.startswith("no such person in the model: Sir (nor Sir Andrew); did you "
                                                   "mean Sir_Toby"), reply.text
    reply = cast.handle(console("impersonate Queen Margaret"))
    assert reply.private and reply.text.startswith("no such person in the model: Queen (nor Queen Margaret)")


def test_forget_never_takes_a_shorter_name(cast_model: StandIn, cast_store: Path, tmp_path: Path) -> None:
    commands = Commands(make_settings(tmp_path / "none.onnx", cast_store), cast_model,  # type: ignore[arg-type]
                        StoreAccess(cast_store))
    assert commands.handle(console("forget King Edward")).text.startswith("Forgot King Edward")
    assert commands.handle(console("impersonate King hi")).text == "hi|as King"  # King is untouched
    refused = commands.handle(console("impersonate King Edward hi"))
    assert refused.private and "forgotten" in refused.text, refused.text
