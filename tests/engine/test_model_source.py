import json
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest

from engine import model_source
from engine.errors import ModelLoadError
from engine.impersonate import ImpersonationConfig
from engine.model_source import ModelHolder, ModelSource, load_model
from engine.service import ImpersonationService


def _copy_model(model: Path, dest: Path) -> None:
    """The model and the files beside it (copy index, voice memory), as `dest` and the names beside it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for f in model.parent.glob(model.stem + ".*"):
        shutil.copy(f, dest.with_name(dest.stem + f.name[len(model.stem):]))


def _registry(tmp_path: Path, model: Path, versions: list[str], current: str | None) -> Path:
    reg = tmp_path / "models"
    for v in versions:
        _copy_model(model, reg / "versions" / v / "model.onnx")
    if current is not None:
        (reg / "current").write_text(current + "\n")
    return reg


def _point(reg: Path, version: str) -> None:
    tmp = reg / ".current.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, reg / "current")  # what the registry does: never a half-written pointer


def test_registry_follows_current(tmp_path: Path, chat_run: Path) -> None:
    reg = _registry(tmp_path, chat_run / "model.onnx", ["v1", "v2"], "v1")
    holder = ModelHolder.open(reg)
    assert holder.get().version == "v1"
    assert not holder.refresh()
    _point(reg, "v2")
    assert holder.refresh() and holder.get().version == "v2"


def test_broken_pointer_or_missing_file_keeps_the_loaded_model(tmp_path: Path, chat_run: Path, caplog) -> None:
    reg = _registry(tmp_path, chat_run / "model.onnx", ["v1", "v2"], "v1")
    holder = ModelHolder.open(reg)
    caplog.set_level(logging.ERROR)
    _point(reg, "no-such-version")
    assert not holder.refresh() and holder.get().version == "v1"
    (reg / "versions" / "v2" / "model.onnx").write_bytes(b"corrupt")
    _point(reg, "v2")
    assert not holder.refresh() and holder.get().version == "v1"
    assert "still serving the previous one" in caplog.text


def test_startup_falls_back_to_the_newest_valid_version(tmp_path: Path, chat_run: Path) -> None:
    reg = _registry(tmp_path, chat_run / "model.onnx", ["v1", "v2", "v3"], "garbage\x00")
    (reg / "versions" / "v3" / "model.onnx").unlink()
    assert ModelSource(reg).load_initial().version == "v2"


def test_empty_registry_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "models" / "versions").mkdir(parents=True)
    with pytest.raises(ModelLoadError, match="no model version"):
        ModelSource(tmp_path / "models").load_initial()


def test_a_replaced_model_file_is_picked_up(tmp_path: Path, chat_run: Path, tiny_model: Path) -> None:
    path = tmp_path / "m.onnx"
    _copy_model(chat_run / "model.onnx", path)
    holder = ModelHolder.open(path)
    assert len(holder.get().speakers) == 6
    tmp = tmp_path / "m.tmp"
    shutil.copy(tiny_model, tmp)
    os.replace(tmp, path)
    assert holder.refresh() and len(holder.get().speakers) == 0


def test_hot_reload_under_concurrent_requests(tmp_path: Path, chat_run: Path) -> None:
    reg = _registry(tmp_path, chat_run / "model.onnx", ["v1", "v2"], "v1")
    holder = ModelHolder.open(reg)
    holder.watch(interval=0.01)
    service = ImpersonationService(holder, ImpersonationConfig(max_chars=60, max_attempts=30), batch_window=0.005)
    seen: list[str] = []
    errors: list[BaseException] = []
    switched = threading.Event()

    def client(i: int) -> None:
        for j in range(6):
            if i == 0 and j == 2:
                _point(reg, "v2")
                switched.set()
            try:
                msg = service.impersonate("ada", srand=i * 100 + j, timeout=120)[0]
                seen.append(msg.model_version)
            except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert switched.wait(1)
    for _ in range(200):  # the watcher picks the switch up within a few intervals
        if holder.get().version == "v2":
            break
        threading.Event().wait(0.01)
    last = service.impersonate("ada", srand=1, timeout=60)[0]
    service.close()
    holder.close()
    assert not errors
    assert len(seen) == 48 and last.model_version == "v2"
    assert service.batches_run < service.jobs_run  # requests that arrived together shared a batch


# ---- damaged, missing and rewritten files beside the model (serving audit) ---------------------------------


def _halve(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(".replacing")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("sidecar", ["model.voice.npz", "model.copyindex.npy"])
@pytest.mark.parametrize("damage", [_halve, lambda p: p.write_bytes(p.read_bytes()[:128]),
                                    lambda p: p.write_bytes(b"\x93NUMPY garbage")])
def test_a_damaged_voice_memory_or_copy_index_is_a_load_error_naming_it(tmp_path: Path, chat_run: Path,
                                                                         sidecar: str, damage) -> None:
    model = tmp_path / "model.onnx"
    _copy_model(chat_run / "model.onnx", model)
    damage(tmp_path / sidecar)
    with pytest.raises(ModelLoadError, match=sidecar.replace(".", r"\.")) as caught:
        load_model(model)
    assert "\n" not in str(caught.value)


def test_startup_skips_a_version_whose_voice_memory_is_damaged(tmp_path: Path, chat_run: Path, caplog) -> None:
    reg = _registry(tmp_path, chat_run / "model.onnx", ["v1", "v2"], "v2")
    _halve(reg / "versions" / "v2" / "model.voice.npz")
    caplog.set_level(logging.ERROR)
    assert ModelSource(reg).load_initial().version == "v1"
    assert "model.voice.npz: unreadable voice memory (BadZipFile" in caplog.text
    assert not any(r.exc_info for r in caplog.records)  # a damaged file is one line, not a traceback


def test_a_reload_onto_a_damaged_voice_memory_logs_one_line_and_keeps_serving(tmp_path: Path, chat_run: Path,
                                                                              caplog) -> None:
    reg = _registry(tmp_path, chat_run / "model.onnx", ["v1", "v2"], "v1")
    _halve(reg / "versions" / "v2" / "model.voice.npz")
    holder = ModelHolder.open(reg)
    caplog.set_level(logging.ERROR)
    _point(reg, "v2")
    assert not holder.refresh() and holder.get().version == "v1"
    (line,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "not loaded, still serving the previous one" in line.getMessage() and "voice memory" in line.getMessage()
    assert line.exc_info is None


def test_an_unforeseen_load_error_is_logged_with_its_traceback_once_and_retried_later(
        tmp_path: Path, chat_run: Path, caplog, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = _registry(tmp_path, chat_run / "model.onnx", ["v1", "v2"], "v1")
    clock = _Clock()
    holder = ModelHolder(ModelSource(reg, retry_seconds=30, clock=clock))
    real, calls = model_source.load_model, []

    def flaky(path, *args, **kwargs):
        calls.append(path)
        if len(calls) <= 2:
            raise RuntimeError("surprise")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(model_source, "load_model", flaky)
    caplog.set_level(logging.ERROR)
    _point(reg, "v2")
    assert not holder.refresh() and holder.get().version == "v1"
    assert [r.exc_info is not None for r in caplog.records] == [True]  # the traceback, once
    for _ in range(3):  # not tried again on every poll
        assert not holder.refresh()
    assert len(calls) == 1
    clock.now += 31
    assert not holder.refresh() and len(calls) == 2
    assert [r.exc_info is not None for r in caplog.records] == [True, False]  # then one line per failure
    clock.now += 31
    assert holder.refresh() and holder.get().version == "v2"


def test_a_broken_version_fixed_in_place_is_picked_up(tmp_path: Path, chat_run: Path) -> None:
    reg = _registry(tmp_path, chat_run / "model.onnx", ["v1", "v2"], "v1")
    broken = reg / "versions" / "v2" / "model.onnx"
    _halve(broken)
    holder = ModelHolder(ModelSource(reg, clock=_Clock()))  # the clock never moves: no timed retry
    _point(reg, "v2")
    assert not holder.refresh() and holder.get().version == "v1"
    _replace(broken, (chat_run / "model.onnx").read_bytes())  # same pointer, files fixed
    assert holder.refresh() and holder.get().version == "v2"


def test_after_the_startup_fallback_a_fixed_current_is_picked_up(tmp_path: Path, chat_run: Path) -> None:
    reg = _registry(tmp_path, chat_run / "model.onnx", ["v1", "v2"], "v2")
    (reg / "versions" / "v2" / "model.copyindex.npy").unlink()  # e.g. copied by hand, not finished yet
    holder = ModelHolder(ModelSource(reg, clock=_Clock()))
    assert holder.get().version == "v1"
    assert not holder.refresh()
    shutil.copy(chat_run / "model.copyindex.npy", reg / "versions" / "v2" / "model.copyindex.npy")
    assert holder.refresh() and holder.get().version == "v2"


def test_a_chat_model_is_never_served_without_its_copy_index(tmp_path: Path, chat_run: Path,
                                                             tiny_model: Path, caplog) -> None:
    bare = tmp_path / "bare" / "model.onnx"
    bare.parent.mkdir()
    shutil.copy(chat_run / "model.onnx", bare)
    with pytest.raises(ModelLoadError, match=r"model\.copyindex\.npy: missing.*mimic export CKPT OUT\.onnx --db"):
        load_model(bare)
    assert load_model(bare, require_copy_index=False).copy_index is None  # `mimic eval` builds its own
    assert load_model(tiny_model).copy_index is None  # a plain-text model has no people to copy
    reg = _registry(tmp_path, chat_run / "model.onnx", ["v1", "v2"], "v1")
    (reg / "versions" / "v2" / "model.copyindex.npy").unlink()
    holder = ModelHolder.open(reg)
    caplog.set_level(logging.ERROR)
    _point(reg, "v2")
    assert not holder.refresh() and holder.get().version == "v1"
    assert "copy index" in caplog.text


def test_a_single_file_reloads_when_its_copy_index_or_voice_memory_is_rewritten(tmp_path: Path, chat_run: Path,
                                                                                caplog) -> None:
    from engine.copyindex import build_copy_index

    path = tmp_path / "m.onnx"
    _copy_model(chat_run / "model.onnx", path)
    holder = ModelHolder.open(path)
    assert not holder.refresh() and not holder.get().copy_index.copies("a brand new message of the new model")
    build_copy_index(["a brand new message of the new model"], tmp_path / "m.copyindex.npy")
    assert holder.refresh() and holder.get().copy_index.copies("a brand new message of the new model")
    caplog.set_level(logging.WARNING)
    (tmp_path / "m.voice.npz").unlink()
    assert holder.refresh() and holder.get().voice is None
    assert "no voice memory" in caplog.text


def _history(reg: Path, *events: tuple[str, str]) -> None:
    """promotions.jsonl as export/registry.py writes it (one JSON object a line)."""
    lines = [json.dumps({"at": "2026-11-28T03:00:00+00:00", "action": a, "version": v, "previous": None,
                         "reason": "test"}) for a, v in events]
    (reg / "promotions.jsonl").write_text("\n".join([*lines[:1], "{torn", *lines[1:]]) + "\n")


def test_startup_fallback_follows_the_promotion_history_never_a_rolled_back_version(tmp_path: Path,
                                                                                    chat_run: Path) -> None:
    reg = _registry(tmp_path, chat_run / "model.onnx", ["v1", "v2", "v3"], "garbage")
    _history(reg, ("promote", "v1"), ("promote", "v3"), ("promote", "v2"), ("rollback", "v3"))
    assert model_source.fallback_versions(reg) == ["v3", "v1"]  # v2 was judged worse
    assert ModelSource(reg).load_initial().version == "v3"
    _halve(reg / "versions" / "v3" / "model.onnx")
    assert ModelSource(reg).load_initial().version == "v1"
    _copy_model(chat_run / "model.onnx", reg / "versions" / "v4" / "model.onnx")  # never promoted: after them
    assert model_source.fallback_versions(reg) == ["v3", "v1", "v4"]
    (reg / "promotions.jsonl").unlink()  # no history: newest name first, as before
    assert model_source.fallback_versions(reg) == ["v4", "v3", "v2", "v1"]


def test_an_empty_registry_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelLoadError, match="empty model registry") as caught:
        ModelSource(tmp_path / "models").load_initial()
    assert "not an .onnx model" not in str(caught.value)
