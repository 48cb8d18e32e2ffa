"""`mimic models list|promote|rollback`, `mimic retrain` and `mimic scheduler` through the real entry point."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import cli_models
from bot.cli import build_parser, main
from bot.retrain import RunLock
from export.registry import CHECKPOINT_FILE, MODEL_FILE, Registry, version_name


def _registry_with(data_dir: Path, n: int, rejected: int = 0, model: Path | None = None) -> list[str]:
    """A registry of n promoted versions (and some rejected ones) with placeholder files (no torch needed), or
    with a copy of `model` as each version's model.onnx (`mimic models promote` checks that it loads)."""
    reg = Registry.open(data_dir / "models", create=True)
    names = []
    for i in range(n + rejected):
        name = version_name(datetime(2026, 11, 1, 3, tzinfo=UTC) + timedelta(days=i))
        d = reg.start(name, {"created": f"2026-11-{i + 1:02d}T03:00:00+00:00", "parent": names[-1] if names else None})
        (d / MODEL_FILE).write_bytes(model.read_bytes() if model else b"onnx")
        (d / CHECKPOINT_FILE).write_bytes(b"ckpt")
        manifest = {**reg.manifest(name), "val_bpc": 2.5 - i / 10,
                    "training": {"mode": "warm-start", "steps": 100, "device": "cpu"},
                    "data": {"watermark": {"messages": 1000 + i}}}
        reg.commit(name, manifest, promote=i < n, reason="not worse" if i < n else "worse than the current one")
        names.append(name)
    return names


def _one_line_error(capsys: pytest.CaptureFixture, rc: int, needle: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mimic:")]
    assert rc == 2 and len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_list_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    names = _registry_with(tmp_path, 2, rejected=1)
    assert main(["models", "list", "--data-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["VERSION", "STATE", "CREATED"]
    current = [line for line in table if line.startswith("*")]
    assert len(current) == 1 and names[1] in current[0] and "serving" in current[0] and "2.4000" in current[0]
    assert any(names[0] in line and "was serving" in line for line in table)
    assert any(names[2] in line and "rejected" in line and "worse than" in line for line in table)

    assert main(["models", "list", "--json", "--data-dir", str(tmp_path)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["name"], v["state"], v["current"]) for v in listed] == [
        (names[0], "promoted", False), (names[1], "promoted", True), (names[2], "rejected", False)]
    assert listed[1]["parent"] == names[0] and listed[1]["val_bpc"] == pytest.approx(2.4)
    assert listed[1]["decision"]["reason"] == "not worse" and listed[1]["data"]["watermark"]["messages"] == 1001


def test_promote_and_rollback(tmp_path: Path, capsys: pytest.CaptureFixture, tiny_model: Path) -> None:
    names = _registry_with(tmp_path, 3, model=tiny_model)
    reg = Registry(tmp_path / "models")
    assert main(["models", "rollback", "--data-dir", str(tmp_path)]) == 0
    assert reg.current() == names[1] and f"rolled back to {names[1]} (was {names[2]})" in capsys.readouterr().err
    assert main(["models", "promote", names[2], "--model", str(tmp_path / "models")]) == 0
    assert reg.current() == names[2]
    # Promoting moves a pointer the bots poll; it does not claim they serve it already.
    err = capsys.readouterr().err
    assert f"promoted {names[2]} (was {names[1]}); running bots pick it up within 5 s" in err, err
    assert "now serving" not in err
    assert main(["models", "rollback", "--data-dir", str(tmp_path)]) == 0
    assert main(["models", "rollback", "--data-dir", str(tmp_path)]) == 0
    assert reg.current() == names[0]
    capsys.readouterr()
    assert main(["models", "list", "--data-dir", str(tmp_path)]) == 0
    table = {line.lstrip("* ").split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    # Both later versions were taken off again: the table says so, not "promoted".
    assert "serving" in table[names[0]] and all("rolled back" in table[n] for n in names[1:])
    _one_line_error(capsys, main(["models", "rollback", "--data-dir", str(tmp_path)]), "nothing to roll back to")
    _one_line_error(capsys, main(["models", "promote", "nope", "--data-dir", str(tmp_path)]), "no version 'nope'")


def test_missing_registry_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _one_line_error(capsys, main(["models", "list", "--data-dir", str(tmp_path)]), "no model registry here yet")


def test_config_file_and_flags_that_override_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "mimic.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "from-config"}"\n\n[retrain]\ntime_budget = 120.0\n'
                      "tolerance = 0.5\nkeep_versions = 3\n")
    _registry_with(tmp_path / "from-config", 1)
    assert main(["models", "list", "--config", str(config)]) == 0
    assert "serving" in capsys.readouterr().out

    args = build_parser().parse_args(["retrain", "--config", str(config)])
    opts = cli_models._retrain_options(args)
    assert opts.data_dir == tmp_path / "from-config" and opts.registry == tmp_path / "from-config" / "models"
    assert (opts.time_budget, opts.tolerance, opts.keep_versions, opts.from_scratch) == (120.0, 0.5, 3, False)

    args = build_parser().parse_args(["retrain", "--config", str(config), "--data-dir", str(tmp_path / "flag"),
                                      "--db", str(tmp_path / "other.db"), "--time-budget", "7", "--from-scratch",
                                      "--hidden", "64", "--speaker-slots", "2048"])
    opts = cli_models._retrain_options(args)
    assert opts.data_dir == tmp_path / "flag" and opts.registry == tmp_path / "flag" / "models"
    assert opts.db == tmp_path / "other.db" and opts.time_budget == 7.0 and opts.from_scratch
    assert opts.model == {"hidden": 64, "speaker_slots": 2048}


def test_retrain_exits_at_once_when_a_run_holds_the_lock(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with RunLock(tmp_path):
        rc = main(["retrain", "--data-dir", str(tmp_path), "--steps", "1"])
    _one_line_error(capsys, rc, "another retraining run is in progress")


def test_retrain_without_a_store_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["retrain", "--data-dir", str(tmp_path), "--steps", "1"])
    _one_line_error(capsys, rc, "retraining failed at corpus")
    assert not (tmp_path / "models").exists()  # no empty registry left behind for a mistyped path
    _registry_with(tmp_path, 1)  # with a registry, the failed run is in its history
    rc = main(["retrain", "--data-dir", str(tmp_path), "--steps", "1"])
    _one_line_error(capsys, rc, "retraining failed at corpus")
    runs = Registry(tmp_path / "models").runs()
    assert runs[-1]["status"] == "failed" and "no message store" in runs[-1]["reason"]


def test_scheduler_rejects_a_bad_schedule(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "mimic.toml"
    config.write_text('[retrain]\nschedule = "every night"\n')
    _one_line_error(capsys, main(["scheduler", "--config", str(config), "--data-dir", str(tmp_path)]), "schedule")


@pytest.mark.parametrize("flags,needle", [
    (["--tolerance", "nan"], "--tolerance must be a number of bits/char, 0 or more, not nan"),
    (["--tolerance", "-1"], "--tolerance must be"), (["--tolerance", "inf"], "--tolerance must be"),
    (["--time-budget", "0"], "--time-budget must be a positive number"), (["--steps", "0"], "--steps must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"), (["--lr", "-1"], "--lr must be a positive number"),
    (["--device", "gpu"], "--device must be auto, cpu, cuda"), (["--arch", "foo"], "--arch must be one of"),
    (["--speaker-slots", "-1"], "--speaker-slots must be 0"),
])
def test_retrain_flags_are_checked_before_any_run_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                              flags: list[str], needle: str) -> None:
    """A mistyped --tolerance nan once promoted a one-step model; a bad flag must not start (or log) a run."""
    _registry_with(tmp_path, 1)
    runs = tmp_path / "models" / "runs.jsonl"
    before = runs.read_text() if runs.exists() else ""
    _one_line_error(capsys, main(["retrain", "--data-dir", str(tmp_path), *flags]), needle)
    assert (runs.read_text() if runs.exists() else "") == before


def test_retrain_interrupted_in_training_exits_130(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C exits 130 whether it lands in training (the run records it) or after (KeyboardInterrupt)."""
    import bot.retrain
    from bot.retrain import RetrainOutcome

    stopped = RetrainOutcome("failed", "interrupted at step 54; the next run resumes from its checkpoint", "r",
                             stage="train")
    monkeypatch.setattr(bot.retrain, "run_retrain", lambda *a, **k: stopped)
    assert stopped.interrupted and not RetrainOutcome("failed", "disk full", "r", stage="train").interrupted
    assert main(["retrain", "--data-dir", str(tmp_path)]) == 130
    assert "interrupted at step 54" in capsys.readouterr().err
    terminated = RetrainOutcome("failed", "interrupted by SIGTERM at step 54; the next run resumes from its "
                                "checkpoint", "r", stage="train")
    monkeypatch.setattr(bot.retrain, "run_retrain", lambda *a, **k: terminated)
    assert terminated.interrupted and terminated.terminated and not stopped.terminated
    assert main(["retrain", "--data-dir", str(tmp_path)]) == 143  # as every other command exits on SIGTERM


def test_promote_and_rollback_refuse_a_version_that_does_not_load(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  tiny_model: Path) -> None:
    names = _registry_with(tmp_path, 2, rejected=1, model=tiny_model)
    reg = Registry(tmp_path / "models")
    broken = reg.rejected / names[2] / MODEL_FILE
    broken.write_bytes(broken.read_bytes()[:1000])
    _one_line_error(capsys, main(["models", "promote", names[2], "--data-dir", str(tmp_path)]),
                    f"version {names[2]} cannot be served")
    assert reg.current() == names[1] and (reg.rejected / names[2]).is_dir()
    reg.model_path(names[0]).write_bytes(b"onnx")  # the rollback target
    _one_line_error(capsys, main(["models", "rollback", "--data-dir", str(tmp_path)]), "cannot be served")
    assert reg.current() == names[1] and len(reg.history()) == 2


def test_promote_refuses_a_chat_version_without_its_copy_index(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               tiny_model: Path) -> None:
    names = _registry_with(tmp_path, 1, rejected=1, model=tiny_model)
    reg = Registry(tmp_path / "models")
    manifest = reg.rejected / names[1] / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "speakers": {"ada": 40}}))
    _one_line_error(capsys, main(["models", "promote", names[1], "--data-dir", str(tmp_path)]),
                    "missing model.copyindex.npy")
    assert reg.current() == names[0]


def test_promoting_a_rejected_version_says_why_it_was_rejected(tmp_path: Path, tiny_model: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    names = _registry_with(tmp_path, 1, rejected=1, model=tiny_model)
    assert main(["models", "promote", names[1], "--data-dir", str(tmp_path)]) == 0
    assert f"retraining rejected {names[1]}: worse than the current one; promoting it anyway" in caplog.text
    assert Registry(tmp_path / "models").current() == names[1]
