import pytest

from training import normalize as n

USERS = {"U1": "alice", "U2": "bob_2"}
CHANNELS = {"C1": "general"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("hi <@U1>", "hi @alice"),
        ("hi <@U2|bob>", "hi @bob_2"),  # the store's speaker name wins over the token's old label
        ("hi <@U9|zed>", "hi @zed"),  # unknown id: the label
        ("hi <@U9>", "hi @U9"),  # unknown id, no label: the id
        ("in <#C1|general> and <#C1> and <#C7>", "in #general and #general and #C7"),
        ("<http://x.invalid|label> <http://x.invalid>", "label http://x.invalid"),
        ("<mailto:a@b.invalid|a@b.invalid> <tel:123|123>", "a@b.invalid 123"),
        ("<!here> <!channel> <!everyone> <!group> <!here|here>", "@here @channel @everyone @channel @here"),
        ("<!subteam^S1|@team> <!subteam^S2>", "@team @subteam"),
        ("<!date^1392734382^{date_num}|Feb 18, 2014>", "Feb 18, 2014"),
        ("&lt;b&gt; &amp; &amp;lt; &amp;amp;", "<b> & &lt; &amp;"),  # &amp; last
        ("<https://x.invalid/?a=1&amp;b=2>", "https://x.invalid/?a=1&b=2"),
        ("&gt; quoted\n&gt; twice", "> quoted\n> twice"),
        (":+1: :wave::skin-tone-2: 🎉", ":+1: :wave::skin-tone-2: 🎉"),
        ("  padded\r\nlines\rhere  ", "padded\nlines\nhere"),
    ],
)
def test_slack_text(raw, expected):
    assert n.slack_text(raw, USERS, CHANNELS) == expected


def test_slack_text_accepts_a_lookup_function():
    assert n.slack_text("<@U1>", USERS.get) == "@alice"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("hey <@201> and <@!202>", "hey @adam and @beth"),
        ("unknown <@999>", "unknown @unknown"),
        ("see <#300> and <#301>", "see #general and #deleted-channel"),
        ("ping <@&400> <@&401>", "ping @mods @role"),
        ("<:kekw:500> <a:dance:501>", ":kekw: :dance:"),
        ("use </ping:600> or </admin ban:601>", "use /ping or /admin ban"),
        ("at <t:0:d> <t:0:t> <t:0>", "at 1970-01-01 00:00 1970-01-01 00:00"),
        ("pick in <id:customize> or <id:browse>, read <id:guide>", "pick in Channels & Roles or Browse Channels, "
                                                                     "read Server Guide"),
        ("see <id:linked-roles>, get <id:linked-roles:400> or <id:linked-roles:401>",
         "see Linked Roles, get mods or Linked Roles"),  # a linked role by its name, when known
        ("<id:nope> <id:customize:1>", None),  # not navigation links
        ("@Adam already rendered by DCE :pepeheart: **bold** ||spoiler||", None),
        ("@everyone @here 🥶", None),
    ],
)
def test_discord_text(raw, expected):
    out = n.discord_text(raw, {"201": "adam", "202": "beth"}, {"300": "general"}, {"400": "mods"})
    assert out == (raw if expected is None else expected)


def test_discord_time_styles():
    assert n.discord_text("<t:86400:D>") == "1970-01-02"
    assert n.discord_text("<t:86400:T>") == "00:00"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\r\nb", "a\nb"),
        ("a\x1eb\x00c\x7fd\x85e", "abcde"),  # \x1e is the corpus's line break: never in text
        ("tab\there", "tab\there"),
        ("e\u0301", "\u00e9"),  # NFC
        ("lone \ud83d half", "lone \ufffd half"),
        (" \n ", ""),
    ],
)
def test_clean_text(raw, expected):
    assert n.clean_text(raw) == expected


def test_unescape_order():
    assert n.unescape_slack("&amp;gt;") == "&gt;"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"type": "message", "ts": "1.0", "user": "U1", "text": "hi"}, None),
        ({"type": "message", "ts": "1.0", "user": "U1", "text": "hi", "subtype": "thread_broadcast"}, None),
        ({"type": "message", "ts": "1.0", "user": "U1", "text": "hi", "subtype": "me_message"}, None),
        ({"type": "message", "ts": "1.0", "user": "U1", "text": "hi", "bot_id": None}, None),
        ({"type": "message", "ts": "1.0", "user": "U1", "text": "x", "subtype": "channel_join"}, "subtype channel_join"),
        ({"type": "message", "ts": "1.0", "user": "U1", "text": "x", "subtype": "file_share"}, "subtype file_share"),
        ({"type": "message", "ts": "1.0", "user": "U1", "text": "x", "subtype": "brand_new"}, "subtype brand_new"),
        ({"type": "message", "ts": "1.0", "text": "x", "subtype": "bot_message", "bot_id": "B1"}, "bot"),
        ({"type": "message", "ts": "1.0", "user": "U1", "text": "x", "bot_id": "B1"}, "bot"),
        ({"type": "message", "ts": "1.0", "user": "USLACKBOT", "text": "x"}, "bot"),
        ({"type": "message", "ts": "1.0", "user": "U1", "text": "x", "hidden": True}, "hidden"),
        ({"type": "message", "ts": "1.0", "text": "x"}, "no author"),
        ({"type": "message", "ts": "1.0", "user": "U1"}, "no text"),
        ({"type": "message", "user": "U1", "text": "x"}, "no ts"),
        ({"type": "reaction_added"}, "not a message"),
        (["not", "a", "dict"], "not a message"),
    ],
)
def test_slack_skip_reason(message, reason):
    assert n.slack_skip_reason(message) == reason


def test_slack_bots_pass_when_asked():
    bot = {"type": "message", "ts": "1.0", "text": "x", "subtype": "bot_message", "bot_id": "B1"}
    assert n.slack_skip_reason(bot, include_bots=True) is None
    human = {"type": "message", "ts": "1.0", "user": "U1", "text": "x"}
    assert n.slack_skip_reason(human, author_is_bot=True) == "bot"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"id": "1", "type": "Default", "timestamp": "t", "content": "hi", "author": {"id": "2"}}, None),
        ({"id": "1", "type": "Reply", "timestamp": "t", "content": "hi", "author": {"id": "2"}}, None),
        ({"id": "1", "type": "GuildMemberJoin", "timestamp": "t", "content": "x", "author": {"id": "2"}},
         "type GuildMemberJoin"),
        ({"id": "1", "type": "20", "timestamp": "t", "content": "x", "author": {"id": "2"}}, "type 20"),
        ({"id": "1", "type": "Default", "timestamp": "t", "content": "x", "author": {"id": "2", "isBot": True}}, "bot"),
        ({"id": "1", "type": "Default", "timestamp": "t", "content": None, "author": {"id": "2"}}, "no text"),
        ({"id": "1", "type": "Default", "timestamp": "t", "content": "x"}, "no author"),
        ({"type": "Default"}, "not a message"),
        ("text", "not a message"),
    ],
)
def test_discord_skip_reason(message, reason):
    assert n.discord_skip_reason(message) == reason


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ztatlock", "ztatlock"),
        ("Neeraj Tandon", "Neeraj_Tandon"),
        ("  two   spaces\tand tab ", "two_spaces_and_tab"),
        ("@alice", "alice"),
        ("a:b", "a_b"),
        ("k._", "k._"),
        ("汉语 हिन्दी", "汉语_हिन्दी"),
        ("bell\x07", "bell"),
        ("", "user"),
        ("   ", "user"),
        (":", "_"),
        ("x" * 100, "x" * 64),
    ],
)
def test_canonical_speaker_name(name, expected):
    out = n.canonical_speaker_name(name)
    assert out == expected
    assert out and ":" not in out and not any(c.isspace() for c in out)
