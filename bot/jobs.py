"""Work that crosses rooms: train on a text or a chat store, then export the result to ONNX.

The CLI and (later) the nightly retraining job call these; training/ and export/ never see each other here
except through files (a checkpoint in, an .onnx out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainingData:
    train: bytes
    valid: bytes | None  # None: the trainer holds out the end of `train`
    info: dict[str, Any]  # goes into the checkpoint and the ONNX metadata


def text_file_data(path: str | Path) -> TrainingData:
    from training.textdata import read_text_file

    data = read_text_file(path)
    return TrainingData(data, None, {"kind": "text", "source": Path(path).name})


def chat_store_data(db_path: str | Path, valid_fraction: float = 0.05, channels: list[str] | None = None) -> TrainingData:
    """The speaker-tagged corpus of a message store, held out by time (the most recent messages)."""
    from training.corpus import LINE_BREAK, build_corpus

    corpus = build_corpus(db_path, valid_fraction=valid_fraction, channels=channels)
    train, valid = corpus.train_text.encode("utf-8"), corpus.valid_text.encode("utf-8")
    info = {"kind": "chat", "line_break": LINE_BREAK, "speakers": corpus.speakers,
            "train_messages": corpus.train_messages, "valid_messages": corpus.valid_messages}
    return TrainingData(train, valid or None, info)


def train_and_export(data: TrainingData, model_cfg: Any, train_cfg: Any, out_dir: str | Path, *,
                     resume: str | Path | None = None, init_from: str | Path | None = None,
                     export: bool = True, on_progress: Callable | None = None) -> tuple[Any, Path | None]:
    """Train, then write out_dir/model.onnx (parity-checked). Returns (TrainResult, onnx path or None)."""
    from export.onnx_export import export_checkpoint
    from training.trainer import train

    info = dict(data.info)
    if data.valid is None:
        info.setdefault("train_chars", int(len(data.train) * (1 - train_cfg.valid_fraction)))
    else:
        info.setdefault("train_chars", len(data.train))
    result = train(data.train, model_cfg, train_cfg, out_dir, valid_text=data.valid, resume=resume,
                   init_from=init_from, corpus_info=info, on_progress=on_progress)
    if result.interrupted or not export or result.step == 0 or not result.is_main:
        return result, None
    report = export_checkpoint(result.checkpoint, Path(out_dir) / "model.onnx")
    return result, report.path
