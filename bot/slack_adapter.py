"""Slack: slash commands, @mentions and live capture, translated to and from the command layer (slack_bolt).

    /impersonate <person> [prompt]   ack at once, generate in a lazy listener, chat.postMessage as the person
    /mimic <command> [args]          help, who, optout, optin, forget, retrain (and impersonate)
    @Mimic <command> [args]          the same, from a message that mentions the bot
    message events                   captured into the store (new, edited, deleted) in learn channels

Socket Mode when a SLACK_APP_TOKEN is configured, HTTP otherwise (POST /slack/events, requests verified with
the signing secret by Bolt). Errors go to the requester only: the slash command's ephemeral `respond`, or
chat.postEphemeral for mentions. Nothing is created at import; `build_app` is the factory.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_bolt import App
from slack_bolt.error import BoltError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.capture import SLACK_CHANNEL_KINDS, Capture
from bot.commands import Commands, Invocation, Reply
from bot.config import Settings
from bot.errors import ConfigError, ConnectError

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
# Slash-command and mention work runs in Bolt's listener pool while waiting for generation, and acks use
# the same pool: keep it wide enough that waiting generations never delay an ack past Slack's 3 seconds.
LISTENER_THREADS = 32
_LEADING_MENTION = re.compile(r"^\s*<@[A-Z0-9]+(?:\|[^>]*)?>[\s:,]*")
# Why a post failed -> what the requester can do about it.
_POST_ERRORS = {
    "not_in_channel": "invite me to this channel first (/invite @Mimic)",
    "channel_not_found": "I can't see this channel; invite me first (/invite @Mimic)",
    "missing_scope": "the Slack app lacks a scope (chat:write, chat:write.customize, chat:write.public)",
    "is_archived": "this channel is archived",
    "restricted_action": "posting here is restricted by the workspace",
}


def make_client(settings: Settings) -> WebClient:
    """The Web API client: token and base URL from the settings, Slack's 429s retried after Retry-After."""
    base_url = settings.slack.api_url or WebClient.BASE_URL
    client = WebClient(token=settings.slack.bot_token or None, base_url=base_url.rstrip("/") + "/")
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
    return client


class ChannelDirectory:
    """Channel id -> (name, kind), from conversations.info, cached. An unknown kind counts as not public,
    so a failed lookup can only make Mimic quieter, never post or learn somewhere it should not."""

    def __init__(self, client: WebClient, ttl: float = 600.0, clock: Callable[[], float] = time.monotonic,
                 failure_ttl: float = 60.0):
        self.client = client
        self.ttl = ttl
        self.failure_ttl = failure_ttl  # a failed lookup (no groups:read for a private channel) is not retried
        self.clock = clock              # at every message there, only after this long
        self._cache: dict[str, tuple[float, str | None, str]] = {}  # id -> (expires at, name, kind)
        self._lock = threading.Lock()

    def lookup(self, channel_id: str) -> tuple[str | None, str]:
        with self._lock:
            hit = self._cache.get(channel_id)
        if hit is not None and self.clock() < hit[0]:
            return hit[1], hit[2]
        ttl = self.ttl
        if channel_id.startswith("D"):
            name, kind = None, "dm"
        else:
            try:
                info = self.client.conversations_info(channel=channel_id)["channel"]
                kind = ("dm" if info.get("is_im") else "mpim" if info.get("is_mpim")
                        else "private" if info.get("is_private") or info.get("is_group") else "public")
                name = info.get("name")
            except SlackApiError as exc:
                log.warning("conversations.info %s failed (%s); treating the channel as private",
                            channel_id, exc.response.get("error"))
                name, kind, ttl = None, "unknown", self.failure_ttl
        with self._lock:
            self._cache[channel_id] = (self.clock() + ttl, name, kind)
        return name, kind


def _hinted_kind(channel_id: str, channel_name: str | None) -> str | None:
    """The channel kind a slash command's own fields reveal, without an API call (None: ask the API)."""
    if channel_id.startswith("D") or channel_name == "directmessage":
        return "dm"
    if channel_name == "privategroup" or channel_id.startswith("G"):
        return "mpim" if (channel_name or "").startswith("mpdm-") else "private"
    return None


def _slash_invocation(command: dict[str, Any], verb_in_text: bool, kind: str) -> Invocation:
    name = command.get("channel_name")
    where = dict(platform="slack", user_id=command["user_id"], channel_id=command["channel_id"],
                 channel_name=None if name in ("directmessage", "privategroup") else name,
                 channel_kind=kind, user_name=command.get("user_name"))
    text = command.get("text") or ""
    if verb_in_text:
        return Invocation.from_text(text, **where)
    return Invocation(command="impersonate", args=text.strip(), **where)  # type: ignore[arg-type]


def direct_message(client: WebClient, user_id: str) -> Callable[[str], None]:
    """Tell one person something later (a retraining run's progress), in their DM with the app."""

    def notify(text: str) -> None:
        try:
            client.chat_postMessage(channel=user_id, text=text, link_names=False, parse="none")
        except SlackApiError as exc:
            log.warning("could not message %s: %s", user_id, exc.response.get("error"))

    return notify


def deliver(reply: Reply, client: WebClient, channel_id: str, user_id: str, *,
            respond: Callable[..., Any] | None = None, thread_ts: str | None = None) -> None:
    """Post a reply: private ones to the requester only, the rest in the channel under the person's name."""
    if reply.private:
        if respond is not None:
            respond(text=reply.text, response_type="ephemeral", replace_original=False)
        else:
            client.chat_postEphemeral(channel=channel_id, user=user_id, text=reply.text, thread_ts=thread_ts)
        return
    try:
        client.chat_postMessage(channel=channel_id, text=reply.text, username=reply.as_name, icon_url=reply.as_icon,
                                link_names=False, parse="none", unfurl_links=False, unfurl_media=False,
                                thread_ts=thread_ts)
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error")
        log.warning("chat.postMessage in %s failed: %s", channel_id, error)
        why = _POST_ERRORS.get(error, "Slack said no")
        deliver(Reply(f"I couldn't post here ({error}): {why}.", private=True), client, channel_id, user_id,
                respond=respond, thread_ts=thread_ts)


def check_secrets(settings: Settings, client: WebClient | None = None) -> None:
    """Every missing or misplaced Slack secret in one ConfigError, before anything is loaded or dialled."""
    slack, problems = settings.slack, []
    if not (client.token if client is not None else slack.bot_token):
        problems.append("SLACK_BOT_TOKEN is not set (Mimic posts and reads history with the bot token, xoxb-...)")
    if slack.socket_mode and not slack.app_token.startswith("xapp-"):
        problems.append("SLACK_APP_TOKEN is not an app-level token (those start with xapp-; Socket Mode needs one "
                        "with connections:write)")
    if not slack.socket_mode and not slack.signing_secret:
        problems.append("SLACK_SIGNING_SECRET is not set (HTTP mode verifies every request with it; or set "
                        "SLACK_APP_TOKEN for Socket Mode)")
    if problems:
        raise ConfigError("; ".join(problems))


@contextlib.contextmanager
def reaching(method: str, token_env: str) -> Iterator[None]:
    """A start-up call to Slack, failing in one line that names it, as `mimic history slack` does: "cannot
    connect" (no network, a wrong SLACK_API_URL) or Slack's refusal. The SDK logs an ERROR line of its own for
    each failed attempt; those are held back meanwhile, as the one line says it all."""
    sdk_log = logging.getLogger("slack_sdk")
    level = sdk_log.level
    sdk_log.setLevel(logging.CRITICAL)
    try:
        yield
    except OSError as exc:  # urllib's URLError too: DNS, a closed port, TLS, a timeout
        raise ConnectError(f"Slack API {method}: cannot connect ({getattr(exc, 'reason', None) or exc})") from exc
    except (SlackApiError, BoltError) as exc:
        # Bolt turns auth.test's SlackApiError into a BoltError that prints the whole response: say its code
        api = exc if isinstance(exc, SlackApiError) else exc.__context__
        if not isinstance(api, SlackApiError):
            raise
        raise ConfigError(f"Slack API {method} failed: {api.response.get('error') or api}; "
                          f"check {token_env}") from exc
    finally:
        sdk_log.setLevel(level)


def build_app(settings: Settings, commands: Commands, client: WebClient | None = None,
              capture: Capture | None = None) -> App:
    """The Bolt app with Mimic's listeners. HTTP mode needs the signing secret; Socket Mode the app token.
    Bolt checks the bot token with auth.test here, so this is where Slack is first reached."""
    check_secrets(settings, client)
    client = client or make_client(settings)
    with reaching("auth.test", "SLACK_BOT_TOKEN"):
        app = App(client=client, signing_secret=settings.slack.signing_secret,
                  request_verification_enabled=not settings.slack.socket_mode,
                  listener_executor=ThreadPoolExecutor(LISTENER_THREADS, thread_name_prefix="mimic-slack"))
    channels = ChannelDirectory(client)
    register(app, settings, commands, channels, capture)
    return app


def register(app: App, settings: Settings, commands: Commands, channels: ChannelDirectory,
             capture: Capture | None) -> None:
    for name, verb_in_text in ((settings.slack.command, False), (settings.slack.mimic_command, True)):
        _register_slash(app, name, verb_in_text, commands, channels)

    @app.event("app_mention")
    def on_mention(event: dict[str, Any], client: WebClient) -> None:  # Bolt acked already; this runs after
        if event.get("edited"):  # Slack sends app_mention again for every edit: answer the original once
            return
        channel_id = event["channel"]
        name, kind = channels.lookup(channel_id)
        inv = Invocation.from_text(_LEADING_MENTION.sub("", event.get("text") or "", count=1), platform="slack",
                                   user_id=event["user"], channel_id=channel_id, channel_name=name, channel_kind=kind)
        inv = replace(inv, notify=direct_message(client, event["user"]))
        deliver(commands.handle(inv), client, channel_id, event["user"], thread_ts=event.get("thread_ts"))

    @app.event("channel_deleted")
    def on_channel_deleted(event: dict[str, Any]) -> None:
        if capture is not None and isinstance(event.get("channel"), str):
            log.info("slack channel %s deleted: %d stored messages removed", event["channel"],
                     capture.slack_channel_deleted(event["channel"]))

    @app.event("message")
    def on_message(event: dict[str, Any], body: dict[str, Any], client: WebClient) -> None:
        if capture is None or not isinstance(event.get("channel"), str):
            return
        name, kind = channels.lookup(event["channel"])
        kind = SLACK_CHANNEL_KINDS.get(event.get("channel_type"), kind)

        def fetch_user(user_id: str) -> dict[str, Any] | None:
            try:
                return client.users_info(user=user_id)["user"]
            except SlackApiError as exc:
                log.warning("users.info %s failed: %s", user_id, exc.response.get("error"))
                return None

        outcome = capture.slack_event(event, channel_kind=kind, channel_name=name, workspace_id=body.get("team_id"),
                                      fetch_user=fetch_user)
        log.debug("captured slack message in %s: %s", event["channel"], outcome)

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("unhandled error in a Slack listener (%s)", type(error).__name__, exc_info=error)


def _register_slash(app: App, name: str, verb_in_text: bool, commands: Commands, channels: ChannelDirectory) -> None:
    def early(command: dict[str, Any]) -> Reply | None:
        # A channel of unknown kind is assumed public here: that can only let a request through to the lazy
        # step, which checks again with the real kind; it never refuses one wrongly.
        kind = _hinted_kind(command["channel_id"], command.get("channel_name")) or "public"
        return commands.check(_slash_invocation(command, verb_in_text, kind))

    def ack_now(ack: Callable[..., Any], command: dict[str, Any]) -> None:
        refused = early(command)
        if refused is not None:
            ack(text=refused.text, response_type="ephemeral")
        else:
            ack()

    def run_later(command: dict[str, Any], client: WebClient, respond: Callable[..., Any]) -> None:
        if early(command) is not None:
            return  # already answered in the ack
        kind = _hinted_kind(command["channel_id"], command.get("channel_name"))
        name, looked_up = channels.lookup(command["channel_id"]) if kind is None else (None, kind)
        inv = replace(_slash_invocation(command, verb_in_text, looked_up),
                      notify=direct_message(client, command["user_id"]))
        if name and not inv.channel_name:
            inv = replace(inv, channel_name=name)
        deliver(commands.handle(inv), client, command["channel_id"], command["user_id"], respond=respond)

    run_later.__name__ = f"run_{name.strip('/')}"  # Bolt tells lazy listeners apart by name
    app.command(name)(ack=ack_now, lazy=[run_later])


# ---- running --------------------------------------------------------------------------------------------


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow client must not keep the process alive at shutdown


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s %s", self.address_string(), format % args)


def http_server(app: App, port: int, host: str = "0.0.0.0") -> WSGIServer:
    """A threaded WSGI server for HTTP mode: POST /slack/events. (Call serve_forever; shutdown stops it.)"""
    from slack_bolt.adapter.wsgi import SlackRequestHandler

    return make_server(host, port, SlackRequestHandler(app, path=EVENTS_PATH), server_class=_ThreadingWSGIServer,
                       handler_class=_QuietHandler)


def run(app: App, settings: Settings) -> None:
    """Serve until interrupted: Socket Mode with an app token, else HTTP on the configured port."""
    if settings.slack.socket_mode:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        handler = SocketModeHandler(app, settings.slack.app_token, web_client=app.client)
        try:
            with reaching("apps.connections.open", "SLACK_APP_TOKEN"):
                handler.connect()
        except BaseException:
            handler.close()
            raise
        log.info("slack: Socket Mode, connected")
        threading.Event().wait()  # what handler.start() does after connecting: the SDK's threads serve
        return
    server = http_server(app, settings.slack.port)
    log.info("slack: HTTP mode on port %d, path %s", settings.slack.port, EVENTS_PATH)
    try:
        server.serve_forever()
    finally:
        server.server_close()
