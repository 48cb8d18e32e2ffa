"""The `mimic` parser itself: a usage error is one `mimic:` line naming the (sub)command's --help, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import build_parser, main


def usage_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """The whole of stderr for `mimic ARGV`, which must be a usage error."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


@pytest.mark.parametrize(("argv", "line"), [
    (["stats", "--bogus"], "mimic: unrecognized arguments: --bogus (see `mimic stats --help`)"),
    (["history", "slack", "--nope", "x"], "mimic: unrecognized arguments: --nope x (see `mimic history slack --help`)"),
    (["eval", "--samples", "x"], "mimic: argument --samples: invalid int value: 'x' (see `mimic eval --help`)"),
    (["serve", "telegram"], "mimic: argument platform: invalid choice: 'telegram' (choose from 'slack', 'discord', "
                            "'console') (see `mimic serve --help`)"),
    (["history"], "mimic: the following arguments are required: PLATFORM (see `mimic history --help`)"),
    ([], "mimic: the following arguments are required: COMMAND (see `mimic --help`)"),
])
def test_a_usage_error_is_one_line_naming_the_commands_help(capsys: pytest.CaptureFixture, argv: list[str],
                                                            line: str) -> None:
    assert usage_error(capsys, argv) == line + "\n"


def test_help_is_argparses_own(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["stats", "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mimic stats [-h] [--db PATH] [--config PATH] [--json]\n")
    assert "verbose" not in out  # -v after the command works, but is not listed again under each command


def test_verbose_after_the_command_adds_to_verbose_before_it() -> None:
    parser = build_parser()
    assert parser.parse_args(["stats"]).verbose == 0
    for argv in (["-v", "-v", "stats"], ["stats", "-vv"], ["-v", "stats", "-v"]):
        args = parser.parse_args(argv)
        assert args.verbose + vars(args).get("verbose_after", 0) == 2, argv


def test_verbose_after_the_command_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["stats", "-v", "--db", str(tmp_path / "missing.db")]) == 2  # the store's error, not the flag's
    assert "no message store here" in capsys.readouterr().err
