"""bot/console_adapter.py: commands typed (or piped) at a prompt."""

from __future__ import annotations

import io

from bot.commands import Commands, Reply
from bot.console_adapter import PROMPT, format_reply, run_console


def session(commands: Commands, text: str, **kw) -> list[str]:
    out = io.StringIO()
    assert run_console(commands, io.StringIO(text), out, **kw) == 0
    return out.getvalue().splitlines()


def test_piped_commands_read_as_a_transcript(commands: Commands) -> None:
    lines = session(commands, "who\n\nimpersonate ada\nimpersonate bob\n")
    assert lines[0] == PROMPT + "who"
    assert lines[1].startswith("I can write as 5 people")
    at = lines.index(PROMPT + "impersonate ada")
    assert lines[at + 1].startswith("Ada (mimic): ")
    assert lines[-2] == PROMPT + "impersonate bob"
    assert lines[-1].startswith("no such person in the model: bob")


def test_a_leading_slash_as_in_slack_is_accepted(commands: Commands) -> None:
    lines = session(commands, "/impersonate ada\n/quit\nwho\n")
    assert lines[0] == PROMPT + "impersonate ada" and lines[1].startswith("Ada (mimic): ")
    assert len(lines) == 2  # /quit stopped it


def test_quit_and_end_of_input_stop(commands: Commands) -> None:
    assert session(commands, "help\nquit\nwho\n")[-1] != PROMPT + "who"
    assert session(commands, "") == []
    assert session(commands, "exit\nwho") == []


def test_console_is_admin_and_not_rate_limited(commands: Commands) -> None:
    lines = session(commands, "help\n" + "impersonate grace\n" * 8)
    assert any("forget <person>" in line for line in lines)
    assert sum(line.startswith("Grace (mimic): ") for line in lines) == 8


def test_late_messages_are_printed(commands: Commands) -> None:
    def queue(requested_by: str, report) -> str:
        report("retraining finished: promoted v2")  # the worker reports from another thread, later
        return "queued"

    lines = session(Commands(commands.settings, commands.models, commands.people, retrain=queue), "retrain\n")
    assert lines[1:] == ["retraining finished: promoted v2", "queued"]


def test_interactive_prompt(commands: Commands) -> None:
    out = io.StringIO()
    run_console(commands, io.StringIO("help\n"), out, interactive=True, greeting="hello")
    text = out.getvalue()
    assert text.startswith("hello\n" + PROMPT) and PROMPT + "help" not in text


def test_format_reply() -> None:
    assert format_reply(Reply("line one\nline two", as_name="Grace (mimic)")) == "Grace (mimic): line one\n    line two"
    assert format_reply(Reply("just text", private=True)) == "just text"
