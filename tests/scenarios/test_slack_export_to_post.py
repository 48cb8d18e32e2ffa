"""The whole journey on Slack: an export zip -> `mimic ingest` -> `mimic train` (tiny) -> a signed
`/impersonate ada` over HTTP -> a message posted on the (fake) Web API under Ada's name and avatar."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path

from bot.capture import Capture, StoreAccess
from bot.cli import main
from bot.commands import Commands, ModelGate
from bot.config import load_settings
from bot.demo import write_demo_export
from bot.slack_adapter import build_app
from tests.bot.conftest import BOT_TOKEN, GENERAL, SIGNING_SECRET, FakeSlackApi, serve_fake_slack, slash_body
from tests.bot.test_slack_adapter import Served


def export_zip(tmp_path: Path) -> Path:
    folder = write_demo_export(tmp_path / "export", n_messages=700, seed=11)
    path = tmp_path / "Demo Slack export Mar 1 2025 - Mar 20 2025.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for f in sorted(folder.rglob("*.json")):
            archive.write(f, f.relative_to(folder).as_posix())
    return path


def test_slack_export_to_posted_impersonation(tmp_path: Path) -> None:
    with serve_fake_slack() as slack_api:
        journey(tmp_path, slack_api)


def journey(tmp_path: Path, slack_api: FakeSlackApi) -> None:
    db, run = tmp_path / "mimic.db", tmp_path / "run"
    assert main(["ingest", str(export_zip(tmp_path)), "--db", str(db)]) == 0
    assert main(["train", "--db", str(db), "--hidden", "32", "--steps", "120", "--batch-size", "8", "--seq-len", "48",
                 "--lr", "0.01", "--eval-every", "0", "--threads", "1", "--out", str(run)]) == 0
    env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack_api.base_url}
    settings = load_settings(None, env).override(model=run / "model.onnx", database=db)
    settings = replace(settings, limits=replace(settings.limits, min_messages=10))
    gate = ModelGate.from_settings(settings, watch_seconds=None)
    stores = StoreAccess(db)
    served = Served(build_app(settings, Commands(settings, gate, stores), capture=Capture(stores, settings.slack.learn)))
    try:
        status, body = served.post(slash_body("Ada <!here> hi", response_url=slack_api.base_url + "response_url"))
        assert (status, body) == (200, "")
        (post,) = slack_api.wait_for("chat.postMessage")
    finally:
        served.close()
        gate.close()
    assert post["channel"] == GENERAL
    assert post["username"] == "Ada (mimic)"
    assert post["icon_url"] == "https://avatars.example.invalid/ada_192.png"
    assert post["text"].startswith("@\u200bhere hi") and "<!" not in post["text"]
    assert not slack_api.calls("response_url")
