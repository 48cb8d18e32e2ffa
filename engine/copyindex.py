"""A verbatim-copy index over the training messages, built once at export time, checked per generated message.

Rule enforced: a generated message must not share 40 or more consecutive characters with any training
message, nor equal one, whitespace aside: both sides are compared with every run of blank space (line breaks
included) made one space, since a line break where the original had a space is layout, not novelty (the
evaluation's novelty figures, bot/eval_novelty.py, count copies the same way). Scanning millions of messages
per request is out of the question, so:

* Every window of WINDOW = 33 characters that starts at a corpus position divisible by STRIDE = 8 is hashed
  (64-bit polynomial hash of the code points). Any span of 40 characters inside a training message contains
  such a window, so checking every 33-character window of a generated message catches every 40-character
  copy. (A hit means at least 33 shared characters: the check errs on the side of resampling.)
* The hash of each whole message (after normalisation) catches exact copies of short messages.

The index is one .npy file of uint64: [MAGIC, n_windows, n_messages, sorted window hashes..., sorted message
hashes...], so a million-message corpus costs a binary search per window. Indexes written before whitespace
was normalised start with n_windows instead of MAGIC; they are still read, and checked against the text as it
is.

The index is read into memory at load, not memory-mapped: a map dies with SIGBUS (the whole bot, nothing
logged) when the file under it is truncated or rewritten in place (`cp new.npy model.copyindex.npy`), and the
index is small next to the model's other state (8 bytes a window: about 2 MB for 20,000 messages, tens of MB
for a million; reading 80 MB takes a fraction of a second, once per load).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from engine.errors import ModelLoadError, damage

WINDOW = 33
STRIDE = 8
COPY_SPAN = WINDOW + STRIDE - 1  # 40: every shared span this long is caught
_P = np.uint64(0x100000001B3)  # FNV prime: odd, so powers never collapse to zero mod 2**64
_POWERS = _P ** np.arange(WINDOW - 1, -1, -1, dtype=np.uint64)  # wraps mod 2**64, as intended
_SEP = 0  # code point that never occurs in normalised text: separates messages
MAGIC = 0x4D494D4943505932  # "MIMICPY2": the index of whitespace-normalised text


def normalize_space(text: str) -> str:
    """Every run of blank space (line breaks included) as one space, none at the ends; NUL counts as blank."""
    return " ".join(text.replace("\0", " ").split())


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the polynomial hash over all 64 bits."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def window_hashes(cp: np.ndarray, stride: int = 1) -> np.ndarray:
    """Hashes of the WINDOW-long windows of code points `cp` starting every `stride` positions."""
    if len(cp) < WINDOW:
        return np.empty(0, dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(cp, WINDOW)[::stride]  # (n, WINDOW)
    with np.errstate(over="ignore"):
        return _mix((windows * _POWERS).sum(axis=1, dtype=np.uint64))


def message_hash(text: str) -> np.uint64:
    cp = _codepoints(text)
    with np.errstate(over="ignore"):
        powers = _P ** np.arange(len(cp), dtype=np.uint64)
        return _mix(np.array([(cp * powers).sum(dtype=np.uint64) ^ np.uint64(len(cp))], dtype=np.uint64))[0]


def build_copy_index(texts: Iterable[str], path: str | Path, chunk_chars: int = 1_000_000) -> int:
    """Write the index for `texts` (the training messages) to `path`; returns the number of messages."""
    window_parts: list[np.ndarray] = []
    message_parts: list[np.uint64] = []
    buffer: list[np.ndarray] = []
    size = 0

    def flush() -> None:
        nonlocal buffer, size
        if not buffer:
            return
        cp = np.concatenate(buffer)
        # Only windows wholly inside one message: no separator among their WINDOW code points.
        seps = np.concatenate([[0], np.cumsum(cp == _SEP)])
        starts = np.arange(0, max(0, len(cp) - WINDOW + 1), STRIDE)
        inside = seps[starts + WINDOW] - seps[starts] == 0
        window_parts.append(window_hashes(cp, STRIDE)[inside])
        buffer, size = [], 0

    for text in texts:
        text = normalize_space(text)
        message_parts.append(message_hash(text))
        cp = _codepoints(text)
        # Chunks end on message boundaries, so the stride is relative to each chunk: still one window
        # in every 40-character span of every message, which is all the guarantee needs.
        buffer.append(np.append(cp, np.uint64(_SEP)))
        size += len(cp) + 1
        if size >= chunk_chars:
            flush()
    flush()
    windows = np.unique(np.concatenate(window_parts)) if window_parts else np.empty(0, np.uint64)
    messages = np.unique(np.array(message_parts, dtype=np.uint64))
    header = np.array([MAGIC, len(windows), len(messages)], dtype=np.uint64)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, np.concatenate([header, windows, messages]))
    tmp.replace(path)
    return len(message_parts)


class CopyIndex:
    """The loaded index; `copies(text)` says whether a generated message repeats a training one."""

    def __init__(self, path: str | Path):
        data = _read(path)
        self.normalised = len(data) > 0 and int(data[0]) == MAGIC
        start = 1 if self.normalised else 0
        n_windows, n_messages = (int(data[start]), int(data[start + 1])) if len(data) >= start + 2 else (-1, -1)
        if start + 2 + n_windows + n_messages != len(data):  # a truncated or foreign file
            raise ModelLoadError(f"{path}: not a copy index written by Mimic (its sizes do not add up); "
                                 "rebuild it with `mimic export CKPT OUT.onnx --db PATH`")
        self.windows = data[start + 2:start + 2 + n_windows]
        self.messages = data[start + 2 + n_windows:]

    @staticmethod
    def _contains(sorted_hashes: np.ndarray, values: np.ndarray) -> np.ndarray:
        if len(sorted_hashes) == 0 or len(values) == 0:
            return np.zeros(len(values), dtype=bool)
        pos = np.searchsorted(sorted_hashes, values)
        pos = np.minimum(pos, len(sorted_hashes) - 1)
        return np.asarray(sorted_hashes[pos]) == values

    def copies(self, text: str) -> bool:
        if self.normalised:
            text = normalize_space(text)
        if self._contains(self.messages, np.array([message_hash(text)], dtype=np.uint64))[0]:
            return True
        return bool(self._contains(self.windows, window_hashes(_codepoints(text))).any())

    def __len__(self) -> int:
        return len(self.messages)


def _read(path: str | Path) -> np.ndarray:
    """The whole file as uint64, in memory (see the module docstring for why not mapped). Any failure to parse
    it is a damaged file: numpy raises ValueError, EOFError, tokenize errors and more for the same thing."""
    try:
        with open(path, "rb") as f:
            data = np.load(f, allow_pickle=False)
    except Exception as exc:  # every way a damaged .npy fails to parse means the same thing
        raise ModelLoadError(f"{path}: unreadable copy index ({damage(exc)}); rebuild it with "
                             "`mimic export CKPT OUT.onnx --db PATH`") from exc
    if data.ndim != 1 or data.dtype != np.uint64:
        raise ModelLoadError(f"{path}: not a copy index written by Mimic; rebuild it with "
                             "`mimic export CKPT OUT.onnx --db PATH`")
    return data


def index_path_for(model_path: str | Path) -> Path:
    """Where the copy index of a model lives: beside it, `model.onnx` -> `model.copyindex.npy`."""
    p = Path(model_path)
    return p.with_name(p.stem + ".copyindex.npy")
