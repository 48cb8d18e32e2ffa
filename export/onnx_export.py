"""Turn a trained checkpoint into the serving ONNX file, with metadata, and prove parity before writing it."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.errors import ExportError
from export.onnx_graph import build_onnx
from export.parity import check_parity
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.models import ModelConfig

FORMAT_VERSION = "1"


def tool_version() -> str:
    try:
        return importlib_metadata.version("mimic")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_diff: float
    metadata: dict[str, str]


def model_metadata(cfg: ModelConfig, **facts: Any) -> dict[str, str]:
    """Everything the engine needs to serve the model without the database or the checkpoint.

    Values are strings (ONNX metadata_props); structured ones (speakers) are JSON.
    """
    meta = {
        "mimic_format": FORMAT_VERSION,
        "arch": cfg.arch,
        "hidden": str(cfg.hidden),
        "layers": str(cfg.layers),
        "vocab": str(cfg.vocab),
        "vocabulary": "bytes",  # token i is the byte value i (UTF-8 text)
        "state_rows": str(cfg.state_rows),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "mimic_version": tool_version(),
    }
    for key, value in facts.items():
        if value is None:
            continue
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return meta


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def torch_reference(model: torch.nn.Module):
    """The source model as a numpy function, for the parity check."""

    @torch.no_grad()
    def run(tokens: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, new_state = model(torch.from_numpy(tokens), torch.from_numpy(state))
        return logits.numpy(), new_state.numpy()

    return run


def export_model(model: torch.nn.Module, cfg: ModelConfig, out_path: str | Path,
                 metadata: dict[str, str]) -> ExportReport:
    model = model.float().cpu().eval()
    weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    proto = build_onnx(cfg.to_dict(), weights, metadata)
    data = proto.SerializeToString()
    diff = check_parity(torch_reference(model), data, cfg.state_rows, cfg.hidden)
    out = Path(out_path)
    write_atomic(out, data)
    return ExportReport(out, diff, metadata)


def export_checkpoint(ckpt_path: str | Path, out_path: str | Path, **extra: Any) -> ExportReport:
    """`mimic export CKPT OUT.onnx`: rebuild the model from the checkpoint, export, check, write."""
    out = Path(out_path)
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"{out}: the output should end in .onnx (use --darknet for Darknet .weights)")
    ckpt = load_checkpoint(ckpt_path)
    model, cfg = model_from_checkpoint(ckpt)
    corpus = ckpt.get("corpus") or {}
    meta = model_metadata(
        cfg,
        source="mimic-checkpoint",
        train_chars=str(corpus.get("train_chars", "")) or None,
        corpus_kind=corpus.get("kind"),
        line_break=corpus.get("line_break"),
        speakers=corpus.get("speakers"),
        val_bpc=f"{ckpt['val_bpc']:.4f}" if ckpt.get("val_bpc") is not None else None,
        steps=str(ckpt.get("step", "")),
        **extra,
    )
    return export_model(model, cfg, out, meta)
