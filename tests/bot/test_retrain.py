"""The retraining job with real tiny models: promotion, the lock, and every failure that must keep `current`.

Helpers here (`fill_store`, `tiny_options`, `fake_slack`) are shared with the scenario and CLI tests.
"""

from __future__ import annotations

import errno
import json
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from bot.retrain import (
    ReportTarget,
    RetrainBusyError,
    RetrainOptions,
    RetrainOutcome,
    RunLock,
    SlackCatchUp,
    options_from_settings,
    plan_training,
    report_outcome,
    run_retrain,
)
from bot.scheduler import RetrainQueue, pending_requests, process_requests
from export.registry import CHECKPOINT_FILE, MODEL_FILE, Registry, version_name

STYLES = {
    "ada": ["lol the build is green again", "ok shipping it lol", "lol who broke main", "brb coffee lol"],
    "grace": ["Good morning, team!", "The deploy is scheduled for 10:00.", "Thank you all for the review!",
              "Please file an issue.\nThen ping me."],
    "linus": ["NAK.", "fix the patch first.", "this is wrong, see the docs.", "NAK, no tests."],
}
START = 1_704_103_200  # 2024-01-01 10:00 UTC
ROOT = Path(__file__).resolve().parents[2]


def fill_store(db: Path, n: int, *, first: int = 0, seed: int = 0) -> None:
    """n messages in #general, one a minute from message number `first` on, as live capture stores them."""
    from training.store import ChannelRecord, MessageRecord, Store, UserRecord

    rng = random.Random(seed)
    with Store.open(db) as store:
        store.upsert_channel(ChannelRecord("slack", "C01GEN", "general", None))
        store.upsert_users([UserRecord("slack", f"U-{name}", handle=name, display_name=name.title())
                            for name in STYLES])
        records = []
        for i in range(first, first + n):
            who = rng.choice(list(STYLES))
            records.append(MessageRecord("slack", "C01GEN", f"{START + 60 * i}.000100", f"U-{who}",
                                         rng.choice(STYLES[who]), float(START + 60 * i)))
        store.upsert_messages(records)


def tiny_options(data_dir: Path, **changes: Any) -> RetrainOptions:
    """A model small enough that a whole run takes about a second on one CPU thread."""
    opts = RetrainOptions(data_dir=data_dir, db=data_dir / "mimic.db", registry=data_dir / "models",
                          time_budget=None, steps=40, model={"hidden": 24}, batch_size=8, seq_len=32, lr=0.01,
                          warm_lr=0.005, checkpoint_every=0, threads=1, device="cpu", sample_messages=4,
                          sample_chars=60, tolerance=0.05)
    return replace(opts, **changes)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    fill_store(d / "mimic.db", 400)
    return d


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose registry serves one model: copied by tests that need a current version."""
    d = tmp_path_factory.mktemp("trained") / "data"
    fill_store(d / "mimic.db", 400)
    assert run_retrain(tiny_options(d)).status == "promoted"
    return d


@pytest.fixture
def served(trained: Path, tmp_path: Path) -> Path:
    import shutil

    d = tmp_path / "data"
    shutil.copytree(trained, d)
    return d


def _runs(d: Path) -> list[dict[str, Any]]:
    return [r for r in Registry(d / "models").runs() if r.get("event") == "finished"]


# ---- a fake Slack Web API on 127.0.0.1 -----------------------------------------------------------------


class FakeSlackAPI:
    """Enough of the Web API for the catch-up and the outcome report; `mode` makes it fail."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | down (HTTP 500) | ratelimited (HTTP 429 always)
        self.posted: list[dict[str, str]] = []
        self.calls: list[str] = []
        self.history = [{"type": "message", "ts": f"{START + 60 * 1000 + i}.000100", "user": "U-ada",
                         "text": f"caught up lol {i}"} for i in range(30)]
        self.url = ""

    def answer(self, method: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.calls.append(method)
        if self.mode == "down":
            return 500, {"ok": False, "error": "internal_error"}
        if self.mode == "ratelimited":
            return 429, {"ok": False, "error": "ratelimited"}
        if method == "auth.test":
            return 200, {"ok": True, "team_id": "T1", "team": "Team"}
        if method == "users.list":
            return 200, {"ok": True, "members": [{"id": "U-ada", "name": "ada", "profile": {}}]}
        if method == "conversations.list":
            return 200, {"ok": True, "channels": [{"id": "C01GEN", "name": "general", "is_member": True}]}
        if method == "conversations.history":
            oldest = float(params.get("oldest") or 0)
            return 200, {"ok": True, "messages": [m for m in self.history if float(m["ts"]) > oldest][::-1]}
        if method == "chat.postMessage":
            self.posted.append(params)
            return 200, {"ok": True, "ts": "1.0", "channel": params.get("channel")}
        return 200, {"ok": False, "error": "unknown_method"}


@contextmanager
def fake_slack() -> Iterator[FakeSlackAPI]:
    fake = FakeSlackAPI()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, params: dict[str, str]) -> None:
            status, body = fake.answer(urlsplit(self.path).path.rsplit("/", 1)[-1], params)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(dict(parse_qsl(urlsplit(self.path).query)))

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            if self.headers.get("Content-Type", "").startswith("application/json"):
                params = {k: str(v) for k, v in json.loads(body or "{}").items()}
            else:
                params = dict(parse_qsl(body))
            self._serve(params)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/api/"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


# ---- promotion -----------------------------------------------------------------------------------------


def test_first_run_promotes_a_complete_version(trained: Path) -> None:
    reg = Registry(trained / "models")
    name = reg.current()
    assert name is not None
    d = reg.versions / name
    assert {MODEL_FILE, CHECKPOINT_FILE, "model.copyindex.npy", "model.voice.npz", "manifest.json"} <= {p.name for p in d.iterdir()}
    m = reg.manifest(name)
    assert m["parent"] is None and m["training"]["mode"] == "from-scratch" and m["training"]["why"] == "no current model"
    assert m["data"]["watermark"]["messages"] == 400 and m["data"]["valid_messages"] == 20
    assert set(m["speakers"]) == set(STYLES) and m["training"]["device"] == "cpu" and m["training"]["steps"] == 40
    assert m["evaluation"]["eval_chars"] == m["data"]["valid_chars"] and m["val_bpc"] == m["evaluation"]["bpc"]
    assert m["evaluation"]["samples"] == 4 and 0 <= m["evaluation"]["copy_rate"] <= 1
    assert m["decision"]["promoted"] and m["decision"]["reason"].startswith("first model")
    assert [r["status"] for r in _runs(trained)] == ["promoted"]
    assert not list(reg.staging.iterdir())


def test_warm_start_from_current_and_a_worse_candidate_is_kept_out(served: Path) -> None:
    reg = Registry(served / "models")
    first = reg.current()
    fill_store(served / "mimic.db", 60, first=400, seed=1)
    warm = run_retrain(tiny_options(served, steps=30))
    assert warm.status == "promoted", warm.reason
    m = reg.manifest(warm.version)
    assert m["parent"] == first and m["training"]["mode"] == "warm-start" and m["training"]["init_from"] == first
    assert m["evaluation"]["current"] == first and m["evaluation"]["current_bpc"] is not None

    worse = run_retrain(tiny_options(served, from_scratch=True, steps=1))
    assert worse.status == "kept" and "worse than" in worse.reason
    assert reg.current() == warm.version
    assert (reg.rejected / worse.version).is_dir() and not (reg.versions / worse.version).exists()
    assert reg.manifest(worse.version)["decision"]["promoted"] is False


def test_warm_start_keeps_every_speaker_slot_and_gives_a_newcomer_the_next(served: Path) -> None:
    from engine.model_source import load_model
    from training.checkpoint import load_checkpoint
    from training.store import MessageRecord, Store, UserRecord

    reg = Registry(served / "models")
    first = reg.current()
    assert reg.manifest(first)["model"]["speaker_slots"] == 1024  # a fresh chat model is speaker-conditioned
    before = load_checkpoint(reg.checkpoint(first))["speaker_slots"]
    assert set(before) == set(STYLES)
    with Store.open(served / "mimic.db") as store:
        store.upsert_users([UserRecord("slack", "U-zed", handle="zed", display_name="Zed")])
        store.upsert_messages(MessageRecord("slack", "C01GEN", f"{START + 60 * (400 + i)}.000100", "U-zed",
                                            f"zzz {i}", float(START + 60 * (400 + i))) for i in range(40))
    warm = run_retrain(tiny_options(served, steps=10, tolerance=10.0))
    assert warm.status == "promoted" and reg.manifest(warm.version)["training"]["mode"] == "warm-start"
    after = load_checkpoint(reg.checkpoint(warm.version))["speaker_slots"]
    assert after == {**before, "zed": max(before.values()) + 1}  # nobody renumbered, one row more in use
    served_slots = load_model(reg.model_path(warm.version)).speakers.slots()
    assert served_slots["zed"] == after["zed"] and all(served_slots[s] == before[s] for s in STYLES)


def test_an_unconditioned_lineage_gains_speaker_slots_at_its_next_from_scratch_run(served: Path) -> None:
    reg = Registry(served / "models")
    current = reg.current()
    manifest_file = reg.versions / current / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["model"].pop("speaker_slots")  # written before speaker slots existed
    manifest_file.write_text(json.dumps(manifest))
    started = datetime.fromisoformat(manifest["lineage_started"])
    opts = tiny_options(served, from_scratch_every_days=30, model={})
    warm = plan_training(reg, opts, started + timedelta(days=1))
    assert not warm.from_scratch and warm.model["speaker_slots"] == 0  # a warm start keeps the parent's shapes
    assert plan_training(reg, opts, started + timedelta(days=31)).model["speaker_slots"] == 1024
    darknet = plan_training(reg, replace(opts, model={"arch": "darknet-rnn"}), started)
    assert darknet.from_scratch and darknet.model["speaker_slots"] == 0


def test_a_promotion_by_hand_during_the_run_wins(served: Path) -> None:
    reg = Registry(served / "models")
    first = reg.current()
    second = run_retrain(tiny_options(served, steps=5, tolerance=10.0)).version

    def admin_rolls_back(message: str) -> None:
        if message.startswith("evaluating"):
            reg.rollback("rolled back by hand")

    outcome = run_retrain(tiny_options(served, steps=5, tolerance=10.0), on_event=admin_rolls_back)
    assert outcome.status == "kept" and f"current was changed to {first}" in outcome.reason
    assert reg.current() == first and reg.locate(second)[0] == "promoted"


def test_from_scratch_every_n_days(served: Path) -> None:
    reg = Registry(served / "models")
    started = datetime.fromisoformat(reg.manifest(reg.current())["lineage_started"])
    opts = tiny_options(served, from_scratch_every_days=30, model={})
    assert not plan_training(reg, opts, started + timedelta(days=29)).from_scratch
    plan = plan_training(reg, opts, started + timedelta(days=31))
    assert plan.from_scratch and "every 30 days" in plan.why and plan.model["hidden"] == 24
    assert plan_training(reg, replace(opts, from_scratch=True), started).from_scratch
    assert plan_training(reg, replace(opts, model={"hidden": 32}), started).why.startswith("the model asked for")


# ---- the lock ------------------------------------------------------------------------------------------


def test_a_second_run_exits_at_once_while_one_holds_the_lock(data_dir: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from bot.retrain import RunLock\n"
         f"with RunLock({str(data_dir)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RetrainBusyError, match=rf"another retraining run is in progress \(pid {holder.pid}"):
            run_retrain(tiny_options(data_dir))
    finally:
        holder.kill()
        holder.wait()
    with RunLock(data_dir), pytest.raises(RetrainBusyError):  # also within one process
        RunLock(data_dir).__enter__()
    assert not (data_dir / "models" / "versions").exists() or not list((data_dir / "models" / "versions").iterdir())


# ---- failures keep current -----------------------------------------------------------------------------


def _assert_kept(d: Path, before: str, outcome: RetrainOutcome, stage: str, words: str) -> None:
    reg = Registry(d / "models")
    assert outcome.status == "failed" and outcome.stage == stage and words in outcome.reason
    assert reg.pointer() == before and reg.current() == before
    assert not list(reg.staging.iterdir())  # the half-written candidate is gone
    last = _runs(d)[-1]
    assert last["status"] == "failed" and words in last["reason"] and last["stage"] == stage


def test_export_parity_failure_keeps_current(served: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import export.onnx_export
    from export.errors import ParityError

    before = Registry(served / "models").current()

    def bad_parity(*args: Any, **kwargs: Any) -> float:
        raise ParityError("ONNX Runtime logits differ from PyTorch's by 0.5")

    monkeypatch.setattr(export.onnx_export, "check_parity", bad_parity)
    _assert_kept(served, before, run_retrain(tiny_options(served, steps=5)), "export", "parity check failed")
    monkeypatch.undo()
    assert run_retrain(tiny_options(served, steps=5)).ok  # the next run tries again


@pytest.mark.parametrize("target", ["training.trainer.save_checkpoint", "export.onnx_export.write_atomic",
                                    "export.registry.write_json"])
def test_disk_full_keeps_current(served: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    before = Registry(served / "models").current()
    module, _, name = target.rpartition(".")
    real = getattr(sys.modules[module], name)
    calls = {"n": 0}

    def full(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if target.endswith("write_json") and calls["n"] == 1:
            return real(*args, **kwargs)  # the staging manifest fits; the final one does not
        raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))

    monkeypatch.setattr(sys.modules[module], name, full)
    outcome = run_retrain(tiny_options(served, steps=5))
    stage = "evaluate" if target.endswith("write_json") else "export" if "onnx" in target else "train"
    _assert_kept(served, before, outcome, stage, "disk full")


@pytest.mark.parametrize("mode", ["down", "ratelimited"])
def test_slack_api_down_or_rate_limiting_keeps_current(served: Path, mode: str) -> None:
    before = Registry(served / "models").current()
    with fake_slack() as fake:
        fake.mode = mode
        opts = tiny_options(served, steps=5, slack=SlackCatchUp("xoxb-test", fake.url, max_rate_limit_retries=1))
        _assert_kept(served, before, run_retrain(opts), "catch-up", "Slack API")
        assert "will try again next run" in _runs(served)[-1]["reason"]
        fake.mode = "ok"
        outcome = run_retrain(opts)  # the API is back: the next run catches up and trains
    assert outcome.ok and outcome.notes and outcome.notes[0].startswith("Slack:")
    assert Registry(served / "models").manifest(outcome.version)["data"]["watermark"]["messages"] == 430


def test_outcome_is_reported_to_the_admin_channel(served: Path) -> None:
    with fake_slack() as fake:
        target = ReportTarget("slack", "C0ADMIN", "xoxb-test", fake.url)
        outcome = run_retrain(tiny_options(served, steps=5, report=target))
        assert [p["channel"] for p in fake.posted] == ["C0ADMIN"]
        assert fake.posted[0]["text"] == f"Mimic: {outcome.summary()}"
        fake.mode = "down"
        report_outcome(target, outcome)  # a lost report is logged, never raised
    report_outcome(ReportTarget("discord", "123", "token", "http://127.0.0.1:9"), outcome)


# ---- admin requests ------------------------------------------------------------------------------------


def test_admin_request_is_queued_run_by_the_worker_and_reported_back(tmp_path: Path) -> None:
    queue = RetrainQueue(tmp_path, poll_seconds=0.01)
    reports: list[str] = []
    seen_progress, done = threading.Event(), threading.Event()

    def report(text: str) -> None:
        reports.append(text)
        seen_progress.set() if text == "training 50% done" else None
        done.set() if text.startswith("retraining promoted v2") else None

    reply = queue("U-admin", report)
    assert reply.startswith("Retraining queued (r-") and "mimic scheduler" in reply  # no worker checked in yet
    assert [r["requested_by"] for r in pending_requests(tmp_path)] == ["U-admin"]

    def busy(from_scratch: bool, events: Any) -> RetrainOutcome:
        raise RetrainBusyError("another retraining run is in progress")

    assert process_requests(tmp_path, busy) == 0 and len(pending_requests(tmp_path)) == 1  # stays queued

    def run(from_scratch: bool, events: Any) -> RetrainOutcome:
        events("training 50% done")
        assert seen_progress.wait(10)  # the requester hears about progress while the run goes on
        return RetrainOutcome("promoted", "not worse", "run", "v2", "v2")

    assert process_requests(tmp_path, run) == 1
    assert done.wait(10), reports
    queue.close()
    assert pending_requests(tmp_path) == [] and queue.worker_alive()
    assert RetrainQueue(tmp_path)("U-admin", lambda text: None).count("mimic scheduler") == 0  # worker is alive


def test_options_from_settings() -> None:
    from bot.config import load_settings
    from bot.errors import ConfigError

    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_API_URL": "http://127.0.0.1:1/api/"}
    settings = load_settings(None, env).override(data_dir="/srv/mimic")
    opts = options_from_settings(settings, time_budget=30.0, steps=None)
    assert opts.registry == Path("/srv/mimic/models") and opts.db == Path("/srv/mimic/mimic.db")
    assert opts.time_budget == 30.0 and opts.slack.channel_sets == (None,) and opts.report is None
    with pytest.raises(ConfigError, match="registry directory"):
        options_from_settings(settings.override(model="/srv/one.onnx"))


def test_the_bot_side_never_imports_torch() -> None:
    probe = ("import sys, bot.retrain, bot.scheduler\n"
             "q = bot.scheduler.RetrainQueue('/nonexistent-mimic')\n"
             "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=ROOT)


def test_names_of_runs_sort_like_time() -> None:
    a = version_name(datetime(2026, 1, 1, tzinfo=UTC))
    assert a < version_name(datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC))


def test_a_stop_at_the_last_stage_promotes_nothing(served: Path) -> None:
    """The worker's stop check runs at every stage announcement, the last one ("promoting ...") included,
    so a stop during the evaluation still leaves the serving model as it was."""
    reg = Registry(served / "models")
    first = reg.current()
    seen: list[str] = []

    def events(message: str) -> None:
        seen.append(message)
        if message.startswith(("promoting", "keeping out")):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_retrain(tiny_options(served, steps=5), on_event=events)
    assert reg.current() == first
    assert any(m.startswith("evaluating") for m in seen) and seen[-1].startswith(("promoting", "keeping out"))
