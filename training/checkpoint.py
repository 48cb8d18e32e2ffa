"""Save and load self-describing checkpoints: everything needed to rebuild the model or continue the run.

A checkpoint is a dict saved with torch.save and read back with weights_only=True (no pickled code):
    format, version, model_config, train_config, model, optimizer, schedule, step, elapsed,
    rng (torch cpu [+ cuda]), hidden (the carried state of every stream), val_bpc, history, corpus
Writes are atomic (temporary file, fsync, rename), so a crash never leaves half a checkpoint behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from training.atomic import atomic_open
from training.errors import BadCheckpointError
from training.models import ModelConfig, build_model

FORMAT = "mimic-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    with atomic_open(path) as f:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BadCheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        if _looks_like_onnx(path):  # `mimic export model.onnx out.onnx`: the files given the wrong way round
            raise BadCheckpointError(f"{path}: this is already an ONNX model (`mimic generate` and `mimic eval` "
                                     "take it as it is); give the checkpoint a training wrote, such as "
                                     "RUN/last.pt") from exc
        raise BadCheckpointError(f"{path}: not a readable Mimic checkpoint ({type(exc).__name__}); "
                                 "was it truncated or written by another program?") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise BadCheckpointError(f"{path}: not a Mimic checkpoint")
    if ckpt.get("version", 0) > VERSION:
        raise BadCheckpointError(f"{path}: written by a newer Mimic (checkpoint version {ckpt['version']})")
    return ckpt


# An ONNX ModelProto starts with field 1 (ir_version, a small varint), then another field of the model:
# producer_name/version, domain, model_version, doc_string, graph, opset_import or metadata_props.
_ONNX_SECOND_FIELDS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}


def _looks_like_onnx(path: Path) -> bool:
    """By name or by its first bytes, without parsing it (training/ does not need the onnx package)."""
    if path.suffix.lower() == ".onnx":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(3)
    except OSError:
        return False
    return len(head) == 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] in _ONNX_SECOND_FIELDS


def model_from_checkpoint(ckpt: dict[str, Any]) -> tuple[torch.nn.Module, ModelConfig]:
    """Rebuild the model a checkpoint describes, in eval mode, on the CPU."""
    try:
        cfg = ModelConfig.from_dict(ckpt["model_config"])
        model = build_model(cfg)
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise BadCheckpointError(f"the checkpoint does not describe a model this Mimic can build: {exc}") from exc
    return model.eval(), cfg
