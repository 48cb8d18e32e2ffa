"""Load a Mimic ONNX model with ONNX Runtime and run it: tokens and state in, logits and state out.

ONNX Runtime keeps no state between calls: the hidden state is an explicit input and output (S, B, H),
so one loaded session can serve many conversations at once. A speaker-conditioned model (format 2) also
takes `speakers` (B, T), the embedding slot of the person writing each byte; callers that give none get
zeros (nobody: unconditioned), and slots given to a model without that input are ignored.

Loading checks the file against that contract (its metadata, the graph's shapes, one test run), so a
foreign, hand-edited or swapped file fails there, in one line naming the file, never mid-generation.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from engine.errors import ModelLoadError, damage

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = {"1", "2"}  # 2: with the `speakers` input
INPUTS = {"tokens", "state_in"}
SPEAKERS = "speakers"
OUTPUTS = {"logits", "state_out"}
VOCAB = 256  # token i is byte i
# The metadata field each dimension must equal ("" for batch and time, which are free).
SHAPES = {"tokens": ("", ""), "state_in": ("state_rows", "", "hidden"), "logits": ("", "", "vocab"),
          "state_out": ("state_rows", "", "hidden")}
# What a checkpoint starts with: torch.save's zip, whose first entry is <name>/data.pkl, or (older
# torch.save) a pickle of protocol 2 to 5.
ZIP_MAGIC, TORCH_ZIP_ENTRY = b"PK\x03\x04", b"data.pkl"
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt"}


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
            # ONNX Runtime print()s an "EP Error ... Falling back" banner when a provider fails on a file; stdout
            # is the generated text's (`mimic generate > out.txt`), so that goes to stderr.
            with contextlib.redirect_stdout(sys.stderr):
                self._session = ort.InferenceSession(data, session_options(threads), providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise ModelLoadError(_not_onnx_message(name, data, exc)) from exc
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        self._check_contract(name)
        self.state_rows = _positive_int(self.metadata, "state_rows", name)
        self.hidden = _positive_int(self.metadata, "hidden", name)
        self.vocab = _positive_int(self.metadata, "vocab", name, default=VOCAB)
        self.conditioned = SPEAKERS in {i.name for i in self._session.get_inputs()}
        self.speaker_slots = int(self.metadata.get("speaker_slots", "0")) if self.conditioned else 0
        self._check_shapes(name)
        _check_darknet_facts(self.metadata, name)
        self.providers = self._session.get_providers()
        self._outputs = ["logits", "state_out"]
        self._test_run(name)

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
        slots_ok = slots.isascii() and slots.isdigit() and int(slots) > 1
        if (fmt == "2") != (SPEAKERS in inputs) or (fmt == "2" and not slots_ok):
            raise ModelLoadError(f"{name}: a Mimic model whose `{SPEAKERS}` input and speaker_slots metadata do not "
                                 f"match its format ({fmt}); re-export it with `mimic export`")

    def _check_shapes(self, name: Any) -> None:
        """The metadata against the graph's static dimensions: a hand-edited or foreign file would otherwise
        fail only at the first run, with ONNX Runtime's own message."""
        dims = {"state_rows": self.state_rows, "hidden": self.hidden, "vocab": self.vocab}
        args = {a.name: a.shape for a in (*self._session.get_inputs(), *self._session.get_outputs())}
        for tensor, fields in SHAPES.items():
            shape = args.get(tensor)
            if not isinstance(shape, list) or not shape:  # rank unknown: the test run checks it
                continue
            if len(shape) != len(fields):
                raise ModelLoadError(f"{name}: the graph's `{tensor}` has {len(shape)} dimensions, a Mimic model's "
                                     f"has {len(fields)}; re-export it with `mimic export`")
            for dim, field in zip(shape, fields, strict=True):
                if field and isinstance(dim, int) and dim != dims[field]:
                    raise ModelLoadError(f"{name}: metadata {field}={dims[field]}, but the graph's `{tensor}` "
                                         f"has {dim}; re-export it with `mimic export`")
        if self.vocab != VOCAB:  # generation maps token i to byte i
            raise ModelLoadError(f"{name}: metadata vocab={self.vocab}, but Mimic models read and write bytes "
                                 f"({VOCAB} tokens)")

    def _test_run(self, name: Any) -> None:
        """Run two bytes through the model once: a graph that cannot run as the contract says (a fixed batch,
        an embedding with fewer rows than the metadata, ...) fails now, naming the file, not mid-generation.
        One call, two sequences of two bytes: negligible next to loading."""
        tokens = np.array([[0, VOCAB - 1], [VOCAB - 1, 0]], dtype=np.int64)
        last = max(self.speaker_slots - 1, 0)
        speakers = np.array([[0, last], [last, 0]], dtype=np.int64) if self.conditioned else None
        try:
            logits, state = self.run(tokens, self.initial_state(2), speakers)
        except Exception as exc:  # onnxruntime's errors are untyped
            raise ModelLoadError(f"{name}: the model does not run in ONNX Runtime ({damage(exc)}); "
                                 "re-export it with `mimic export`") from exc
        want = ((2, 2, self.vocab), (self.state_rows, 2, self.hidden))
        if (logits.shape, state.shape) != want:
            raise ModelLoadError(f"{name}: the model returns logits {logits.shape} and state {state.shape} for a "
                                 f"test run, not {want[0]} and {want[1]}; re-export it with `mimic export`")

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


def _not_onnx_message(name: Any, data: bytes, exc: BaseException) -> str:
    """Why ONNX Runtime refused the file, with a hint when it is a training checkpoint given by mistake
    (recognised by its first bytes or its name: reading it as one would need torch, which engine/ never imports)."""
    ckpt = name if isinstance(name, Path) else "CKPT"
    run = f"run `mimic export {ckpt} OUT.onnx` first and give OUT.onnx"
    if (data.startswith(ZIP_MAGIC) and TORCH_ZIP_ENTRY in data[:512]) or data.startswith(PICKLE_MAGIC):
        return f"{name}: this looks like a Mimic checkpoint, not an ONNX model; {run}"
    message = f"{name}: not a valid ONNX model ({damage(exc)})"
    if isinstance(name, Path) and name.suffix.lower() in CHECKPOINT_SUFFIXES:
        message += f"; if it is a Mimic checkpoint, {run}"
    return message


def _positive_int(metadata: dict[str, str], field: str, name: Any, default: int | None = None) -> int:
    raw = metadata.get(field)
    if raw is None and default is not None:
        return default
    if raw is None:
        raise ModelLoadError(f"{name}: a Mimic model without `{field}` in its metadata; re-export it with "
                             "`mimic export`")
    if not (raw.isascii() and raw.isdigit() and int(raw) > 0):
        raise ModelLoadError(f"{name}: metadata {field}={raw!r} is not a positive integer; re-export it with "
                             "`mimic export`")
    return int(raw)


def _check_darknet_facts(metadata: dict[str, str], name: Any) -> None:
    """The two numbers bot/darknet_cli.py reads for a model converted from Darknet files."""
    skip = metadata.get("darknet_rand_skip")
    if skip is not None and not (skip.isascii() and skip.isdigit()):
        raise ModelLoadError(f"{name}: metadata darknet_rand_skip={skip!r} is not a whole number")
    cutoff = metadata.get("darknet_cutoff")
    if cutoff is not None:
        try:
            ok = 0.0 <= float(cutoff) < 1.0
        except ValueError:
            ok = False
        if not ok:
            raise ModelLoadError(f"{name}: metadata darknet_cutoff={cutoff!r} is not a probability in [0, 1)")
