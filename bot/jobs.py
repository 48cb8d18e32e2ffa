"""Work that crosses rooms: train on a text or a chat store, then export the result to ONNX.

The CLI and (later) the nightly retraining job call these; training/ and export/ never see each other here
except through files (a checkpoint in, an .onnx out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainingData:
    train: bytes
    valid: bytes | None  # None: the trainer holds out the end of `train`
    info: dict[str, Any]  # goes into the checkpoint and the ONNX metadata
    # The training messages one by one as (speaker, text), for the verbatim-copy index and the voice memory
    # served beside a chat model.
    messages: Callable[[], Iterable[tuple[str, str]]] | None = None
    # A chat corpus's canonical speakers, most messages first: the trainer gives them speaker slots (keeping
    # those the parent checkpoint of a warm start or resume already gave).
    speakers: tuple[str, ...] = ()


def text_file_data(path: str | Path) -> TrainingData:
    from training.textdata import read_text_file

    data = read_text_file(path)
    return TrainingData(data, None, {"kind": "text", "source": Path(path).name})


def chat_store_data(db_path: str | Path, valid_fraction: float = 0.05, channels: list[str] | None = None) -> TrainingData:
    """The speaker-tagged corpus of a message store, held out by time (the most recent messages)."""
    from training.corpus import LINE_BREAK, build_corpus, iter_training_texts

    corpus = build_corpus(db_path, valid_fraction=valid_fraction, channels=channels)
    train, valid = corpus.train_text.encode("utf-8"), corpus.valid_text.encode("utf-8")
    info = {"kind": "chat", "line_break": LINE_BREAK, "speakers": speaker_directory(db_path, corpus.speakers),
            "train_messages": corpus.train_messages, "valid_messages": corpus.valid_messages}

    def messages() -> Iterable[tuple[str, str]]:
        return iter_training_texts(db_path, valid_fraction=valid_fraction, channels=channels)

    return TrainingData(train, valid or None, info, messages, tuple(corpus.speakers))


def speaker_directory(db_path: str | Path, counts: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Speaker -> message count and the names people know them by, so the engine can look them up
    without the database (the ONNX metadata carries this)."""
    from training.store import Store

    out: dict[str, dict[str, Any]] = {}
    with Store.open(db_path, create=False) as store:
        for speaker, n in counts.items():
            user = store.find_user(speaker)
            out[speaker] = {"messages": n, "display_name": (user.display_name if user else None) or "",
                            "real_name": (user.real_name if user else None) or ""}
    return out


def text_digest(data: TrainingData) -> str:
    """A short digest of the training text, kept in the checkpoint so that a resume on another text is noticed."""
    import hashlib

    return hashlib.sha256(data.train).hexdigest()[:16]


def train_and_export(data: TrainingData, model_cfg: Any, train_cfg: Any, out_dir: str | Path, *,
                     resume: str | Path | None = None, init_from: str | Path | None = None,
                     export: bool = True, on_progress: Callable | None = None) -> tuple[Any, Path | None]:
    """Train, then write out_dir/model.onnx (parity-checked). Returns (TrainResult, onnx path or None)."""
    from training.trainer import train

    info = dict(data.info)
    info.setdefault("digest", text_digest(data))
    if data.valid is None:
        info.setdefault("train_chars", int(len(data.train) * (1 - train_cfg.valid_fraction)))
    else:
        info.setdefault("train_chars", len(data.train))
    result = train(data.train, model_cfg, train_cfg, out_dir, valid_text=data.valid, speakers=data.speakers,
                   resume=resume, init_from=init_from, corpus_info=info, on_progress=on_progress)
    if result.interrupted or not export or result.step == 0 or not result.is_main:
        return result, None
    return result, export_for_serving(data, result.checkpoint, Path(out_dir) / "model.onnx")


def export_for_serving(data: TrainingData, checkpoint: str | Path, onnx_path: str | Path) -> Path:
    """The export half of `train_and_export` on its own (parity-checked ONNX, plus the copy index and the
    voice memory for chat data), so the retraining job can tell a failed export from a failed training run.

    The model is exported (and parity-checked) beside its final name, the copy index and voice memory are
    written next, and the model is renamed into place last: a bot serving `onnx_path` reloads when any of the
    three changes, and must never pick up a new model with the old model's files beside it."""
    from export.onnx_export import export_checkpoint

    final = Path(onnx_path)
    if data.messages is None:
        return export_checkpoint(checkpoint, final).path
    from engine.copyindex import build_copy_index, index_path_for
    from engine.voice import build_voice_memory, voice_path_for

    staged = final.with_name(f".{final.stem}.exporting.onnx")
    try:
        export_checkpoint(checkpoint, staged)
        build_copy_index((text for _, text in data.messages()), index_path_for(final))
        build_voice_memory(data.messages(), voice_path_for(final), data.info["line_break"])
        staged.replace(final)
    finally:
        staged.unlink(missing_ok=True)
    return final
