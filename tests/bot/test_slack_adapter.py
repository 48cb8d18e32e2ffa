"""bot/slack_adapter.py through slack_bolt's real request handling: signed requests over HTTP to the app,
and a fake Slack Web API on 127.0.0.1 that records what the bot posts."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier

from bot.capture import Capture, StoreAccess
from bot.commands import Commands, Invocation, ModelGate, Reply
from bot.config import ChannelRules, ConfigError, Settings, load_settings
from bot.safety import ZWSP
from bot.slack_adapter import ChannelDirectory, build_app, http_server, make_client
from tests.bot.conftest import (
    ADA,
    BOT_TOKEN,
    GENERAL,
    GRACE,
    PRIVATE,
    SIGNING_SECRET,
    ChatWorld,
    FakeSlackApi,
    event_body,
    slack_signature,
    slash_body,
)

ENV = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET}


def slack_settings(chat_world: ChatWorld, db: Path, api: FakeSlackApi, **env: str) -> Settings:
    s = load_settings(None, {**ENV, "SLACK_API_URL": api.base_url, **env})
    s = s.override(model=chat_world.model, database=db)
    return replace(s, limits=replace(s.limits, user_limit=0, channel_limit=0))


class Served:
    """The app behind a real HTTP server in a thread, as `mimic serve slack` runs it in HTTP mode."""

    def __init__(self, app) -> None:
        self.server = http_server(app, 0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slack/events"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def post(self, body: str, *, content_type: str = "application/x-www-form-urlencoded", timestamp: int | None = None,
             secret: str = SIGNING_SECRET, signature: str | None = None) -> tuple[int, str]:
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": str(ts),
                   "X-Slack-Signature": signature or slack_signature(body, ts, secret)}
        request = urllib.request.Request(self.url, data=body.encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def parts(chat_world: ChatWorld, db: Path, slack_api: FakeSlackApi) -> Iterator[tuple[Settings, Commands, Capture]]:
    settings = slack_settings(chat_world, db, slack_api)
    gate = ModelGate.from_settings(settings, watch_seconds=None)
    stores = StoreAccess(db)
    yield settings, Commands(settings, gate, stores), Capture(stores, settings.slack.learn, settings.discord.learn)
    gate.close()


@pytest.fixture
def served(parts) -> Iterator[Served]:
    settings, commands, capture = parts
    s = Served(build_app(settings, commands, capture=capture))
    yield s
    s.close()


def test_our_signature_is_slacks(slack_api: FakeSlackApi) -> None:
    body = slash_body("ada")
    assert SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp="1531420618", body=body) == \
        slack_signature(body, 1531420618)


def test_impersonate_posts_as_the_person_with_neutralised_text(served: Served, slack_api: FakeSlackApi) -> None:
    status, body = served.post(slash_body(f"ada <!channel> look &amp; <@{GRACE}|grace>",
                                          response_url=slack_api.base_url + "response_url"))
    assert (status, body) == (200, "")
    (post,) = slack_api.wait_for("chat.postMessage")
    assert post["channel"] == GENERAL
    assert post["username"] == "Ada (mimic)"
    assert post["icon_url"] == "https://avatars.example.invalid/ada_192.png"
    assert post["text"].startswith(f"@{ZWSP}channel look &amp; @grace")  # the prompt opens the message
    assert "<!" not in post["text"] and "<@" not in post["text"] and "U0" not in post["text"]
    assert post["link_names"] is False and post["parse"] == "none"
    assert not slack_api.calls("response_url")  # nothing private to say


def test_bad_signature_and_old_timestamp_are_401(served: Served, slack_api: FakeSlackApi) -> None:
    body = slash_body("ada")
    assert served.post(body, secret="not-the-secret")[0] == 401
    assert served.post(body, signature="v0=" + "0" * 64)[0] == 401
    assert served.post(body, timestamp=int(time.time()) - 301)[0] == 401  # older than five minutes
    assert served.post(body, timestamp=int(time.time()) + 301)[0] == 401
    time.sleep(0.2)  # nothing may be running in the background either
    assert not slack_api.calls("chat.postMessage")


def test_the_ack_comes_back_before_generation_finishes(parts, slack_api: FakeSlackApi) -> None:
    settings, commands, capture = parts
    release, started = threading.Event(), threading.Event()

    class Slow(Commands):
        def handle(self, inv: Invocation) -> Reply:
            started.set()
            assert release.wait(30)
            return super().handle(inv)

    served = Served(build_app(settings, Slow(settings, commands.models, commands.people), capture=capture))
    try:
        status, _ = served.post(slash_body("ada"))
        assert status == 200  # answered while generation is still blocked
        assert started.wait(10) and not slack_api.calls("chat.postMessage")
        release.set()
        assert slack_api.wait_for("chat.postMessage")[0]["username"] == "Ada (mimic)"
    finally:
        release.set()
        served.close()


def test_errors_go_to_the_requester_only(served: Served, slack_api: FakeSlackApi) -> None:
    status, _ = served.post(slash_body("bob", response_url=slack_api.base_url + "response_url"))
    assert status == 200
    (private,) = slack_api.wait_for("response_url")
    assert private["response_type"] == "ephemeral" and private["text"].startswith("no such person in the model: bob")
    assert not slack_api.calls("chat.postMessage")


def test_usage_errors_are_answered_in_the_ack(served: Served, slack_api: FakeSlackApi) -> None:
    status, body = served.post(slash_body(""))
    assert status == 200
    answer = json.loads(body)
    assert answer["response_type"] == "ephemeral" and answer["text"].startswith("usage: impersonate")
    status, body = served.post(slash_body("forget ada", command="/mimic"))
    assert json.loads(body)["text"] == "only Mimic's admins can use `forget`."
    time.sleep(0.2)
    assert not slack_api.calls("chat.postMessage") and not slack_api.calls("response_url")


def test_mimic_command_and_private_channels(served: Served, slack_api: FakeSlackApi) -> None:
    url = slack_api.base_url + "response_url"
    assert served.post(slash_body("who", command="/mimic", response_url=url))[0] == 200
    (who,) = slack_api.wait_for("response_url")
    assert who["text"].startswith("I can write as 5 people")
    # A private channel (conversations.info says so) is not listed in speak_channels: refused privately.
    assert served.post(slash_body("ada", channel=PRIVATE, channel_name="secret", response_url=url))[0] == 200
    refused = slack_api.wait_for("response_url", 2)[1]
    assert "I don't post in this channel" in refused["text"]
    # A DM shows in the command itself: refused in the ack, without asking the Web API.
    status, body = served.post(slash_body("ada", channel="D0DM", channel_name="directmessage", response_url=url))
    assert status == 200 and "I don't post in this channel" in json.loads(body)["text"]
    assert not slack_api.calls("chat.postMessage")


def test_app_mention(served: Served, slack_api: FakeSlackApi) -> None:
    mention = {"type": "app_mention", "user": GRACE, "text": "<@U0MIMICBOT> impersonate ada", "ts": "1700000001.1",
               "channel": GENERAL, "event_ts": "1700000001.1"}
    assert served.post(event_body(mention), content_type="application/json")[0] == 200
    assert slack_api.wait_for("chat.postMessage")[0]["username"] == "Ada (mimic)"
    wrong = {**mention, "text": "<@U0MIMICBOT> impersonate bob", "ts": "1700000002.1"}
    assert served.post(event_body(wrong), content_type="application/json")[0] == 200
    (private,) = slack_api.wait_for("chat.postEphemeral")
    assert private["user"] == GRACE and "no such person" in private["text"]


def test_an_edited_mention_is_not_run_again(served: Served, slack_api: FakeSlackApi) -> None:
    """Slack sends app_mention again for every edit of a message that mentions the bot."""
    edited = {"type": "app_mention", "user": GRACE, "text": "<@U0MIMICBOT> impersonate ada", "ts": "1700000001.1",
              "channel": GENERAL, "event_ts": "1700000009.1", "edited": {"user": GRACE, "ts": "1700000009.1"}}
    assert served.post(event_body(edited), content_type="application/json")[0] == 200
    fresh = {**edited, "text": "<@U0MIMICBOT> impersonate grace", "ts": "1700000010.1", "event_ts": "1700000010.1"}
    del fresh["edited"]
    assert served.post(event_body(fresh), content_type="application/json")[0] == 200
    assert slack_api.wait_for("chat.postMessage")[0]["username"] == "Grace (mimic)"
    time.sleep(0.3)  # the edited one, were it run, would have posted by now
    assert [c["username"] for c in slack_api.calls("chat.postMessage")] == ["Grace (mimic)"]


def test_live_capture_of_messages_edits_and_deletions(served: Served, slack_api: FakeSlackApi, db: Path) -> None:
    store = StoreAccess(db)
    before = store.store().message_count()
    message = {"type": "message", "user": ADA, "text": "captured &amp; stored", "ts": "1800000000.000100",
               "channel": GENERAL, "channel_type": "channel", "event_ts": "1800000000.000100"}
    assert served.post(event_body(message), content_type="application/json")[0] == 200
    bot_post = {"type": "message", "subtype": "bot_message", "bot_id": "B0OTHER", "username": "Ada (mimic)",
                "text": "not learned", "ts": "1800000000.000200", "channel": GENERAL, "channel_type": "channel"}
    assert served.post(event_body(bot_post), content_type="application/json")[0] == 200
    deadline = time.monotonic() + 10
    while store.store().message_count() == before and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert store.store().message_count() == before + 1
    deleted = {"type": "message", "subtype": "message_deleted", "hidden": True, "channel": GENERAL,
               "channel_type": "channel", "deleted_ts": "1800000000.000100", "ts": "1800000001.000000"}
    assert served.post(event_body(deleted), content_type="application/json")[0] == 200
    while store.store().message_count() != before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.store().message_count() == before


def test_posting_failures_are_explained_privately(parts, slack_api: FakeSlackApi) -> None:
    from bot.slack_adapter import deliver

    client = make_client(parts[0])
    slack_api.channels.pop(GENERAL)
    original = slack_api.answer
    slack_api.answer = lambda m, p: (200, {"ok": False, "error": "not_in_channel"}) if m == "chat.postMessage" \
        else original(m, p)
    deliver(Reply("hi", as_name="Ada (mimic)"), client, GENERAL, GRACE)
    (private,) = slack_api.calls("chat.postEphemeral")
    assert "not_in_channel" in private["text"] and "/invite" in private["text"]


def test_rate_limited_web_api_calls_are_retried(parts, slack_api: FakeSlackApi) -> None:
    client = make_client(parts[0])
    assert any(isinstance(h, RateLimitErrorRetryHandler) for h in client.retry_handlers)
    assert client.base_url == slack_api.base_url  # SLACK_API_URL
    slack_api.rate_limit_once.add("chat.postMessage")
    assert client.chat_postMessage(channel=GENERAL, text="hi")["ok"]
    assert len(slack_api.calls("chat.postMessage")) == 2


def test_a_deleted_channel_leaves_the_store(served: Served, slack_api: FakeSlackApi, db: Path) -> None:
    store = StoreAccess(db)
    message = {"type": "message", "user": ADA, "text": "soon gone", "ts": "1800000001.000100",
               "channel": GENERAL, "channel_type": "channel", "event_ts": "1800000001.000100"}
    before = store.store().message_count()
    assert served.post(event_body(message), content_type="application/json")[0] == 200
    deadline = time.monotonic() + 10
    while store.store().message_count() == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.store().message_count() > before
    deleted = {"type": "channel_deleted", "channel": GENERAL, "event_ts": "1800000002.000100"}
    assert served.post(event_body(deleted), content_type="application/json")[0] == 200
    while store.store().channel("slack", GENERAL) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.store().channel("slack", GENERAL) is None
    assert not any(m.channel == "general" for m in store.store().iter_corpus())


def test_channel_directory(parts, slack_api: FakeSlackApi) -> None:
    channels = ChannelDirectory(make_client(parts[0]))
    assert channels.lookup(GENERAL) == ("general", "public")
    assert channels.lookup(PRIVATE) == ("secret", "private")
    assert channels.lookup("D0DM") == (None, "dm")
    assert channels.lookup("C0GONE") == (None, "unknown")  # a failed lookup is never taken as public
    channels.lookup(GENERAL)
    assert len(slack_api.calls("conversations.info")) == 3  # cached
    assert channels.lookup("C0GONE") == (None, "unknown")  # a failure is cached too (not asked at every message)
    assert len(slack_api.calls("conversations.info")) == 3


def test_a_failed_channel_lookup_is_retried_after_a_while(parts, slack_api: FakeSlackApi) -> None:
    now = [0.0]
    channels = ChannelDirectory(make_client(parts[0]), clock=lambda: now[0])
    channels.lookup("C0GONE")
    now[0] = channels.failure_ttl - 1
    channels.lookup("C0GONE")
    assert len(slack_api.calls("conversations.info")) == 1
    now[0] = channels.failure_ttl + 1
    channels.lookup("C0GONE")
    assert len(slack_api.calls("conversations.info")) == 2


def test_missing_secrets_are_one_line_config_errors(chat_world: ChatWorld, db: Path, slack_api: FakeSlackApi) -> None:
    commands = Commands(Settings(), None)
    no_secret = slack_settings(chat_world, db, slack_api)
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET is not set"):
        build_app(replace(no_secret, slack=replace(no_secret.slack, signing_secret="")), commands)
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN is not set"):
        build_app(replace(no_secret, slack=replace(no_secret.slack, bot_token="")), commands)
    socket = slack_settings(chat_world, db, slack_api, SLACK_APP_TOKEN="xapp-1-test")
    socket = replace(socket, slack=replace(socket.slack, signing_secret=""))
    assert build_app(socket, commands) is not None  # Socket Mode needs no signing secret


def test_learn_channels_respected_live(parts, slack_api: FakeSlackApi, db: Path) -> None:
    settings, commands, _ = parts
    capture = Capture(StoreAccess(db), ChannelRules(()), ChannelRules(()))  # learning switched off
    served = Served(build_app(settings, commands, capture=capture))
    try:
        before = StoreAccess(db).store().message_count()
        message: dict[str, Any] = {"type": "message", "user": ADA, "text": "not stored", "ts": "1800000000.1",
                                   "channel": GENERAL, "channel_type": "channel"}
        assert served.post(event_body(message), content_type="application/json")[0] == 200
        time.sleep(0.3)
        assert StoreAccess(db).store().message_count() == before
    finally:
        served.close()
