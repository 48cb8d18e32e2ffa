"""`mimic ingest/history/optout/optin/forget/stats` through the real entry point: output, exit codes."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bot.cli import main
from tests.training.fake_slack import TOKEN, serve, workspace
from tests.training.fixtures import ADAM, GENERAL_EXPECTED, dce_file, dmsg, write_dce, write_slack_export

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _one_line_error(err: str, needle: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("mimic:")]
    assert len(lines) == 1 and needle in lines[0], err


def _stats(capsys, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["stats", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_ingest_then_stats_in_the_default_store(cwd, capsys):
    export = write_slack_export(cwd)
    dce = write_dce(cwd, dce_file("300", "discord-general", [dmsg("1", ADAM, "hello from discord")]))
    assert main(["ingest", str(export), str(dce)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{len(GENERAL_EXPECTED) + 2} messages from 4 files: {len(GENERAL_EXPECTED) + 2} new")
    assert (cwd / "data" / "mimic.db").is_file()
    stats = _stats(capsys)
    assert stats["messages"] == len(GENERAL_EXPECTED) + 2
    assert stats["users"]["adam"] == {"messages": 1, "chars": len("hello from discord")}
    assert set(stats["channels"]) == {"general", "random", "discord-general"}
    assert main(["stats"]) == 0
    assert "speaker" in capsys.readouterr().out


def test_data_commands_use_the_configs_store(cwd, capsys, monkeypatch):
    """ingest/stats/optout/forget go to the store the bot serves ([storage] of MIMIC_CONFIG or --config)."""
    (cwd / "team.toml").write_text('[storage]\ndata_dir = "teamdata"\n')
    (cwd / "notes.txt").write_text("one\ntwo\n")
    monkeypatch.setenv("MIMIC_CONFIG", str(cwd / "team.toml"))
    assert main(["ingest", "notes.txt", "--speaker", "ztatlock"]) == 0
    assert (cwd / "teamdata" / "mimic.db").is_file() and not (cwd / "data").exists()
    assert main(["optout", "ztatlock"]) == 0
    monkeypatch.delenv("MIMIC_CONFIG")
    assert _stats(capsys, "--config", str(cwd / "team.toml"))["opted_out"] == 1


def test_ingest_text_with_a_speaker_and_a_custom_db(cwd, capsys):
    (cwd / "notes.txt").write_text("one\ntwo\n")
    assert main(["ingest", "notes.txt", "--speaker", "ztatlock", "--db", "other/m.db"]) == 0
    assert _stats(capsys, "--db", "other/m.db")["users"] == {"ztatlock": {"messages": 2, "chars": 6}}


def test_speaker_only_with_text(cwd, capsys):
    export = write_slack_export(cwd)
    assert main(["ingest", str(export), "--speaker", "x"]) == 2
    _one_line_error(capsys.readouterr().err, "--speaker is for plain text only")


def test_optout_optin_forget(cwd, capsys):
    main(["ingest", str(write_slack_export(cwd))])
    assert main(["optout", "@Alice A"]) == 0
    assert "alice is opted out" in capsys.readouterr().out
    assert "alice" not in _stats(capsys)["users"]
    assert main(["optin", "ALICE"]) == 0
    assert "alice" in _stats(capsys)["users"]
    from engine.voice import VoiceMemory, build_voice_memory

    version = cwd / "data" / "models" / "versions" / "v1"  # a registry version with a voice memory
    version.mkdir(parents=True)
    build_voice_memory([("alice", "hello there"), ("bob", "hi")], version / "model.voice.npz", "\x1e")
    assert main(["forget", "alice", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "messages deleted" in out and "removed from 1 voice memories" in out
    memory = VoiceMemory(version / "model.voice.npz")
    assert memory.speaker_id("alice") == -1 and memory.speaker_id("bob") == 1  # ids never move
    assert "alice" not in _stats(capsys)["users"]
    main(["ingest", str(write_slack_export(cwd, name="again"))])
    assert "alice" not in _stats(capsys)["users"]


def test_forget_asks_first(cwd, capsys, monkeypatch):
    main(["ingest", str(write_slack_export(cwd))])
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", open("/dev/null"))  # noqa: SIM115 - not a terminal
    assert main(["forget", "bob"]) == 2
    _one_line_error(capsys.readouterr().err, "pass --yes")
    assert "bob" in _stats(capsys)["users"]


def test_unknown_person_and_missing_store(cwd, capsys):
    assert main(["optout", "nobody"]) == 2
    _one_line_error(capsys.readouterr().err, "no message store")
    main(["ingest", str(write_slack_export(cwd))])
    capsys.readouterr()
    assert main(["optout", "nobody"]) == 2
    _one_line_error(capsys.readouterr().err, "no one called 'nobody'")


def _dump(db: Path) -> list[str]:
    from training.store import Store

    with Store.open(db) as store:
        return list(store._conn.iterdump())


def test_bad_zip_exits_2_with_one_line_and_the_store_untouched(cwd):
    main(["ingest", str(write_slack_export(cwd))])
    before = _dump(cwd / "data" / "mimic.db")
    whole = write_slack_export(cwd, name="second").read_bytes()
    (cwd / "cut.zip").write_bytes(whole[: len(whole) // 3])
    with zipfile.ZipFile(cwd / "evil.zip", "w") as archive:
        archive.writestr("users.json", "[]")
        archive.writestr("../../etc/passwd.json", "[]")
    for bad, needle in (("cut.zip", "not a readable zip"), ("evil.zip", "unsafe path")):
        proc = subprocess.run([sys.executable, "-m", "bot.cli", "ingest", bad], cwd=cwd, capture_output=True,
                              text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert proc.returncode == 2, proc.stderr
        _one_line_error(proc.stderr, needle)
    assert _dump(cwd / "data" / "mimic.db") == before


def test_a_failed_ingest_leaves_no_new_store_behind(cwd, capsys):
    assert main(["ingest", "missing.zip", "--db", "new.db"]) == 2
    _one_line_error(capsys.readouterr().err, "no such file")
    assert not list(cwd.glob("new.db*"))


def test_cannot_tell_the_format(cwd, capsys):
    (cwd / "mystery.bin").write_bytes(b"\x00")
    assert main(["ingest", "mystery.bin"]) == 2
    _one_line_error(capsys.readouterr().err, "cannot tell its format")


def test_history_slack_needs_the_token_in_the_environment(cwd, capsys):
    assert main(["history", "slack"]) == 2
    _one_line_error(capsys.readouterr().err, "SLACK_BOT_TOKEN is not set")


def test_history_slack_against_a_fake_api(cwd, capsys, monkeypatch):
    with serve(workspace()) as fake:
        monkeypatch.setenv("MY_TOKEN", TOKEN)
        monkeypatch.setenv("SLACK_API_URL", fake.base_url)
        assert main(["history", "slack", "--token-env", "MY_TOKEN", "--out", "fetched.zip"]) == 0
        assert "wrote fetched.zip" in capsys.readouterr().out
        assert _stats(capsys)["channels"] == {"general": {"messages": 7}, "random": {"messages": 1}}
        assert (cwd / "fetched.zip").is_file()
        assert main(["history", "slack", "--token-env", "MY_TOKEN", "--api-url", fake.base_url,
                     "--channels", "secret,D01AB"]) == 0
        assert set(_stats(capsys)["channels"]) == {"general", "random", "secret", "D01AB"}
        monkeypatch.setenv("MY_TOKEN", "xoxb-wrong")
        assert main(["history", "slack", "--token-env", "MY_TOKEN"]) == 2
        _one_line_error(capsys.readouterr().err, "invalid_auth")


def test_history_discord_needs_the_token_in_the_environment(cwd, capsys):
    assert main(["history", "discord"]) == 2
    _one_line_error(capsys.readouterr().err, "DISCORD_TOKEN is not set")


def test_history_discord_against_a_fake_api(cwd, capsys, monkeypatch):
    from tests.training.fake_discord import SECRET
    from tests.training.fake_discord import TOKEN as DISCORD_TOKEN
    from tests.training.fake_discord import serve as serve_discord

    with serve_discord():
        monkeypatch.setenv("DISCORD_TOKEN", DISCORD_TOKEN)
        assert main(["history", "discord"]) == 0
        assert capsys.readouterr().out.startswith("126 messages from 4 files: 126 new")
        assert set(_stats(capsys)["channels"]) == {"general", "random", "announcements", "release plan"}  # + a thread
        assert main(["history", "discord", "--channels", f"#secret,{SECRET}", "--db", "data/mimic.db"]) == 0
        assert "secret" in _stats(capsys)["channels"]
        assert main(["history", "discord"]) == 0  # nothing new since the last run
        assert capsys.readouterr().out.startswith("0 messages from 4 files")
        monkeypatch.setenv("DISCORD_TOKEN", "wrong")
        assert main(["history", "discord"]) == 2
        _one_line_error(capsys.readouterr().err, "Discord refused the bot token (HTTP 401 Unauthorized)")


def test_a_failed_history_run_leaves_no_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on: the API cannot be reached
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-2")
    db = tmp_path / "new.db"
    assert main(["history", "slack", "--db", str(db), "--api-url", f"http://127.0.0.1:{port}/api/"]) == 2
    assert "cannot connect" in capsys.readouterr().err
    assert not db.exists()


def test_stats_columns_stay_aligned_with_long_channel_names() -> None:
    from bot.cli_data import _format_stats

    stats = {"messages": 3, "chars": 30, "first": None, "last": None, "opted_out": 0,
             "users": {"ada": {"messages": 2, "chars": 20}, "a_rather_long_speaker_name_indeed_yes": {"messages": 1,
                                                                                                     "chars": 10}},
             "channels": {"general": {"messages": 2}, "king-john-play [856382924393372484]": {"messages": 1}}}
    lines = _format_stats(stats).splitlines()
    channel_rows = lines[lines.index("") + 1:][lines[lines.index("") + 1:].index("") + 1:]
    assert len({len(row) for row in channel_rows}) == 1, channel_rows
