"""One person, several accounts: `link` makes them one speaker, and consent covers them all."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from training.errors import UnknownUserError
from training.store import ChannelRecord, MessageRecord, Store, UserRecord


def _team(path: Path) -> Path:
    """Viola on Slack and on Discord (another account, so the store named it viola_2), and Orsino."""
    with Store.open(path) as s:
        s.upsert_workspace("slack", "T1", "Illyria")
        s.upsert_workspace("discord", "G1", "Illyria")
        s.upsert_channel(ChannelRecord("slack", "C1", "general", "T1"))
        s.upsert_channel(ChannelRecord("discord", "D1", "general", "G1"))
        s.upsert_users([UserRecord("slack", "U1", "viola", "Viola", None, workspace_id="T1"),
                        UserRecord("slack", "U2", "orsino", "Orsino", None, workspace_id="T1")])
        s.upsert_users([UserRecord("discord", "9", "viola", "Viola", None, workspace_id="G1")])
        s.upsert_messages([MessageRecord("slack", "C1", "1.0", "U1", "I left no ring with her", 1.0),
                           MessageRecord("slack", "C1", "2.0", "U2", "If music be the food of love", 2.0),
                           MessageRecord("discord", "D1", "100", "9", "What country, friends, is this?", 3.0),
                           MessageRecord("discord", "D1", "101", "9", "Disguise, I see thou art a wickedness", 4.0)])
    return path


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return _team(tmp_path / "mimic.db")


def test_two_accounts_are_two_speakers_until_linked(db: Path) -> None:
    with Store.open(db) as s:
        assert s.speaker_counts() == {"viola_2": 2, "orsino": 1, "viola": 1}
        accounts = s.link("viola", "viola_2")
        assert [a.speaker for a in accounts] == ["viola", "viola_2"]
        assert s.speaker_counts() == {"viola": 3, "orsino": 1}
        assert {m.speaker for m in s.iter_corpus()} == {"viola", "orsino"}
        assert s.speaker_names("discord") == {"9": "viola"}  # a mention of the Discord account reads @viola


def test_an_opt_out_of_either_account_covers_both(db: Path) -> None:
    with Store.open(db) as s:
        s.link("viola", "viola_2")
        s.set_opted_out("viola_2", True)  # asked on Discord
        assert s.find_user("viola").opted_out and s.find_user("viola_2").opted_out
        assert s.speaker_counts() == {"orsino": 1}
        s.set_opted_out("viola", False)
        assert s.speaker_counts() == {"viola": 3, "orsino": 1}


def test_linking_someone_opted_out_keeps_them_out(db: Path) -> None:
    with Store.open(db) as s:
        s.set_opted_out("viola_2", True)
        accounts = s.link("viola", "viola_2")
        assert all(a.opted_out for a in accounts)
        assert s.speaker_counts() == {"orsino": 1}


def test_forget_takes_every_account(db: Path) -> None:
    with Store.open(db) as s:
        s.link("viola", "viola_2")
        assert s.forget("viola") == 3
        assert all(s.find_user(n).forgotten and s.find_user(n).speaker is None for n in ("viola", "viola_2"))
        assert s.speaker_counts() == {"orsino": 1}


def test_unlink_makes_two_people_again(db: Path) -> None:
    with Store.open(db) as s:
        s.link("viola", "viola_2")
        s.unlink("viola")  # the first account leaves: viola_2 is a person of its own
        assert s.speaker_counts() == {"viola_2": 2, "orsino": 1, "viola": 1}
        with pytest.raises(UnknownUserError, match="not linked"):
            s.unlink("viola")


def test_namesakes_are_the_unlinked_accounts_with_the_same_name(db: Path) -> None:
    with Store.open(db) as s:
        assert [a.speaker for a in s.namesakes("viola")] == ["viola_2"]
        assert s.namesakes("orsino") == []
        s.link("viola", "viola_2")
        assert s.namesakes("viola") == []


def test_cli_link_then_optout_and_the_namesake_warning(db: Path, capsys, caplog) -> None:
    assert main(["optout", "viola", "--db", str(db)]) == 0
    assert "viola_2 (discord) go by the same name as viola" in caplog.text  # not covered, and said so
    assert main(["optin", "viola", "--db", str(db)]) == 0
    assert main(["link", "viola", "viola_2", "--db", str(db)]) == 0
    assert "viola and viola_2 (the same person)" in capsys.readouterr().out
    caplog.clear()
    assert main(["optout", "Viola", "--db", str(db)]) == 0  # by display name: both accounts have it, one person
    assert "viola and viola_2 (the same person) are opted out" in capsys.readouterr().out
    assert "go by the same name" not in caplog.text
    with Store.open(db) as s:
        assert s.speaker_counts() == {"orsino": 1}


def test_forget_after_an_unlink_still_reaches_the_name_it_was_learned_under(db: Path) -> None:
    """While linked, viola_2's words went into viola's voice memory; forgetting viola_2 after an unlink must
    clear that memory too (until the next retraining rebuilds it without them)."""
    with Store.open(db) as s:
        s.link("viola", "viola_2")
        s.unlink("viola_2")
        assert s.learned_names("viola_2") == ["viola_2", "viola"]
        assert s.learned_names("orsino") == ["orsino"]


def test_a_linked_account_reads_as_its_person(db: Path) -> None:
    with Store.open(db) as s:
        assert s.speaker_of("discord", "9") == "viola_2"
        s.link("viola", "viola_2")
        assert s.speaker_of("discord", "9") == "viola" and s.speaker_of("slack", "U2") == "orsino"
        assert s.speaker_of("slack", "nobody") is None


def test_stats_counts_an_opted_out_person_once(db: Path) -> None:
    with Store.open(db) as s:
        s.link("viola", "viola_2")
        s.set_opted_out("viola", True)
        assert s.stats()["opted_out"] == 1


def test_cli_forget_after_unlink_clears_both_voice_memories(db: Path, tmp_path: Path, monkeypatch) -> None:
    import bot.forget

    cleared: list[str] = []
    monkeypatch.setattr(bot.forget, "forget_in_models", lambda model, speaker: cleared.append(speaker) or 1)
    with Store.open(db) as s:
        s.link("viola", "viola_2")
        s.unlink("viola_2")
    assert main(["forget", "viola_2", "--yes", "--db", str(db), "--model", str(tmp_path / "models")]) == 0
    assert cleared == ["viola_2", "viola"]


def test_a_forgotten_persons_name_is_never_given_to_someone_else(db: Path) -> None:
    """A model trained before the forget still knows 'viola': a newcomer named so would be written as with the
    forgotten person's words. The name stays taken (as a digest, not the name), and asking for it is refused."""
    with Store.open(db) as s:
        s.link("viola", "viola_2")
        s.forget("viola")
        s.upsert_users([UserRecord("slack", "U9", "viola", "New Viola", None, workspace_id="T1")])
        assert s.user_by_platform_id("slack", "U9").speaker == "viola_3"
        tomb = s.find_user("viola")
        assert tomb is not None and tomb.forgotten and tomb.speaker is None
        assert "viola" not in {r[0] for r in s._conn.execute("SELECT speaker_key FROM users")}  # only a digest
        with pytest.raises(UnknownUserError, match="was forgotten"):
            s.set_opted_out("viola", False)
        with pytest.raises(UnknownUserError, match="forgotten"):
            s.link("viola_3", "viola")


def test_linking_an_account_to_itself_or_again_says_so(db: Path) -> None:
    with Store.open(db) as s:
        with pytest.raises(UnknownUserError, match="the same account"):
            s.link("viola", "viola")
        s.link("viola", "viola_2")
        with pytest.raises(UnknownUserError, match="already the same person"):
            s.link("viola_2", "viola")
