"""Make text safe to post: no mention in anything Mimic writes can ever ping anyone.

The engine returns plain text, and a model can still produce mention syntax (it learned from chat). Every
reply passes through `render(text, platform, ...)` before it is posted:

Slack (chat-formats.md §1.6, §4.4): `<@U1>`/`<@U1|name>` -> `@name` resolved through the store (no raw id is
left), `<!here>`/`<!channel>`/`<!everyone>`/`<!group>` and user groups -> `@` + zero-width space + word, links
-> their label; plain `@here`/`@channel`/`@everyone` get the zero-width space too; then `&`, `<`, `>` are
escaped, the only three characters Slack parses. (Posts also go out with link_names=false and parse=none.)

Discord (§5.2, §5.3): `<@1>`/`<@!1>` -> `@name`, `<@&1>` -> `@role name`, `@everyone`/`@here` -> zero-width
space after the `@`. Every send also carries AllowedMentions.none(), so this is the second lock, not the only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Resolver = Mapping[str, str] | Callable[[str], str | None]

ZWSP = "\u200b"  # zero-width space: `@​here` reads the same and matches no mention syntax
HAIR = "\u200a"  # hair space, for webhook names Discord refuses ("clyde", "discord")

# Slack's token syntax only (mentions, specials, channels, links): other `<...>` is literal text, escaped below.
_SLACK_TOKEN = re.compile(r"<([@!#][^<>]*|(?:https?|mailto|tel|ftp):[^<>]*)>")
_SLACK_BROADCAST = {"here", "channel", "everyone", "group"}
_BROADCAST_WORD = re.compile(r"@(?=(here|channel|everyone)\b)", re.IGNORECASE)
_DISCORD_MENTION = re.compile(r"<@(?:!?(?P<user>\d+)|&(?P<role>\d+))>")
_DISCORD_BROADCAST = re.compile(r"@(?=(everyone|here)\b)", re.IGNORECASE)
_DISCORD_BAD_NAME = re.compile(r"(clyde|discord)", re.IGNORECASE)  # refused anywhere in a webhook name
_DISCORD_RESERVED_NAME = re.compile(r"(everyone|here)", re.IGNORECASE)  # refused only as the whole name
_BACKTICK_PAIR = re.compile(r"`(?=`)")  # "```" is refused (400, 50035 Invalid Form Body)


def _lookup(resolver: Resolver | None, key: str) -> str | None:
    if resolver is None:
        return None
    return resolver(key) if callable(resolver) else resolver.get(key)


def slack_escape(text: str) -> str:
    """Slack's control characters as entities; `&` first so an escape is never escaped twice."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_token(body: str, users: Resolver | None) -> str:
    target, _, label = body.partition("|")
    if target.startswith("@"):
        name = _lookup(users, target[1:]) or label.lstrip("@") or "someone"
        return "@" + name
    if target.startswith("!"):
        word = target[1:].split("^", 1)[0]
        if word in _SLACK_BROADCAST:
            return f"@{ZWSP}{'channel' if word == 'group' else word}"
        if word == "subteam":  # a user group: `<!subteam^S1|@team>`
            return f"@{ZWSP}{label.lstrip('@') or 'team'}"
        return label or word  # `<!date^...|fallback>`
    if target.startswith("#"):
        return "#" + (label or "channel")
    return label or target  # a link


def slack_safe(text: str, users: Resolver | None = None) -> str:
    """Generated or echoed text as it may be posted to Slack. `users` maps a Slack user id to a name."""
    plain = _SLACK_TOKEN.sub(lambda m: _slack_token(m.group(1), users), text)
    plain = _BROADCAST_WORD.sub("@" + ZWSP, plain)
    return slack_escape(plain)


def discord_safe(text: str, users: Resolver | None = None, roles: Resolver | None = None) -> str:
    """Text as it may be posted to Discord. `users`/`roles` map ids to names; unknown ids get a generic word."""

    def render(m: re.Match[str]) -> str:
        if m["user"]:
            return "@" + (_lookup(users, m["user"]) or "someone")
        return "@" + (_lookup(roles, m["role"]) or "role")

    return _DISCORD_BROADCAST.sub("@" + ZWSP, _DISCORD_MENTION.sub(render, text))


def _break(m: re.Match[str]) -> str:
    return m.group(1)[0] + HAIR + m.group(1)[1:]


def discord_username(name: str, limit: int = 80) -> str:
    """A name Discord accepts for a webhook post: no "clyde"/"discord" anywhere and not exactly "everyone"/"here"
    (a hair space breaks them up, as PluralKit does), no "```" (a zero-width space between backticks),
    1-80 characters."""
    name = _DISCORD_BAD_NAME.sub(_break, name.strip())
    if _DISCORD_RESERVED_NAME.fullmatch(name):
        name = _DISCORD_RESERVED_NAME.sub(_break, name)
    name = _BACKTICK_PAIR.sub("`" + ZWSP, name)
    if len(name) > limit:
        name = name[: limit - 1] + "…"
    if not name:
        return "someone"
    return name if len(name) > 1 else name + "\u17b5"  # Discord refuses 1-character names


def render(text: str, platform: str, users: Resolver | None = None, roles: Resolver | None = None) -> str:
    """`text` made safe for `platform` ("slack", "discord"; anything else, a terminal, gets it as is)."""
    if platform == "slack":
        return slack_safe(text, users)
    if platform == "discord":
        return discord_safe(text, users, roles)
    return text
