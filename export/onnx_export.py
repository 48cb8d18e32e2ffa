"""Turn a trained checkpoint into the serving ONNX file, with metadata, and prove parity before writing it."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.errors import ExportError
from export.metadata import model_metadata
from export.onnx_graph import build_onnx
from export.parity import check_parity
from training.atomic import write_atomic
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.models import ModelConfig


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_diff: float
    metadata: dict[str, str]


def torch_reference(model: torch.nn.Module, dtype: torch.dtype = torch.float32):
    """The source model as a numpy function, for the parity check (float64: a copy, to measure rounding)."""
    if dtype != torch.float32:
        model = copy.deepcopy(model).to(dtype)

    @torch.no_grad()
    def run(tokens: np.ndarray, state: np.ndarray, speakers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        args = (torch.from_numpy(tokens), torch.from_numpy(state).to(dtype))
        if speakers is not None:
            args += (torch.from_numpy(speakers),)
        logits, new_state = model(*args)
        return logits.numpy(), new_state.numpy()

    return run


def export_model(model: torch.nn.Module, cfg: ModelConfig, out_path: str | Path,
                 metadata: dict[str, str]) -> ExportReport:
    model = model.float().cpu().eval()
    weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    proto = build_onnx(cfg.to_dict(), weights, metadata)
    data = proto.SerializeToString()
    diff = check_parity(torch_reference(model), data, cfg.state_rows, cfg.hidden, speaker_slots=cfg.speaker_slots,
                        exact=torch_reference(model, torch.float64))
    out = Path(out_path)
    write_atomic(out, data)
    return ExportReport(out, diff, metadata)


def with_slots(speakers: dict[str, Any], slots: dict[str, int]) -> dict[str, dict[str, Any]]:
    """The corpus's speaker directory with each person's embedding slot (0: none, written for unconditioned)."""
    out = {}
    for name, info in speakers.items():
        entry = dict(info) if isinstance(info, dict) else {"messages": info}
        out[name] = {**entry, "slot": int(slots.get(name, 0))}
    return out


def export_checkpoint(ckpt_path: str | Path, out_path: str | Path, **extra: Any) -> ExportReport:
    """`mimic export CKPT OUT.onnx`: rebuild the model from the checkpoint, export, check, write."""
    out = Path(out_path)
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"{out}: the output should end in .onnx (use --darknet for Darknet .weights)")
    ckpt = load_checkpoint(ckpt_path)
    model, cfg = model_from_checkpoint(ckpt)
    corpus = ckpt.get("corpus") or {}
    speakers = corpus.get("speakers")
    if cfg.speaker_slots and speakers is not None:
        speakers = with_slots(speakers, ckpt.get("speaker_slots") or {})
    meta = model_metadata(
        cfg,
        source="mimic-checkpoint",
        train_chars=str(corpus.get("train_chars", "")) or None,
        corpus_kind=corpus.get("kind"),
        line_break=corpus.get("line_break"),
        speakers=speakers,
        val_bpc=f"{ckpt['val_bpc']:.4f}" if ckpt.get("val_bpc") is not None else None,
        steps=str(ckpt.get("step", "")),
        **extra,
    )
    return export_model(model, cfg, out, meta)
