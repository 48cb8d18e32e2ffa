"""`mimic train/export/generate/eval` through the real entry point: outputs, exit codes, one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mimic:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_generate_prints_seed_then_text_and_nothing_else(tiny_model: Path) -> None:
    proc = run_cli("generate", str(tiny_model), "-len", "50", "-seed", "the quick", "-srand", "0", "-temp", "0.05")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("the quick brown fox")
    assert proc.stdout.endswith("\n")


def test_darknet_and_double_dash_flags_agree(tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", str(tiny_model), "-len", "40", "-seed", "fox", "-srand", "9", "-temp", "0.9"]) == 0
    single = capsys.readouterr().out
    assert main(["generate", str(tiny_model), "--len", "40", "--seed", "fox", "--srand", "9", "--temp", "0.9"]) == 0
    assert capsys.readouterr().out == single


def test_seed_escape_newline(tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", str(tiny_model), "-len", "5", "-seed", "a\\nb", "-srand", "1"]) == 0
    assert capsys.readouterr().out.startswith("a\nb")


def test_eval_reports_bits_per_char(tiny_model: Path, repeated_text_file: Path, capsys) -> None:
    assert main(["eval", str(tiny_model), str(repeated_text_file)]) == 0
    bpc = float(capsys.readouterr().out.split()[0])
    assert 0 <= bpc < 1.0  # the model has memorised this text


def test_export_rebuilds_the_same_model(tiny_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "again.onnx"
    assert main(["export", str(tiny_run / "last.pt"), str(out)]) == 0
    assert main(["generate", str(out), "-len", "60", "-srand", "4"]) == 0
    again = capsys.readouterr().out
    assert main(["generate", str(tiny_run / "model.onnx"), "-len", "60", "-srand", "4"]) == 0
    assert capsys.readouterr().out == again


def test_train_accepts_darknets_file_flag(repeated_text_file: Path, tmp_path: Path) -> None:
    rc = main(["train", "-file", str(repeated_text_file), "--hidden", "8", "--steps", "2", "--batch-size", "2",
               "--seq-len", "8", "--threads", "1", "--out", str(tmp_path / "r")])
    assert rc == 0 and (tmp_path / "r" / "model.onnx").is_file() and (tmp_path / "r" / "last.pt").is_file()


def test_train_on_a_store_is_speaker_conditioned_and_resume_keeps_the_slots(tmp_path: Path) -> None:
    from engine.session import ModelSession
    from tests.bot.eval_fixtures import build_store, chat_messages
    from training.checkpoint import load_checkpoint

    db = build_store(tmp_path / "mimic.db", chat_messages(120))
    small = ["--hidden", "8", "--steps", "2", "--batch-size", "2", "--seq-len", "8", "--threads", "1"]
    assert main(["train", "--db", str(db), *small, "--out", str(tmp_path / "r")]) == 0
    ckpt = load_checkpoint(tmp_path / "r" / "last.pt")
    assert ckpt["model_config"]["speaker_slots"] == 1024  # the default for a chat store
    table = ckpt["speaker_slots"]
    assert set(table) == {"ada", "grace", "linus", "mo"} and sorted(table.values()) == [1, 2, 3, 4]
    session = ModelSession(tmp_path / "r" / "model.onnx")
    assert session.conditioned and {k: v["slot"] for k, v in session.meta_json("speakers").items()} == table

    assert main(["train", "--db", str(db), *small, "--out", str(tmp_path / "r"),
                 "--resume", str(tmp_path / "r" / "last.pt")]) == 0
    assert load_checkpoint(tmp_path / "r" / "last.pt")["speaker_slots"] == table

    assert main(["train", "--db", str(db), *small, "--speaker-slots", "0", "--out", str(tmp_path / "u")]) == 0
    assert not ModelSession(tmp_path / "u" / "model.onnx").conditioned
    assert main(["train", "--db", str(db), *small, "--arch", "darknet-rnn", "--no-export",
                 "--out", str(tmp_path / "d")]) == 0
    assert load_checkpoint(tmp_path / "d" / "last.pt")["model_config"]["speaker_slots"] == 0  # Darknet's: never
    assert main(["train", "--db", str(db), *small, "--arch", "darknet-rnn", "--speaker-slots", "8",
                 "--out", str(tmp_path / "x")]) == 2


@pytest.mark.parametrize("make,args,needle", [
    (None, ["train", "{tmp}/missing.txt", "--steps", "1"], "no such file"),
    ("empty", ["train", "{tmp}/empty.txt", "--steps", "1"], "empty"),
    ("dir", ["train", "{tmp}/adir", "--steps", "1"], "directory"),
    ("short", ["train", "{tmp}/short.txt", "--steps", "1"], "fewer than one training window"),
    ("short", ["train", "{tmp}/short.txt", "--steps", "1", "--arch", "transformer"], "unknown architecture"),
    ("short", ["train", "{tmp}/short.txt", "--steps", "1", "--speaker-slots", "8"], "--speaker-slots needs --db"),
    ("garbage", ["export", "{tmp}/garbage.pt", "{tmp}/o.onnx"], "not a readable Mimic checkpoint"),
    ("garbage", ["generate", "{tmp}/garbage.pt"], "not a valid ONNX model"),
    (None, ["generate", "{tmp}/missing.onnx"], "no such model file"),
    ("model", ["generate", "{model}", "-temp", "0"], "temperature"),
    ("model", ["generate", "{model}", "-temp", "-1"], "temperature"),
    ("model", ["eval", "{model}", "{tmp}/missing.txt"], "no such file"),
    ("dir", ["eval", "{model}", "{tmp}/adir"], "adir: is a directory"),
    ("model", ["eval", "{model}", "/dev/null"], "/dev/null: the file is empty"),
    ("model", ["generate", "{ckpt}"], "last.pt: this looks like a Mimic checkpoint, not an ONNX model; run `mimic "
                                      "export"),
    ("model", ["export", "{model}", "{tmp}/o.onnx"], "model.onnx: this is already an ONNX model"),
    ("long", ["train", "{tmp}/long.txt", "--steps", "1", "--lr", "-1"], "--lr must be a positive number"),
    ("long", ["train", "{tmp}/long.txt", "--steps", "1", "--threads", "0"], "--threads must be at least 1"),
    ("long", ["train", "{tmp}/long.txt", "--time-budget", "0"], "--time-budget must be a positive number"),
    ("long", ["train", "{tmp}/long.txt", "--steps", "1", "--layers", "0"], "layers must be at least 1"),
    ("long", ["train", "{tmp}/long.txt", "--steps", "1", "--out", "{tmp}/long.txt/run"], "Not a directory"),
    ("model", ["eval", "{model}", "{tmp}/long.txt", "--json", "{tmp}/long.txt/e.json"], "long.txt"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, tiny_model: Path, make, args, needle) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "adir").mkdir()
    (tmp_path / "short.txt").write_text("tiny")
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "long.txt").write_text("the quick brown fox jumps over the lazy dog. " * 200)
    argv = [a.format(tmp=tmp_path, model=tiny_model, ckpt=tiny_model.parent / "last.pt") for a in args]
    assert_one_line_error(run_cli(*argv), needle)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_saves_a_checkpoint_first(tmp_path: Path, repeated_text_file: Path, signame: str) -> None:
    """SIGTERM (docker stop, systemd, a Procfile runner) is handled as Ctrl-C is."""
    import signal
    import threading

    from training.checkpoint import load_checkpoint

    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "train", str(repeated_text_file), "--hidden", "16",
                             "--steps", "1000000", "--batch-size", "2", "--seq-len", "16", "--threads", "1",
                             "--checkpoint-every", "0", "--eval-every", "0", "--out", str(tmp_path / "run")],
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    seen = threading.Event()
    chunks: list[bytes] = []

    def read() -> None:
        while chunk := proc.stderr.read1(4096):
            chunks.append(chunk)
            if b"step=" in b"".join(chunks[-3:]):
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(300), b"".join(chunks)  # training is under way
        proc.send_signal(getattr(signal, signame))
        assert proc.wait(120) == (143 if signame == "SIGTERM" else 130)
    finally:
        if proc.poll() is None:  # never leave a million-step training behind
            proc.kill()
            proc.wait()
    reader.join(10)
    err = b"".join(chunks).decode(errors="replace")
    assert "resume with: mimic train" in err and "Traceback" not in err
    assert ("terminated" if signame == "SIGTERM" else "interrupted") in err
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] >= 1


def test_seed_that_is_not_utf8_is_one_line_and_exit_2(tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", str(tiny_model), "-len", "5", "-seed", os.fsdecode(b"J\xff"), "-srand", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mimic: -seed is not valid UTF-8 text"]


def test_a_seed_may_start_with_a_dash(tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", str(tiny_model), "-len", "5", "-seed", "-JON", "-srand", "1"]) == 0
    assert capsys.readouterr().out.startswith("-JON")


def test_any_integer_srand_works_taken_modulo_2_64(tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    """numpy refuses negative seeds; before this, -srand -1 printed the seed and then a traceback."""
    assert main(["generate", str(tiny_model), "-len", "40", "-srand", "-1", "-temp", "1.5"]) == 0
    negative = capsys.readouterr().out
    assert main(["generate", str(tiny_model), "-len", "40", "-srand", str(2**64 - 1), "-temp", "1.5"]) == 0
    assert capsys.readouterr().out == negative and len(negative.encode()) >= 40


def test_eval_reads_a_fifo_as_train_does(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`mimic eval MODEL <(zcat text.gz)` is a pipe: read it, do not call it missing."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs FIFOs")
    import threading

    fifo = tmp_path / "text.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=("the quick brown fox jumps over the lazy dog. " * 20,),
                              daemon=True)  # never left blocked on open() should eval not read the FIFO
    writer.start()
    try:
        assert main(["eval", str(tiny_model), str(fifo)]) == 0
    finally:
        writer.join(10)
    assert float(capsys.readouterr().out.split()[0]) < 1.0


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be made")
def test_export_to_an_unwritable_place_names_the_target(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(tiny_run / "last.pt"), "/proc/x.onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(": /proc/x.onnx"), err  # not the temporary /proc/.x.onnx.XXXX


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_generate_writes_utf8_whatever_the_locale(tiny_model: Path, encoding: str) -> None:
    """An emoji seed (and U+FFFD for a byte that is not UTF-8) on a Latin-1 or ASCII stdout used to crash."""
    args = [sys.executable, "-m", "bot.cli", "generate", str(tiny_model), "-len", "30", "-srand", "3", "-temp", "2",
            "-seed", "😀 "]
    runs = {enc: subprocess.run(args, cwd=ROOT, capture_output=True, timeout=300,
                                env={**os.environ, "PYTHONIOENCODING": enc}) for enc in (encoding, "utf-8")}
    assert runs[encoding].returncode == 0, runs[encoding].stderr
    assert runs[encoding].stdout == runs["utf-8"].stdout and runs["utf-8"].stdout.startswith("😀 ".encode())
