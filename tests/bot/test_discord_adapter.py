"""bot/discord_adapter.py with real discord.py objects: Interactions built from payload dicts and dispatched
through the bot's real CommandTree, with only the HTTP layer replaced (a stand-in aiohttp session that records
every request and answers like Discord)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.capture import Capture, StoreAccess
from bot.commands import Commands, ModelGate, Reply
from bot.config import DiscordSettings, Settings
from bot.discord_adapter import MimicDiscordBot, channel_kind
from tests.bot.conftest import ChatWorld, make_settings

APP_ID, GUILD, CHANNEL, BOT_ID = "700000000000000001", "700000000000000002", "700000000000000003", "700000000000000004"
REQUESTER, ADA_ID, STRANGER_ID = "700000000000000010", "700000000000000011", "700000000000000012"
HOOK_ID, HOOK_TOKEN = "700000000000000020", "hook-token"


def user(uid: str, username: str, global_name: str | None = None, *, bot: bool = False) -> dict[str, Any]:
    return {"id": uid, "username": username, "discriminator": "0", "global_name": global_name, "avatar": None,
            "bot": bot}


BOT_USER = user(BOT_ID, "mimic", bot=True)


def message_payload(content: str = "", author: dict[str, Any] = BOT_USER) -> dict[str, Any]:
    return {"id": "700000000000000099", "channel_id": CHANNEL, "author": author, "content": content,
            "timestamp": "2024-01-02T10:00:00+00:00", "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mentions": [], "mention_roles": [], "attachments": [], "embeds": [], "pinned": False, "type": 0,
            "flags": 0}


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.reason = {200: "OK", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
                       404: "Not Found"}.get(status, "")
        self._text = "" if body is None else json.dumps(body)
        self.headers = {"content-type": "application/json"} if body is not None else {}

    async def text(self, encoding: str | None = None) -> str:
        return self._text


class _Exchange:
    def __init__(self, response: FakeResponse) -> None:
        self.response = response

    async def __aenter__(self) -> FakeResponse:
        return self.response

    async def __aexit__(self, *exc: object) -> None:
        return None


class FakeDiscordHttp:
    """Stands in for aiohttp.ClientSession at the wire: discord.py's HTTPClient, its webhook adapter and our
    bot's own session all call `request(method, url, data=..., ...)` on it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.forbidden_webhooks = False
        self.webhook_gone = False  # someone deleted Mimic's webhook in the channel settings
        self.webhooks_full = False  # the channel already holds 15 webhooks (other integrations')
        self.refuse_webhook_posts = False  # Discord answers 400 to any webhook post (a name it rejects, say)
        self.closed = False

    def calls(self, method: str, pattern: str) -> list[Any]:
        return [body for m, path, body in self.requests if m == method and re.fullmatch(pattern, path)]

    def request(self, method: str, url: str, **kw: Any) -> _Exchange:
        path = url.split("/api/v10", 1)[-1].split("?", 1)[0]
        data = kw.get("data")
        body = json.loads(data) if isinstance(data, str) and data else None
        self.requests.append((method, path, body))
        return _Exchange(self.answer(method, path, body))

    def answer(self, method: str, path: str, body: Any) -> FakeResponse:
        if re.fullmatch(r"/interactions/\d+/[^/]+/callback", path):
            return FakeResponse(200, {"interaction": {"id": "1", "type": 2, "response_message_loading": True,
                                                      "response_message_ephemeral": True}})
        if path == f"/channels/{CHANNEL}/webhooks":
            if self.forbidden_webhooks:
                return FakeResponse(403, {"message": "Missing Permissions", "code": 50013})
            if self.webhooks_full and method == "POST":
                return FakeResponse(400, {"message": "Maximum number of webhooks reached (15)", "code": 30007})
            hook = {"id": HOOK_ID, "type": 1, "name": "Mimic", "channel_id": CHANNEL, "guild_id": GUILD,
                    "token": HOOK_TOKEN, "application_id": APP_ID, "user": BOT_USER, "avatar": None}
            return FakeResponse(200, [] if method == "GET" else hook)
        if path == f"/webhooks/{HOOK_ID}/{HOOK_TOKEN}":
            if self.webhook_gone:
                return FakeResponse(404, {"message": "Unknown Webhook", "code": 10015})
            invalid = self.refuse_webhook_posts or "```" in (body or {}).get("username", "") \
                or len((body or {}).get("content", "")) > 2000
            return FakeResponse(400, {"message": "Invalid Form Body", "code": 50035}) if invalid else \
                FakeResponse(204, None)
        if path.startswith(f"/webhooks/{APP_ID}/"):  # follow-ups and edits of the interaction's response
            return FakeResponse(200, message_payload((body or {}).get("content") or ""))
        if path == f"/channels/{CHANNEL}/messages":
            return FakeResponse(200, message_payload((body or {}).get("content") or ""))
        if re.fullmatch(r"/applications/\d+/(guilds/\d+/)?commands", path):
            return FakeResponse(200, [])
        return FakeResponse(404, {"message": "Unknown", "code": 0})

    async def close(self) -> None:
        self.closed = True


def command_payload(name: str, options: list[dict[str, Any]], resolved: dict[str, Any] | None = None, *,
                    group: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"id": "800", "name": group or name, "type": 1, "options": options}
    if group:
        data["options"] = [{"name": name, "type": 1, "options": options}]
    if resolved:
        data["resolved"] = resolved
    return {
        "id": "900000000000000001", "application_id": APP_ID, "type": 2, "token": "interaction-token", "version": 1,
        "guild_id": GUILD, "channel_id": CHANNEL, "locale": "en-US", "guild_locale": "en-US",
        "app_permissions": "0", "entitlements": [], "authorizing_integration_owners": {}, "context": 0,
        "attachment_size_limit": 8388608,
        "channel": {"id": CHANNEL, "type": 0, "name": "general", "guild_id": GUILD, "position": 0,
                    "permission_overwrites": []},
        "member": {"user": user(REQUESTER, "grace", "Grace"), "roles": [], "joined_at": "2023-01-01T00:00:00+00:00",
                   "deaf": False, "mute": False, "flags": 0, "permissions": "0"},
        "data": data,
    }


def impersonate_payload(member_id: str, username: str, nick: str, prompt: str | None = None) -> dict[str, Any]:
    options: list[dict[str, Any]] = [{"name": "person", "type": 6, "value": member_id}]
    if prompt is not None:
        options.append({"name": "prompt", "type": 3, "value": prompt})
    resolved = {"users": {member_id: user(member_id, username, nick)},
                "members": {member_id: {"nick": nick, "roles": [], "joined_at": "2023-01-01T00:00:00+00:00",
                                        "avatar": None, "permissions": "0", "flags": 0}}}
    return command_payload("impersonate", options, resolved)


def make_bot(settings: Settings, commands: Commands, fake: FakeDiscordHttp, capture: Capture | None = None
             ) -> MimicDiscordBot:
    bot = MimicDiscordBot(settings=settings, commands=commands, capture=capture, session=fake)  # type: ignore[arg-type]
    bot.http._HTTPClient__session = fake  # the wire, replaced
    bot.http._global_over = asyncio.Event()
    bot.http._global_over.set()
    bot._connection.user = discord.ClientUser(state=bot._connection, data=BOT_USER)
    bot._connection.application_id = int(APP_ID)
    return bot


def run_bot(settings: Settings, commands: Commands, fake: FakeDiscordHttp,
            scenario: Callable[[MimicDiscordBot, list[BaseException]], Any], capture: Capture | None = None) -> None:
    async def main() -> None:
        bot = make_bot(settings, commands, fake, capture)
        errors: list[BaseException] = []

        async def on_error(interaction: discord.Interaction, error: Exception) -> None:
            errors.append(error)

        bot.tree.on_error = on_error  # type: ignore[method-assign]
        await bot.setup_hook()
        await scenario(bot, errors)
        assert not errors, errors
        await bot.close()

    asyncio.run(main())


async def call(bot: MimicDiscordBot, payload: dict[str, Any]) -> discord.Interaction:
    interaction = discord.Interaction(data=payload, state=bot._connection)  # type: ignore[arg-type]
    await bot.tree._call(interaction)  # what the gateway's INTERACTION_CREATE handler does
    return interaction


def assert_no_pings(fake: FakeDiscordHttp) -> None:
    """Everything with content that Mimic sent carried allowed_mentions {"parse": []}."""
    sent = [(path, body) for method, path, body in fake.requests
            if method in ("POST", "PATCH") and isinstance(body, dict) and "content" in body]
    assert sent
    for path, body in sent:
        assert body.get("allowed_mentions", {}).get("parse") == [], (path, body)


@pytest.fixture
def discord_parts(chat_world: ChatWorld, db: Path):
    """The team's store and model; the Discord member `ada` is found by handle (the store has no Discord id
    for her), so the post uses the member's own nickname and avatar."""
    settings = make_settings(chat_world.model, db)
    gate = ModelGate.from_settings(settings, watch_seconds=None)
    yield settings, Commands(settings, gate, StoreAccess(db))
    gate.close()


def test_impersonate_posts_through_a_reused_webhook(discord_parts) -> None:
    settings, commands = discord_parts
    fake = FakeDiscordHttp()

    async def scenario(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        await call(bot, impersonate_payload(ADA_ID, "ada", "Ada (work)", prompt="@everyone <@123> hi"))
        await call(bot, impersonate_payload(ADA_ID, "ada", "Ada (work)"))

    run_bot(settings, commands, fake, scenario)
    defers = fake.calls("POST", r"/interactions/\d+/[^/]+/callback")
    assert defers[0] == {"type": 5, "data": {"flags": 64}}  # deferred, private "thinking"
    assert len(fake.calls("POST", f"/channels/{CHANNEL}/webhooks")) == 1  # created once ...
    posts = fake.calls("POST", f"/webhooks/{HOOK_ID}/{HOOK_TOKEN}")
    assert len(posts) == 2  # ... and reused
    first = posts[0]
    assert first["username"] == "Ada (work) (mimic)"
    assert first["avatar_url"].startswith("https://cdn.discordapp.com/")
    assert first["content"].startswith("@\u200beveryone @unknown hi") and "<@" not in first["content"]
    assert first["allowed_mentions"] == {"parse": []}
    assert fake.calls("PATCH", rf"/webhooks/{APP_ID}/[^/]+/messages/@original")[0]["content"].startswith("Posted as")
    assert_no_pings(fake)


def test_without_manage_webhooks_it_falls_back_to_a_plain_bot_message(discord_parts) -> None:
    settings, commands = discord_parts
    fake = FakeDiscordHttp()
    fake.forbidden_webhooks = True

    async def scenario(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        await call(bot, impersonate_payload(ADA_ID, "ada", "Ada (work)"))

    run_bot(settings, commands, fake, scenario)
    assert not fake.calls("POST", f"/webhooks/{HOOK_ID}/{HOOK_TOKEN}")
    (message,) = fake.calls("POST", f"/channels/{CHANNEL}/messages")
    assert message["content"].startswith("Mimic, writing as **Ada (work)**:\n")
    assert "plain bot message" in fake.calls("PATCH", rf"/webhooks/{APP_ID}/[^/]+/messages/@original")[0]["content"]
    assert message["allowed_mentions"]["parse"] == []
    assert_no_pings(fake)


def test_a_deleted_webhook_is_dropped_and_found_again(discord_parts) -> None:
    settings, commands = discord_parts
    fake = FakeDiscordHttp()

    async def scenario(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        await call(bot, impersonate_payload(ADA_ID, "ada", "Ada (work)"))
        fake.webhook_gone = True
        await call(bot, impersonate_payload(ADA_ID, "ada", "Ada (work)"))  # falls back for this one ...
        fake.webhook_gone = False
        await call(bot, impersonate_payload(ADA_ID, "ada", "Ada (work)"))  # ... and looks for a webhook again

    run_bot(settings, commands, fake, scenario)
    assert len(fake.calls("POST", f"/channels/{CHANNEL}/messages")) == 1
    assert len(fake.calls("GET", f"/channels/{CHANNEL}/webhooks")) == 2
    assert_no_pings(fake)


def test_a_channel_with_15_webhooks_falls_back_to_a_plain_bot_message(discord_parts) -> None:
    settings, commands = discord_parts
    fake = FakeDiscordHttp()
    fake.webhooks_full = True  # Discord: 400, code 30007

    async def scenario(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        await call(bot, impersonate_payload(ADA_ID, "ada", "Ada (work)"))
        await call(bot, impersonate_payload(ADA_ID, "ada", "Ada (work)"))  # the refusal is remembered

    run_bot(settings, commands, fake, scenario)  # no CommandInvokeError: run_bot asserts none
    assert len(fake.calls("POST", f"/channels/{CHANNEL}/webhooks")) == 1
    assert not fake.calls("POST", f"/webhooks/{HOOK_ID}/{HOOK_TOKEN}")
    message, _ = fake.calls("POST", f"/channels/{CHANNEL}/messages")
    assert message["content"].startswith("Mimic, writing as **Ada (work)**:\n")
    assert "plain bot message" in fake.calls("PATCH", rf"/webhooks/{APP_ID}/[^/]+/messages/@original")[0]["content"]
    assert not [f for f in fake.calls("POST", rf"/webhooks/{APP_ID}/[^/]+") if "went wrong" in f["content"]]
    assert_no_pings(fake)


def test_a_refused_webhook_post_falls_back_and_keeps_the_webhook(discord_parts) -> None:
    settings, commands = discord_parts
    fake = FakeDiscordHttp()

    async def scenario(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        fake.refuse_webhook_posts = True  # Discord: 400, code 50035 Invalid Form Body
        await call(bot, impersonate_payload(ADA_ID, "ada", "Ada (work)"))
        fake.refuse_webhook_posts = False
        await call(bot, impersonate_payload(ADA_ID, "ada", "Ada (work)"))

    run_bot(settings, commands, fake, scenario)
    assert len(fake.calls("POST", f"/webhooks/{HOOK_ID}/{HOOK_TOKEN}")) == 2
    assert len(fake.calls("POST", f"/channels/{CHANNEL}/messages")) == 1  # only the refused one fell back
    assert len(fake.calls("GET", f"/channels/{CHANNEL}/webhooks")) == 1  # the webhook itself was kept
    edits = [e["content"] for e in fake.calls("PATCH", rf"/webhooks/{APP_ID}/[^/]+/messages/@original")]
    assert "plain bot message" in edits[0] and edits[1].startswith("Posted as")
    assert_no_pings(fake)


def test_backticks_in_a_name_are_broken_up(discord_parts) -> None:
    settings, commands = discord_parts
    fake = FakeDiscordHttp()  # answers 400/50035 to a username containing ```

    async def scenario(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        await call(bot, impersonate_payload(ADA_ID, "ada", "Ada ```code```"))

    run_bot(settings, commands, fake, scenario)
    (post,) = fake.calls("POST", f"/webhooks/{HOOK_ID}/{HOOK_TOKEN}")
    assert "```" not in post["username"] and post["username"].replace("\u200b", "") == "Ada ```code``` (mimic)"
    assert not fake.calls("POST", f"/channels/{CHANNEL}/messages")


def test_webhook_content_is_cut_to_discords_limit(discord_parts, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, commands = discord_parts
    fake = FakeDiscordHttp()  # answers 400/50035 to content over 2,000 characters
    monkeypatch.setattr(commands, "handle", lambda invocation: Reply("word " * 1000))  # max_message_chars allows it

    async def scenario(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        await call(bot, impersonate_payload(ADA_ID, "ada", "Ada (work)"))

    run_bot(settings, commands, fake, scenario)
    (post,) = fake.calls("POST", f"/webhooks/{HOOK_ID}/{HOOK_TOKEN}")
    assert len(post["content"]) == 2000
    assert not fake.calls("POST", f"/channels/{CHANNEL}/messages")


def test_someone_who_left_the_server_is_still_a_person(discord_parts) -> None:
    """Without a member entry discord.py resolves the option to a User; the person is still found by id/name."""
    settings, commands = discord_parts
    fake = FakeDiscordHttp()
    payload = impersonate_payload(ADA_ID, "ada", "Ada L")
    del payload["data"]["resolved"]["members"]

    async def scenario(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        await call(bot, payload)

    run_bot(settings, commands, fake, scenario)  # no TransformerError
    (post,) = fake.calls("POST", f"/webhooks/{HOOK_ID}/{HOOK_TOKEN}")
    assert post["username"] == "Ada L (mimic)"


def test_impersonate_is_guild_only_and_consent_works_in_dms(discord_parts) -> None:
    settings, commands = discord_parts

    async def check(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        payload = bot.tree.get_command("impersonate").to_dict(bot.tree)
        assert payload["contexts"] == [0] and payload["dm_permission"] is False, payload
        assert bot.tree.get_command("mimic").to_dict(bot.tree).get("dm_permission") is not False  # /mimic optout

    run_bot(settings, commands, FakeDiscordHttp(), check)


def test_errors_are_private_follow_ups(discord_parts) -> None:
    settings, commands = discord_parts
    fake = FakeDiscordHttp()

    async def scenario(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        await call(bot, impersonate_payload(STRANGER_ID, "stranger", "Stranger"))
        await call(bot, command_payload("forget", [{"name": "person", "type": 3, "value": "ada"}], group="mimic"))
        await call(bot, command_payload("who", [], group="mimic"))

    run_bot(settings, commands, fake, scenario)
    followups = fake.calls("POST", rf"/webhooks/{APP_ID}/[^/]+")
    assert [f["flags"] for f in followups] == [64, 64, 64]  # ephemeral: only the requester sees them
    assert followups[0]["content"].startswith("no such person in the model: stranger")
    assert followups[1]["content"] == "only Mimic's admins can use `forget`."
    assert followups[2]["content"].startswith("I can write as 5 people")
    assert not fake.calls("POST", f"/webhooks/{HOOK_ID}/{HOOK_TOKEN}") and not fake.calls("POST", r"/channels/.*")
    assert_no_pings(fake)


def test_setup_hook_syncs_to_the_dev_guild_only(discord_parts) -> None:
    settings, commands = discord_parts
    fake = FakeDiscordHttp()
    dev = replace(settings, discord=DiscordSettings(dev_guild_id=GUILD))

    async def nothing(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        names = {c.name for c in bot.tree.get_commands(guild=discord.Object(id=int(GUILD)))}
        assert names == {"impersonate", "mimic"}

    run_bot(dev, commands, fake, nothing)
    assert fake.calls("PUT", rf"/applications/{APP_ID}/guilds/{GUILD}/commands")
    assert not fake.calls("PUT", rf"/applications/{APP_ID}/commands")  # never a global sync on start
    fake = FakeDiscordHttp()
    run_bot(settings, commands, fake, _noop)
    assert not [r for r in fake.requests if r[0] == "PUT"]


async def _noop(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
    return None


def test_the_bot_closes_the_session_it_owns(discord_parts) -> None:
    settings, commands = discord_parts

    async def main() -> bool:
        bot = MimicDiscordBot(settings=settings, commands=commands)
        await bot.setup_hook()
        session = bot._session
        await bot.close()
        return session is not None and session.closed

    assert asyncio.run(main())

    async def handed_in() -> bool:
        given = FakeDiscordHttp()
        bot = MimicDiscordBot(settings=settings, commands=commands, session=given)  # type: ignore[arg-type]
        await bot.setup_hook()
        await bot.close()
        return given.closed

    assert not asyncio.run(handed_in())  # a session handed in belongs to whoever made it


TEXT_CHANNEL = {"id": CHANNEL, "type": 0, "name": "general", "guild_id": GUILD, "position": 0,
                "permission_overwrites": []}


def _capturing(discord_parts, db: Path) -> tuple:
    """(settings, commands, capture into `db`, the store, its message count now)."""
    settings, commands = discord_parts
    store = StoreAccess(db)
    capture = Capture(StoreAccess(db), settings.slack.learn, settings.discord.learn)
    return settings, commands, capture, store, store.store().message_count()


def test_capture_cog_stores_edits_and_deletes(discord_parts, db: Path) -> None:
    settings, commands, capture, store, before = _capturing(discord_parts, db)
    fake = FakeDiscordHttp()
    author, channel = user(ADA_ID, "ada_p", "Ada P"), TEXT_CHANNEL

    async def scenario(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        state = bot._connection
        guild = state._get_or_create_unavailable_guild(int(GUILD))
        text_channel = discord.TextChannel(state=state, guild=guild, data=channel)
        cog = bot.get_cog("CaptureCog")
        data = {**message_payload("hello from discord", author), "id": "700000000000000500"}
        await cog.on_message(discord.Message(state=state, channel=text_channel, data=data))
        assert store.store().message_count() == before + 1
        edited = {**data, "content": "edited text", "edited_timestamp": "2024-01-02T11:00:00+00:00"}
        raw = discord.RawMessageUpdateEvent(data=edited, message=discord.Message(state=state, channel=text_channel,
                                                                                  data=edited))
        await cog.on_raw_message_edit(raw)
        assert store.store().message_count() == before + 1
        await cog.on_raw_message_delete(discord.RawMessageDeleteEvent(
            {"id": data["id"], "channel_id": CHANNEL, "guild_id": GUILD}))
        assert store.store().message_count() == before
        webhook_echo = {**data, "id": "700000000000000501", "webhook_id": HOOK_ID,
                        "author": user(HOOK_ID, "Ada (mimic)", bot=True)}
        await cog.on_message(discord.Message(state=state, channel=text_channel, data=webhook_echo))
        assert store.store().message_count() == before  # our own posts are never learned from

    run_bot(settings, commands, fake, scenario, capture=capture)


def test_bulk_deletes_leave_the_store(discord_parts, db: Path) -> None:
    """A purge, or a ban that deletes messages, arrives only as MESSAGE_DELETE_BULK."""
    settings, commands, capture, store, before = _capturing(discord_parts, db)
    author, channel = user(ADA_ID, "ada_p", "Ada P"), TEXT_CHANNEL
    ids = ["700000000000000600", "700000000000000601", "700000000000000602"]

    async def scenario(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        state = bot._connection
        guild = state._get_or_create_unavailable_guild(int(GUILD))
        text_channel = discord.TextChannel(state=state, guild=guild, data=channel)
        cog = bot.get_cog("CaptureCog")
        for i, mid in enumerate(ids):
            data = {**message_payload(f"message {i} from discord", author), "id": mid}
            await cog.on_message(discord.Message(state=state, channel=text_channel, data=data))
        assert store.store().message_count() == before + 3
        # through discord.py's own gateway parser and dispatch, as a purge of two of them arrives
        bot.loop = asyncio.get_running_loop()  # what Client.start sets; dispatch schedules listeners on it
        state.parse_message_delete_bulk({"ids": ids[:2], "channel_id": CHANNEL, "guild_id": GUILD})
        for _ in range(200):
            if store.store().message_count() == before + 1:
                break
            await asyncio.sleep(0.01)
        assert store.store().message_count() == before + 1

    run_bot(settings, commands, FakeDiscordHttp(), scenario, capture=capture)


def test_deleted_channels_and_threads_leave_the_store(discord_parts, db: Path) -> None:
    """A channel (or thread) deleted on Discord takes its messages out of the store, as deleted messages go."""
    settings, commands, capture, store, before = _capturing(discord_parts, db)
    author = user(ADA_ID, "ada_p", "Ada P")
    thread_id = "900000000000000001"

    async def scenario(bot: MimicDiscordBot, errors: list[BaseException]) -> None:
        state = bot._connection
        bot.loop = asyncio.get_running_loop()
        guild = state._get_or_create_unavailable_guild(int(GUILD))
        state._add_guild(guild)  # known to the gateway parser, as after GUILD_CREATE
        text_channel = discord.TextChannel(state=state, guild=guild, data=TEXT_CHANNEL)
        thread = discord.TextChannel(state=state, guild=guild, data={**TEXT_CHANNEL, "id": thread_id, "name": "t"})
        guild._add_channel(text_channel)
        cog = bot.get_cog("CaptureCog")
        for i, where in enumerate((text_channel, text_channel, thread)):
            data = {**message_payload(f"message {i}", author), "id": f"70000000000000070{i}", "channel_id": str(where.id)}
            await cog.on_message(discord.Message(state=state, channel=where, data=data))
        assert store.store().message_count() == before + 3

        async def settled(count: int) -> None:
            for _ in range(200):
                if store.store().message_count() == count:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"{store.store().message_count()} messages, not {count}")

        state.parse_thread_delete({"id": thread_id, "guild_id": GUILD, "parent_id": CHANNEL, "type": 11})
        await settled(before + 2)
        state.parse_channel_delete({**TEXT_CHANNEL})
        await settled(before)

    run_bot(settings, commands, FakeDiscordHttp(), scenario, capture=capture)


def test_channel_kinds() -> None:
    client = discord.Client(intents=discord.Intents.default())
    state = client._connection
    guild = state._get_or_create_unavailable_guild(int(GUILD))
    public = discord.TextChannel(state=state, guild=guild, data={
        "id": CHANNEL, "type": 0, "name": "general", "guild_id": GUILD, "position": 0, "permission_overwrites": []})
    hidden = discord.TextChannel(state=state, guild=guild, data={
        "id": CHANNEL, "type": 0, "name": "leads", "guild_id": GUILD, "position": 0,
        "permission_overwrites": [{"id": GUILD, "type": 0, "allow": "0", "deny": str(1 << 10)}]})
    assert channel_kind(public) == "public" and channel_kind(hidden) == "private" and channel_kind(None) == "unknown"
