"""The console: Mimic's commands typed at a prompt, for trying it with no chat account at all.

Reads one command per line until end of input or `quit`. Interactive (a terminal): a prompt and line editing.
Piped (`printf 'who\\nimpersonate ada\\n' | mimic demo`): each command is echoed before its answer, so the
output reads as a transcript. The person at the console is the operator: admin commands work, and there
are no rate limits (bot/commands.py).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import replace
from typing import TextIO

from bot.commands import CONSOLE, Commands, Invocation, Reply

PROMPT = "mimic> "
QUIT = frozenset({"quit", "exit", ":q"})


def format_reply(reply: Reply) -> str:
    if reply.as_name:
        body = reply.text.replace("\n", "\n    ")
        return f"{reply.as_name}: {body}"
    return reply.text


def run_console(commands: Commands, stdin: TextIO | None = None, stdout: TextIO | None = None, *,
                interactive: bool | None = None, user: str = "you", greeting: str | None = None) -> int:
    """Serve commands from `stdin` until EOF or `quit`; returns the exit status (0)."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    if interactive is None:
        interactive = stdin.isatty() and stdout.isatty()
    if greeting:
        print(greeting, file=stdout)
    while True:
        line = _read(stdin, stdout, interactive)
        if line is None:
            break
        line = line.strip().removeprefix("/")  # `/impersonate ada`, as typed in Slack or Discord, works too
        if not line:
            continue
        if line.lower() in QUIT:
            break
        if not interactive:
            print(PROMPT + line, file=stdout)
        inv = replace(Invocation.from_text(line, platform=CONSOLE, user_id=user, channel_id=CONSOLE,
                                           channel_name=CONSOLE), notify=lambda text: print(text, file=stdout, flush=True))
        print(format_reply(commands.handle(inv)), file=stdout, flush=True)
    if interactive:
        print(file=stdout)
    return 0


def _read(stdin: TextIO, stdout: TextIO, interactive: bool) -> str | None:
    if interactive and stdin is sys.stdin and stdout is sys.stdout:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - importing it gives input() line editing and history
        try:
            return input(PROMPT)
        except EOFError:
            return None
    if interactive:
        print(PROMPT, end="", file=stdout, flush=True)
    line = stdin.readline()
    return line if line else None
