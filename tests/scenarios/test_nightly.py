"""Whole journeys of nightly retraining on the CPU with a tiny model, against a running engine.

export on disk -> `mimic ingest` -> `mimic retrain` -> promoted -> a ModelHolder serves it; new messages ->
an admin's request through the worker -> warm start from the first version -> the holder reloads; a worse
candidate stays out; rollback. Then the failures: SIGKILL mid-training, a corrupt `current`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.retrain import run_retrain
from bot.scheduler import RetrainQueue, requests_job
from engine.model_source import ModelHolder, ModelSource
from export.registry import CHECKPOINT_FILE, Registry
from tests.bot.test_retrain import START, STYLES, fill_store, tiny_options

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--steps", "40", "--hidden", "24", "--batch-size", "8", "--seq-len", "32", "--lr", "0.01",
        "--threads", "1", "--device", "cpu", "--checkpoint-every", "0"]


def write_slack_export(root: Path, n: int = 400, seed: int = 0) -> Path:
    """A small official-layout Slack export: users.json, channels.json, general/<day>.json."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    users = [{"id": f"U0{i}{name.upper()}", "name": name, "deleted": False, "is_bot": False,
              "profile": {"display_name": name.title(), "real_name": f"{name.title()} Example"}}
             for i, name in enumerate(STYLES)]
    (root / "users.json").write_text(json.dumps(users))
    (root / "channels.json").write_text(json.dumps([{"id": "C01GEN", "name": "general", "created": START,
                                                     "members": [u["id"] for u in users]}]))
    days: dict[str, list[dict[str, Any]]] = {}
    for i in range(n):
        user = rng.choice(users)
        ts = START + 60 * i
        day = time.strftime("%Y-%m-%d", time.gmtime(ts))
        days.setdefault(day, []).append({"type": "message", "user": user["id"], "ts": f"{ts}.000100",
                                         "text": rng.choice(STYLES[user["name"]])})
    (root / "general").mkdir()
    for day, messages in days.items():
        (root / "general" / f"{day}.json").write_text(json.dumps(messages))
    return root


def test_nightly_journey(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    export = write_slack_export(tmp_path / "export")
    assert main(["ingest", str(export), "--db", str(data / "mimic.db")]) == 0

    # 1. The first run trains from scratch and promotes; a running engine serves it.
    assert main(["retrain", "--data-dir", str(data), *TINY]) == 0
    reg = Registry(data / "models")
    first = reg.current()
    assert first is not None and f"\nretraining promoted {first}" in capsys.readouterr().out
    holder = ModelHolder.open(data / "models")
    assert holder.get().version == first and not holder.refresh()
    assert {s.name for s in holder.get().speakers} == set(STYLES)
    assert isinstance(holder.get().generator.generate("ada: ", 20, srand=1), str)

    # 2. New messages arrive (live capture); an admin asks for a retrain; the worker warm-starts from the
    #    first version's checkpoint, promotes, and the engine picks the new model up without a restart.
    fill_store(data / "mimic.db", 80, first=400, seed=7)
    import training.trainer

    real_train, init_froms = training.trainer.train, []

    def spy(*args: Any, **kwargs: Any) -> Any:
        init_froms.append(kwargs.get("init_from"))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(training.trainer, "train", spy)
    reports: list[str] = []
    queue = RetrainQueue(data, poll_seconds=0.01)
    queue("U-admin", reports.append)
    requests_job(tiny_options(data, steps=30, model={}))()
    monkeypatch.undo()
    second = reg.current()
    assert second != first and init_froms == [reg.checkpoint(first)]
    manifest = reg.manifest(second)
    assert manifest["parent"] == first and manifest["training"]["mode"] == "warm-start"
    assert manifest["data"]["watermark"]["messages"] == 480
    assert holder.refresh() and holder.get().version == second
    deadline = time.monotonic() + 10
    while not any(r.startswith("retraining promoted") for r in reports) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert any(r.startswith(f"retraining promoted {second}") for r in reports), reports
    queue.close()

    # 3. A deliberately worse candidate (one step from scratch) is not promoted; the engine keeps serving.
    worse = run_retrain(tiny_options(data, from_scratch=True, steps=1))
    assert worse.status == "kept" and reg.current() == second and not holder.refresh()
    assert "worse than" in reg.manifest(worse.version)["decision"]["reason"]

    # 4. Rollback to the previously promoted version; the engine follows.
    assert main(["models", "rollback", "--data-dir", str(data)]) == 0
    assert reg.current() == first and holder.refresh() and holder.get().version == first
    capsys.readouterr()
    assert main(["models", "list", "--json", "--data-dir", str(data)]) == 0
    listed = {v["name"]: (v["state"], v["current"]) for v in json.loads(capsys.readouterr().out)}
    assert listed == {first: ("promoted", True), second: ("promoted", False), worse.version: ("rejected", False)}
    runs = [r["status"] for r in reg.runs() if r.get("event") == "finished"]
    assert runs == ["promoted", "promoted", "kept"]


def test_sigkill_during_training_keeps_serving_and_the_next_run_resumes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fill_store(data / "mimic.db", 400)
    first = run_retrain(tiny_options(data)).version
    reg = Registry(data / "models")
    holder = ModelHolder.open(data / "models")

    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "retrain", "--data-dir", str(data), "--steps", "1000000",
         "--time-budget", "600", "--checkpoint-every", "5", "--batch-size", "8", "--seq-len", "32",
         "--threads", "1", "--device", "cpu"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while not list(reg.staging.glob("*/last.pt")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert list(reg.staging.glob("*/last.pt")), "the run wrote no checkpoint"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (killed,) = [v.name for v in reg.staging_versions()]

    # The pointer is untouched, the running engine keeps serving, a fresh engine would start on `first`.
    assert reg.pointer() == first and reg.current() == first
    assert not holder.refresh() and holder.get().version == first
    assert isinstance(holder.get().generator.generate("ada: ", 10, srand=1), str)
    assert ModelSource(data / "models").load_initial().version == first

    # The next run gets the lock (the kernel dropped it), resumes the killed run's checkpoint and cleans up.
    outcome = run_retrain(tiny_options(data, steps=20, model={}))
    assert outcome.ok, outcome.reason
    manifest = Registry(data / "models").manifest(outcome.version)
    assert manifest["training"]["resumed_from"] == killed and manifest["parent"] == first
    assert reg.staging_versions() == [] and reg.locate(killed) is None


@pytest.mark.parametrize("damage", ["garbage pointer", "missing onnx"])
def test_a_broken_current_is_repaired_by_the_next_promotion(tmp_path: Path, damage: str) -> None:
    data = tmp_path / "data"
    fill_store(data / "mimic.db", 400)
    first = run_retrain(tiny_options(data)).version
    reg = Registry(data / "models")
    if damage == "garbage pointer":
        (data / "models" / "current").write_bytes(b"\x00not a version\n")
    else:
        (reg.versions / first / "model.onnx").unlink()
    assert reg.pointer_problem() is not None
    outcome = run_retrain(tiny_options(data, steps=30, model={}))
    assert outcome.status == "promoted", outcome.reason
    assert reg.pointer_problem() is None and reg.current() == outcome.version
    assert ModelSource(data / "models").load_initial().version == outcome.version
    manifest = reg.manifest(outcome.version)
    if damage == "garbage pointer":  # the last good version was still there to warm-start from
        assert manifest["parent"] == first and (reg.versions / first / CHECKPOINT_FILE).is_file()
        assert "pointer was broken" in manifest["decision"]["reason"]
