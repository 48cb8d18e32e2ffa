"""The model registry on its own: layout, atomic pointer, promotion history, rollback, pruning. No torch."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from export.errors import RegistryError
from export.registry import (
    CHECKPOINT_FILE,
    COPY_INDEX_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    Registry,
    read_lines,
    version_name,
)

T0 = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def _stage(reg: Registry, n: int, parent: str | None = None, files: tuple[str, ...] = (MODEL_FILE, CHECKPOINT_FILE)) -> str:
    name = version_name(T0 + timedelta(days=n))
    d = reg.start(name, {"created": (T0 + timedelta(days=n)).isoformat(), "parent": parent})
    for f in files:
        (d / f).write_bytes(b"x" * 10)
    return name


def _add(reg: Registry, n: int, promote: bool = True, parent: str | None = None) -> str:
    name = _stage(reg, n, parent)
    reg.commit(name, {**reg.manifest(name), "val_bpc": 2.0 + n}, promote=promote, reason=f"test {n}")
    return name


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry.open(tmp_path / "models", create=True)


def test_names_sort_by_time() -> None:
    names = [version_name(T0 + timedelta(seconds=s)) for s in (0, 1, 59, 3600, 86400 * 40)]
    assert sorted(names) == names
    assert names[0].startswith("20261128-030000-")


def test_missing_registry_and_single_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no model registry here yet"):
        Registry.open(tmp_path / "nothing")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(RegistryError, match="single model file"):
        Registry.open(tmp_path / "m.onnx")


def test_commit_promote_writes_the_engine_layout(reg: Registry) -> None:
    name = _add(reg, 1)
    assert (reg.root / "current").read_text() == name + "\n"
    d = reg.root / "versions" / name
    assert {p.name for p in d.iterdir()} >= {MODEL_FILE, CHECKPOINT_FILE, MANIFEST_FILE}
    manifest = json.loads((d / MANIFEST_FILE).read_text())
    assert manifest["status"] == "promoted" and manifest["decision"]["promoted"] is True
    assert manifest["decision"]["reason"] == "test 1" and manifest["val_bpc"] == 3.0
    assert reg.current() == name and reg.pointer_problem() is None
    assert not list(reg.staging.iterdir())
    # The bots may run as another user: every file of a version is readable by others.
    assert all(p.stat().st_mode & stat.S_IROTH for p in d.iterdir())
    assert [e["version"] for e in reg.history()] == [name]


def test_rejected_candidates_stay_out_of_versions(reg: Registry) -> None:
    good = _add(reg, 1)
    bad = _add(reg, 2, promote=False)
    assert reg.current() == good
    assert not (reg.versions / bad).exists() and (reg.rejected / bad).is_dir()
    assert reg.manifest(bad)["decision"] == {**reg.manifest(bad)["decision"], "promoted": False, "reason": "test 2"}
    states = {v.name: (v.state, v.current) for v in reg.list_versions()}
    assert states == {good: ("promoted", True), bad: ("rejected", False)}


def test_half_written_version_is_never_promotable(reg: Registry) -> None:
    _add(reg, 1)
    name = _stage(reg, 2, files=(MODEL_FILE,))  # killed before the checkpoint was renamed in
    with pytest.raises(RegistryError, match="incomplete"):
        reg.commit(name, {}, promote=True, reason="x")
    with pytest.raises(RegistryError, match="incomplete"):
        reg.promote(name, "by hand")
    assert [v.state for v in reg.list_versions() if v.name == name] == ["incomplete"]
    reg.discard(name)
    assert reg.locate(name) is None


def test_pointer_switch_is_atomic(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _add(reg, 1)
    second = _stage(reg, 2)

    def crash(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        reg.commit(second, {}, promote=True, reason="x")
    monkeypatch.undo()
    assert (reg.root / "current").read_text() == first + "\n"  # old pointer intact, no temp file left
    assert [p.name for p in reg.root.iterdir() if p.name.startswith(".current")] == []


def test_pointer_problems_are_named(reg: Registry) -> None:
    assert "missing" in reg.pointer_problem()
    name = _add(reg, 1)
    (reg.root / "current").write_text("garbage\x00\n")
    assert "does not name a version" in reg.pointer_problem() and reg.current() is None
    (reg.root / "current").write_text(name)
    (reg.versions / name / MODEL_FILE).unlink()
    assert "missing files" in reg.pointer_problem()


def test_rollback_walks_back_through_promotions(reg: Registry) -> None:
    a, b, c = _add(reg, 1), _add(reg, 2), _add(reg, 3)
    _add(reg, 4, promote=False)  # a rejected candidate is never a rollback target
    assert reg.rollback() == (b, c)
    assert reg.current() == b
    assert reg.rollback() == (a, b)
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback()
    reg.promote(c, "by hand")
    assert reg.rollback_target() == a  # b was rolled back; c was promoted on top of a
    assert [e["action"] for e in reg.history()] == ["promote"] * 3 + ["rollback"] * 2 + ["promote"]


def test_rollback_skips_deleted_versions(reg: Registry) -> None:
    a, b, _ = _add(reg, 1), _add(reg, 2), _add(reg, 3)
    (reg.versions / b / MODEL_FILE).unlink()
    assert reg.rollback()[0] == a


def test_promote_a_rejected_candidate_by_hand(reg: Registry) -> None:
    _add(reg, 1)
    bad = _add(reg, 2, promote=False)
    reg.promote(bad, "promoted by hand")
    assert reg.current() == bad and (reg.versions / bad).is_dir() and not (reg.rejected / bad).exists()
    assert reg.manifest(bad)["decision"]["reason"] == "promoted by hand"
    with pytest.raises(RegistryError, match="no version"):
        reg.promote("20990101-000000-ffffff", "x")


def test_prune_keeps_the_newest_and_the_rollback_target(reg: Registry) -> None:
    a, b, c, d, e = (_add(reg, i) for i in range(1, 6))
    rejected = [_add(reg, i, promote=False) for i in range(6, 9)]
    deleted = reg.prune(keep=1)
    assert {v.name for v in reg.list_versions()} == {e, d, rejected[-1]}  # d: where a rollback goes
    assert deleted == sorted([a, b, c, *rejected[:-1]])
    assert reg.rollback()[0] == d


def test_prune_never_deletes_the_current_versions_parent(reg: Registry) -> None:
    a, b, x = _add(reg, 1), _add(reg, 2), _add(reg, 3)
    c = _stage(reg, 4, parent=a)  # warm-started from a (say, after a rollback to a)
    reg.commit(c, reg.manifest(c), promote=True, reason="x")
    assert reg.prune(keep=1) == [b]
    assert {v.name for v in reg.list_versions()} == {a, x, c}
    with pytest.raises(RegistryError, match="at least 1"):
        reg.prune(keep=0)


def test_logs_survive_a_torn_line(reg: Registry) -> None:
    reg.log_run({"event": "started", "run": "r1"})
    with open(reg.root / "runs.jsonl", "a") as f:
        f.write('{"event": "finished", "ru')  # the process died mid-append
    reg.log_run({"event": "started", "run": "r2"})
    assert [r["run"] for r in reg.runs()] == ["r1", "r2"]
    assert read_lines(reg.root / "nothing.jsonl") == []


def _chat(reg: Registry, n: int, files: tuple[str, ...]) -> str:
    """A staged chat version: its manifest lists speakers, as `mimic retrain` writes it."""
    name = version_name(T0 + timedelta(days=n))
    d = reg.start(name, {"created": (T0 + timedelta(days=n)).isoformat(), "speakers": {"ada": 40}})
    for f in files:
        (d / f).write_bytes(b"x" * 10)
    return name


def test_a_chat_version_is_not_usable_without_its_copy_index(reg: Registry) -> None:
    """The engine refuses to serve a chat model without its copy index, so the registry never points at one."""
    first = _add(reg, 1)  # a plain-text version: no copy index needed
    name = _chat(reg, 2, (MODEL_FILE, CHECKPOINT_FILE))
    with pytest.raises(RegistryError, match=COPY_INDEX_FILE):
        reg.commit(name, reg.manifest(name), promote=True, reason="x")
    (reg.staging / name / COPY_INDEX_FILE).write_bytes(b"x")
    reg.commit(name, reg.manifest(name), promote=False, reason="worse")
    (reg.rejected / name / COPY_INDEX_FILE).unlink()
    with pytest.raises(RegistryError, match=f"missing {COPY_INDEX_FILE}"):
        reg.promote(name, "by hand")
    assert reg.current() == first and (reg.rejected / name).is_dir()  # a refused candidate stays where it was
    (reg.rejected / name / COPY_INDEX_FILE).write_bytes(b"x")
    reg.promote(name, "by hand")
    (reg.versions / name / COPY_INDEX_FILE).unlink()
    assert not reg.usable(name) and "missing files" in reg.pointer_problem()


def test_promote_and_rollback_run_the_check_before_moving_the_pointer(reg: Registry) -> None:
    a, b = _add(reg, 1), _add(reg, 2)
    seen: list[Path] = []

    def refuse(model: Path) -> None:
        seen.append(model)
        raise RegistryError(f"{model.parent.name} does not load")

    with pytest.raises(RegistryError, match="does not load"):
        reg.rollback(check=refuse)
    assert seen == [reg.model_path(a)] and reg.current() == b
    bad = _add(reg, 3, promote=False)
    with pytest.raises(RegistryError, match="does not load"):
        reg.promote(bad, "by hand", check=refuse)
    assert reg.current() == b and (reg.rejected / bad).is_dir()
    assert [e["version"] for e in reg.history()] == [a, b]
    reg.promote(bad, "by hand", check=seen.append)
    assert reg.current() == bad and seen[-1] == reg.rejected / bad / MODEL_FILE


def test_last_good_is_never_a_rolled_back_version(reg: Registry) -> None:
    a, b, c = _add(reg, 1), _add(reg, 2), _add(reg, 3)
    reg.rollback()  # c judged worse
    assert reg.last_good() == b
    for name in (a, b):
        (reg.versions / name / MODEL_FILE).unlink()
    assert reg.last_good() is None and reg.usable(c)


def test_the_engine_reads_the_promotion_history_as_the_registry_does(reg: Registry) -> None:
    """engine/model_source.py replays promotions.jsonl itself (it imports nothing of ours): both agree."""
    from engine.model_source import fallback_versions

    a, b, c, d = (_add(reg, i) for i in range(1, 5))
    reg.rollback()  # d out
    reg.rollback()  # c out
    reg.promote(d, "by hand")  # d back in, on top of b
    reg.repair_pointer(a, "current was broken")
    (reg.versions / "20200101-000000-aaaaaa").mkdir()  # never promoted (say, copied in by hand)
    stack = reg.promotion_stack()
    assert stack == [a, b, d, a]
    assert fallback_versions(reg.root) == [a, d, b, "20200101-000000-aaaaaa"]  # c was rolled back
    assert c not in fallback_versions(reg.root) and reg.last_good() == a
