"""bot/safety.py: nothing Mimic posts can ping anyone, and no raw id is left in the text."""

from __future__ import annotations

import random
import re

import pytest

from bot.safety import ZWSP, discord_safe, discord_username, render, slack_escape, slack_safe

NAMES = {"U0ADA": "ada", "W0GRACE": "grace"}


@pytest.mark.parametrize(("text", "expected"), [
    ("<!here> look", f"@{ZWSP}here look"),
    ("<!channel>", f"@{ZWSP}channel"),
    ("<!everyone>!", f"@{ZWSP}everyone!"),
    ("<!group>", f"@{ZWSP}channel"),
    ("<!here|here> now", f"@{ZWSP}here now"),
    ("<!subteam^S1|@devs> review", f"@{ZWSP}devs review"),
    ("<!date^1392734382^{date_num}|Feb 18>", "Feb 18"),
    ("hi <@U0ADA>", "hi @ada"),
    ("hi <@W0GRACE|gracie>", "hi @grace"),
    ("hi <@U0NOBODY|bob>", "hi @bob"),
    ("hi <@U0NOBODY>", "hi @someone"),
    ("see <#C1|general>", "see #general"),
    ("see <#C1>", "see #channel"),
    ("<https://x.example/a?b=1&c=2|the docs>", "the docs"),
    ("plain @here and @Channel and @everyone", f"plain @{ZWSP}here and @{ZWSP}Channel and @{ZWSP}everyone"),
    ("R&D <b> 1 > 0", "R&amp;D &lt;b&gt; 1 &gt; 0"),
    ("@heretic is fine", "@heretic is fine"),
])
def test_slack(text: str, expected: str) -> None:
    assert slack_safe(text, NAMES) == expected


def test_slack_escape_order() -> None:
    assert slack_escape("&lt;") == "&amp;lt;"  # the literal text "&lt;" stays literal


@pytest.mark.parametrize(("text", "expected"), [
    ("@everyone look", f"@{ZWSP}everyone look"),
    ("@here", f"@{ZWSP}here"),
    ("hi <@111>", "hi @ada"),
    ("hi <@!111>", "hi @ada"),
    ("hi <@999>", "hi @someone"),
    ("ping <@&222>", "ping @mods"),
    ("ping <@&333>", "ping @role"),
    ("see <#444>", "see <#444>"),  # a channel link pings nobody
])
def test_discord(text: str, expected: str) -> None:
    assert discord_safe(text, {"111": "ada"}, {"222": "mods"}) == expected


def test_console_text_is_left_alone() -> None:
    assert render("<!here> & <@U1>", "console") == "<!here> & <@U1>"


def test_random_text_never_keeps_a_mention() -> None:
    """Fuzz: whatever mix of mention syntax and brackets the model produces, nothing that pings survives."""
    rng = random.Random(0)
    pieces = ["<!here>", "<!channel|x>", "<@U0ADA>", "<@U1|a>", "<@", ">", "<", "@everyone", "@here", "&", "<!",
              "<@!123>", "<@&9>", "<@123>", "x", " ", "|", "!", "@", "\n"]
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        slack = slack_safe(text, NAMES)
        assert "<" not in slack and ">" not in slack
        assert not re.search(r"@(here|channel|everyone)\b", slack, re.IGNORECASE)
        discord = discord_safe(text)
        assert not re.search(r"<@[!&]?\d+>", discord)
        assert not re.search(r"@(here|everyone)\b", discord, re.IGNORECASE)


def test_webhook_names_discord_accepts() -> None:
    assert "discord" not in discord_username("Discord Dan (mimic)").lower()
    assert "clyde" not in discord_username("clyde").lower()
    assert "clyde" not in discord_username("Mr Clydesdale").lower()  # clyde/discord: refused anywhere
    assert len(discord_username("x" * 200)) == 80
    assert len(discord_username("A")) == 2 and discord_username("") == "someone"


@pytest.mark.parametrize("name", ["here", "Everyone", " HERE ", "everyone\n"])
def test_here_and_everyone_are_broken_up_only_as_the_whole_name(name: str) -> None:
    safe = discord_username(name)
    assert safe.lower() not in ("here", "everyone") and safe.replace("\u200a", "").lower() == name.strip().lower()


@pytest.mark.parametrize("name", ["Theresa", "Sphere", "Everyone's friend", "here (mimic)", "Ada"])
def test_names_that_only_contain_here_or_everyone_are_left_alone(name: str) -> None:
    assert discord_username(name) == name


@pytest.mark.parametrize("name", ["Ada ```code```", "````", "a``b", "`x`"])
def test_backtick_runs_are_broken_up(name: str) -> None:
    safe = discord_username(name)
    assert "``" not in safe and safe.replace(ZWSP, "") == name
