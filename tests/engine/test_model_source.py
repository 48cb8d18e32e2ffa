import logging
import os
import shutil
import threading
from pathlib import Path

import pytest

from engine.errors import ModelLoadError
from engine.impersonate import ImpersonationConfig
from engine.model_source import ModelHolder, ModelSource
from engine.service import ImpersonationService


def _registry(tmp_path: Path, model: Path, versions: list[str], current: str | None) -> Path:
    reg = tmp_path / "models"
    for v in versions:
        (reg / "versions" / v).mkdir(parents=True)
        shutil.copy(model, reg / "versions" / v / "model.onnx")
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
    shutil.copy(chat_run / "model.onnx", path)
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
