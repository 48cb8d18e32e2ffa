"""Load a Mimic ONNX model with ONNX Runtime and run it: tokens and state in, logits and state out.

ONNX Runtime keeps no state between calls: the hidden state is an explicit input and output (S, B, H),
so one loaded session can serve many conversations at once. A speaker-conditioned model (format 2) also
takes `speakers` (B, T), the embedding slot of the person writing each byte; callers that give none get
zeros (nobody: unconditioned), and slots given to a model without that input are ignored.
"""

from __future__ import annotations

import ctypes.util
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from engine.errors import ModelLoadError

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = {"1", "2"}  # 2: with the `speakers` input
INPUTS = {"tokens", "state_in"}
SPEAKERS = "speakers"
OUTPUTS = {"logits", "state_out"}


def _cuda_usable() -> bool:
    # onnxruntime-gpu lists the CUDA provider even on machines without a GPU and then logs errors
    # at session creation; look for the driver library first so CPU-only hosts stay quiet.
    return "CUDAExecutionProvider" in ort.get_available_providers() and ctypes.util.find_library("cuda") is not None


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Options for a small recurrent model: few threads and no spinning, so an idle bot costs no CPU."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


class ModelSession:
    """One loaded model. Thread-safe for concurrent `run` calls (ONNX Runtime sessions are)."""

    def __init__(self, source: str | Path | bytes, *, device: str = "auto", threads: int = 1):
        self.path = None if isinstance(source, bytes) else Path(source)
        data = source if isinstance(source, bytes) else self._read(self.path)
        providers = ["CPUExecutionProvider"]
        if device == "cuda" or (device == "auto" and _cuda_usable()):
            providers.insert(0, "CUDAExecutionProvider")
        name = self.path or "the model"
        try:
            self._session = ort.InferenceSession(data, session_options(threads), providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise ModelLoadError(f"{name}: not a valid ONNX model ({str(exc).splitlines()[0][:200]})") from exc
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        self._check_contract(name)
        self.state_rows = int(self.metadata["state_rows"])
        self.hidden = int(self.metadata["hidden"])
        self.vocab = int(self.metadata.get("vocab", "256"))
        self.conditioned = SPEAKERS in {i.name for i in self._session.get_inputs()}
        self.speaker_slots = int(self.metadata.get("speaker_slots", "0")) if self.conditioned else 0
        self.providers = self._session.get_providers()
        self._outputs = ["logits", "state_out"]

    @staticmethod
    def _read(path: Path) -> bytes:
        if not path.exists():
            raise ModelLoadError(f"{path}: no such model file")
        if path.is_dir():
            raise ModelLoadError(f"{path}: is a directory, not an .onnx model")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"{path}: cannot read ({exc.strerror})") from exc
        if not data:
            raise ModelLoadError(f"{path}: the model file is empty")
        return data

    def _check_contract(self, name: Any) -> None:
        inputs = {i.name for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        fmt = self.metadata.get("mimic_format")
        if fmt is None or not inputs >= INPUTS or not outputs >= OUTPUTS:
            raise ModelLoadError(f"{name}: an ONNX model, but not a Mimic one (export it with `mimic export`)")
        if fmt not in SUPPORTED_FORMATS:
            raise ModelLoadError(f"{name}: Mimic model format {fmt} is newer than this engine; upgrade Mimic")
        slots = self.metadata.get("speaker_slots", "")
        if (fmt == "2") != (SPEAKERS in inputs) or (fmt == "2" and not (slots.isdigit() and int(slots) > 1)):
            raise ModelLoadError(f"{name}: a Mimic model whose `{SPEAKERS}` input and speaker_slots metadata do not "
                                 f"match its format ({fmt}); re-export it with `mimic export`")

    def initial_state(self, batch: int) -> np.ndarray:
        return np.zeros((self.state_rows, batch, self.hidden), dtype=np.float32)

    def run(self, tokens: np.ndarray, state: np.ndarray,
            speakers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """tokens (B, T) int64, state (S, B, H), speakers (B, T) slots or None -> logits (B, T, V), state (S, B, H)."""
        if tokens.dtype != np.int64:
            tokens = tokens.astype(np.int64)
        feed = {"tokens": tokens, "state_in": state}
        if self.conditioned:
            if speakers is None:
                feed[SPEAKERS] = np.zeros(tokens.shape, dtype=np.int64)
            else:
                feed[SPEAKERS] = np.where((speakers >= 0) & (speakers < self.speaker_slots), speakers, 0).astype(
                    np.int64, copy=False)
        logits, new_state = self._session.run(self._outputs, feed)
        return logits, new_state

    def meta_json(self, key: str, default: Any = None) -> Any:
        """A structured metadata value (the speaker list, ...), or `default` when absent or unreadable."""
        raw = self.metadata.get(key)
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except ValueError:
            log.warning("model metadata %r is not valid JSON; ignoring it", key)
            return default
