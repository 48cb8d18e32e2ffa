"""What a chat message's text is, and whether Mimic may learn from it.

The one place that decides this, for every source: the Slack and Discord importers, the Slack history
fetcher and, later, the live bot's capture. Standard library only, pure functions over plain strings and
dicts (never SDK objects), so an exported message and the same message captured live store identical text.

Text rules (chat-formats.md §1.6, §2.2, §5.3):
- Slack mrkdwn: `<@U1>`/`<@U1|name>` -> `@speaker`, `<#C1|general>` -> `#general`, `<url|label>` -> `label`,
  `<url>` -> `url`, `<!here>`/`<!channel>`/`<!everyone>` -> `@here`/`@channel`/`@everyone` (plain text),
  then `&lt;`, `&gt;`, and `&amp;` last.
- Discord raw tokens: `<@1>`/`<@!1>` -> `@speaker`, `<#1>` -> `#channel`, `<@&1>` -> `@role`,
  `<:name:1>`/`<a:name:1>` -> `:name:`, `</cmd:1>` -> `/cmd`, `<t:unix[:style]>` -> a UTC date, and the
  guild navigation links as the client labels them: `<id:customize>` -> `Channels & Roles`, `<id:browse>` ->
  `Browse Channels`, `<id:guide>` -> `Server Guide`, `<id:linked-roles>` -> `Linked Roles`,
  `<id:linked-roles:1>` -> the role's name (`Linked Roles` when unknown).
  DiscordChatExporter's markdown-rendered content has none of these and passes through unchanged.
- Every source: CRLF and lone CR -> LF, NFC, control characters other than LF and TAB removed (this includes
  `\\x1e`, which the corpus reserves for line breaks), lone UTF-16 surrogates -> U+FFFD, surrounding blank
  space trimmed. A message that ends up empty is not learnable.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

# A user/channel id -> name lookup; a Mapping or any callable returning None when unknown.
Resolver = Mapping[str, str] | Callable[[str], str | None]

# Slack subtypes whose text a person typed (§1.5). Everything else, known or not, is skipped.
SLACK_LEARNABLE_SUBTYPES = frozenset({None, "", "thread_broadcast", "me_message"})
# DiscordChatExporter message kinds a person typed; system kinds and numeric unknowns are skipped (§2.2).
DISCORD_LEARNABLE_TYPES = frozenset({"Default", "Reply"})
SLACKBOT_ID = "USLACKBOT"

_SLACK_TOKEN = re.compile(r"<([^<>\n]*)>")
_SLACK_SPECIALS = {"here": "@here", "channel": "@channel", "everyone": "@everyone", "group": "@channel"}
_DISCORD_TOKEN = re.compile(
    r"<(?:@!?(?P<user>\d+)|@&(?P<role>\d+)|#(?P<channel>\d+)|a?:(?P<emoji>[\w~-]+):\d+"
    r"|/(?P<command>[\w -]+):\d+|t:(?P<time>-?\d+)(?::(?P<style>[tTdDfFR]))?"
    r"|id:(?P<navigation>customize|browse|guide|linked-roles)|id:linked-roles:(?P<linked_role>\d+))>"
)
# Guild navigation links (`<id:...>`), as the Discord client labels the pages they open.
_DISCORD_NAVIGATION = {"customize": "Channels & Roles", "browse": "Browse Channels", "guide": "Server Guide",
                       "linked-roles": "Linked Roles"}
# C0 and C1 controls except TAB and LF; DEL too. CR is handled before this runs.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SPEAKER_BAD = re.compile(r"[\s:<>]+")


def _lookup(resolver: Resolver | None, key: str) -> str | None:
    if resolver is None:
        return None
    if callable(resolver):
        return resolver(key)
    return resolver.get(key)


def clean_text(text: str) -> str:
    """Line breaks, Unicode form and control characters, the same for every source; trims the ends."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SURROGATE.sub("\ufffd", text)  # lone halves of a pair would make SQLite's UTF-8 encoder fail
    text = unicodedata.normalize("NFC", text)
    return _CONTROL.sub("", text).strip()


def unescape_slack(text: str) -> str:
    """Slack escapes only these three; `&amp;` goes last so `&amp;lt;` stays the literal text `&lt;`."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _slack_token(body: str, users: Resolver | None, channels: Resolver | None) -> str:
    """One `<...>` token, given what is between the brackets (still escaped)."""
    target, _, label = body.partition("|")
    label = unescape_slack(label)
    if target.startswith("@"):
        name = _lookup(users, target[1:])
        return "@" + (name or label.lstrip("@") or target[1:])
    if target.startswith("#"):
        name = _lookup(channels, target[1:])
        return "#" + (label or name or target[1:])
    if target.startswith("!"):
        command = target[1:]
        if command in _SLACK_SPECIALS:
            return _SLACK_SPECIALS[command]
        if label:  # <!subteam^S1|@team>, <!date^...|fallback>
            return label
        return "@" + command.split("^", 1)[0]
    return label or unescape_slack(target)


def slack_text(text: str, users: Resolver | None = None, channels: Resolver | None = None) -> str:
    """Slack mrkdwn as a person would read it. `users` maps a user id to its speaker name, `channels` an id
    to a channel name; unknown ids fall back to the token's own label, then to the id."""
    out: list[str] = []
    last = 0
    for match in _SLACK_TOKEN.finditer(text):
        out.append(unescape_slack(text[last : match.start()]))
        out.append(_slack_token(match.group(1), users, channels))
        last = match.end()
    out.append(unescape_slack(text[last:]))
    return clean_text("".join(out))


def _discord_time(seconds: int, style: str | None) -> str:
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return str(seconds)
    if style in ("t", "T"):
        return moment.strftime("%H:%M")
    if style in ("d", "D"):
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%d %H:%M")


def discord_text(
    content: str,
    users: Resolver | None = None,
    channels: Resolver | None = None,
    roles: Resolver | None = None,
) -> str:
    """Discord content as a person would read it, from raw tokens or DCE's markdown-rendered text."""

    def render(match: re.Match[str]) -> str:
        if match["user"]:
            return "@" + (_lookup(users, match["user"]) or "unknown")
        if match["role"]:
            return "@" + (_lookup(roles, match["role"]) or "role")
        if match["channel"]:
            return "#" + (_lookup(channels, match["channel"]) or "deleted-channel")
        if match["emoji"]:
            return f":{match['emoji']}:"
        if match["command"]:
            return "/" + match["command"]
        if match["navigation"]:
            return _DISCORD_NAVIGATION[match["navigation"]]
        if match["linked_role"]:
            return _lookup(roles, match["linked_role"]) or _DISCORD_NAVIGATION["linked-roles"]
        return _discord_time(int(match["time"]), match["style"])

    return clean_text(_DISCORD_TOKEN.sub(render, content))


def slack_skip_reason(message: Any, *, author_is_bot: bool = False, include_bots: bool = False) -> str | None:
    """Why a Slack message (day file or Web API) is not learnable text, or None when it is.

    Skipped: non-message records, subtypes outside the allowlist (joins, topics, file shares, tombstones
    and every subtype we do not know), hidden records, and bots (a `bot_message`, any `bot_id`, Slackbot,
    an author users.json marks as a bot) unless `include_bots`. Non-text shapes count as skips, not errors:
    exports carry many kinds of record."""
    if not isinstance(message, dict) or message.get("type", "message") != "message":
        return "not a message"
    if not isinstance(message.get("ts"), str):
        return "no ts"
    subtype = message.get("subtype")
    from_bot = subtype == "bot_message"
    if subtype not in SLACK_LEARNABLE_SUBTYPES and not from_bot:
        return f"subtype {subtype}"
    if message.get("hidden"):
        return "hidden"
    from_bot = from_bot or bool(message.get("bot_id")) or author_is_bot or message.get("user") == SLACKBOT_ID
    if from_bot and not include_bots:
        return "bot"
    author = message.get("user") or (message.get("bot_id") if from_bot else None)
    if not isinstance(author, str) or not author:
        return "no author"
    if not isinstance(message.get("text"), str):
        return "no text"
    return None


def discord_skip_reason(message: Any, *, include_bots: bool = False) -> str | None:
    """Why a DiscordChatExporter message is not learnable text, or None when it is: only `Default` and
    `Reply` kinds (system kinds and numeric unknowns are skipped), and no bots (webhooks, proxies and Mimic
    itself post as bots) unless `include_bots`."""
    if not isinstance(message, dict) or not isinstance(message.get("id"), str):
        return "not a message"
    if message.get("type") not in DISCORD_LEARNABLE_TYPES:
        return f"type {message.get('type')}"
    author = message.get("author")
    if not isinstance(author, dict) or not isinstance(author.get("id"), str) or not author["id"]:
        return "no author"
    if author.get("isBot") and not include_bots:
        return "bot"
    if not isinstance(message.get("content"), str):
        return "no text"
    if not isinstance(message.get("timestamp"), str):
        return "no timestamp"
    return None


def is_learnable_text(text: str) -> bool:
    """A normalised text worth a corpus record: anything left after trimming."""
    return bool(text)


def canonical_speaker_name(name: str) -> str:
    """A name safe as a corpus speaker tag: blank space, `:` (the record separator) and `<>` become `_`,
    control characters and a leading `@`/`#` go, at most 64 characters, never empty. Case is kept;
    uniqueness is the store's job."""
    name = clean_text(name).lstrip("@#")
    name = _SPEAKER_BAD.sub("_", name)
    return name[:64] or "user"
