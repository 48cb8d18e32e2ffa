"""Impersonation answers the conversation: the channel's recent messages prime the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.commands import Commands, Invocation
from engine.service import ImpersonationService
from tests.bot.conftest import GENERAL, GRACE
from training.store import Store


def test_recent_messages_are_the_channels_last_learnable_ones_oldest_first(db: Path) -> None:
    with Store.open(db) as store:
        recent = store.recent_messages("slack", GENERAL, 5)
        assert len(recent) == 5
        everything = [(m.speaker, m.text) for m in store.iter_corpus() if m.channel == "general"]
        assert recent == everything[-5:]
        speaker = recent[-1][0]
        store.set_opted_out(speaker, True)
        assert all(s != speaker for s, _ in store.recent_messages("slack", GENERAL, 5))
        assert store.recent_messages("slack", "C0NOSUCH", 5) == []
        assert store.recent_messages("slack", GENERAL, 0) == []


def test_impersonate_primes_with_the_channel_conversation(commands: Commands, db: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}
    real = ImpersonationService.impersonate

    def spy(self, speaker, context=None, **kw):
        seen["context"] = context
        return real(self, speaker, context=context, **kw)

    monkeypatch.setattr(ImpersonationService, "impersonate", spy)
    reply = commands.handle(Invocation.from_text("impersonate ada", platform="slack", user_id=GRACE,
                                                 channel_id=GENERAL, channel_kind="public", channel_name="general"))
    assert not reply.private, reply.text
    with Store.open(db) as store:
        want = store.recent_messages("slack", GENERAL, commands.settings.generation.context_lines)
    assert seen["context"] == want and want
