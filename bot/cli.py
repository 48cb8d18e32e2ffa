"""The `mimic` command line: parse, delegate, map our errors to one line and exit code 2.

Each group of subcommands lives in its own module with a `register(subparsers)` function; handlers import
their heavy dependencies (torch, onnx) inside themselves, so `mimic serve` never loads torch.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from bot import cli_core, cli_data, cli_models, cli_serve
from bot.errors import ConfigError, ConnectError, UsageError
from engine.errors import EngineError
from export.errors import ExportError
from training.errors import TrainingError

# Our own error roots: a bad input or setting, reported as one line and exit code 2. Anything else is a
# bug and keeps its traceback. (The errors modules are plain Python, so importing them costs no torch.)
USER_ERRORS = (ConfigError, UsageError, ConnectError, EngineError, TrainingError, ExportError)


class MimicParser(argparse.ArgumentParser):
    """argparse with our error format: one line on stderr, `mimic: ...`, exit code 2, naming the (sub)command
    whose --help tells more. add_subparsers() builds subcommands with the parser's own class, so they get it too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"mimic: {' '.join(message.split())} (see `{self.prog} --help`)\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        # argparse reports a subcommand's unknown flags from the top parser, with the top-level usage: report
        # them from the subcommand that was given them, whose --help lists what it takes.
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.chosen(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def subcommands(self) -> list[tuple[str, dict[str, argparse.ArgumentParser]]]:
        """(dest, {name: parser}) of each add_subparsers() group of this parser."""
        return [(a.dest, a.choices) for a in self._actions if isinstance(a, argparse._SubParsersAction)]

    def chosen(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The innermost subcommand parser `parsed` went through (`mimic history slack`'s), else this one."""
        for dest, choices in self.subcommands():
            sub = choices.get(getattr(parsed, dest, None))
            if isinstance(sub, MimicParser):
                return sub.chosen(parsed)
        return self

    def leaves(self) -> list[MimicParser]:
        """The parsers of the commands that take no further subcommand (`stats`, `history slack`, ...)."""
        subs = [p for _, choices in self.subcommands() for p in dict.fromkeys(choices.values())]
        return [leaf for p in subs if isinstance(p, MimicParser) for leaf in p.leaves()] if subs else [self]


def build_parser() -> argparse.ArgumentParser:
    parser = MimicParser(
        prog="mimic",
        description="Learn how a team talks; write a message the way one of its members would.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (cli_core, cli_data, cli_serve, cli_models):
        module.register(sub)
    for leaf in parser.leaves():
        # `mimic stats -v` as well as `mimic -v stats`. Hidden, so every --help reads as before; its own dest,
        # as a subcommand's value would replace the top-level count (main adds the two).
        leaf.add_argument("-v", "--verbose", dest="verbose_after", action="count", default=argparse.SUPPRESS,
                          help=argparse.SUPPRESS)
    return parser


def _glue_seed(argv: list[str]) -> list[str]:
    """`-seed -JON` as Darknet takes it: argparse would read `-JON` as an option, so the pair becomes
    `-seed=-JON` (a seed is any text, dashes included)."""
    out: list[str] = []
    args = iter(argv)
    for a in args:
        if a in ("-seed", "--seed"):
            value = next(args, None)
            out.append(a if value is None else f"{a}={value}")
        else:
            out.append(a)
    return out


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a Procfile runner, systemd or docker stop sends), handled as Ctrl-C is: a training run
    saves its checkpoint and says how to resume, a worker stops its run without promoting."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_glue_seed(sys.argv[1:] if argv is None else argv))
    args.verbose += vars(args).pop("verbose_after", 0)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        return _run(args)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.run(args) or 0)
    except USER_ERRORS as exc:
        print(f"mimic: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("mimic: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("mimic: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mimic generate | head` is a normal way to read a little
        return 0
    except OSError as exc:  # a path that cannot be read or written (--out, --json, ...): the user's to fix
        if args.verbose:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"mimic: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


def entry_point() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry_point()
