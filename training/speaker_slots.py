"""Speaker slots: which row of a model's speaker embedding each person gets, and the slot of every corpus byte.

A slot table maps canonical speaker names (training/corpus.py) to rows 1..speaker_slots-1; row 0 means "no
speaker". It is made at a model's first training, saved in its checkpoint and only ever extended: a warm
start or a resume that meets new people gives them the next free rows and never renumbers anyone, so
nightly retraining keeps the embedding's shape and every known person's vector. Once the rows run out,
further people get slot 0 (the model writes for them unconditioned) and a warning is logged.

Per-byte ids of a corpus (records `name: text\\n`): the name and its ':' carry slot 0, so predicting who
speaks next never sees the answer; the space after the ':', the text and the closing newline carry the
writer's slot, so every byte of the message, the first one included, is predicted knowing who writes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np

log = logging.getLogger(__name__)

NO_SPEAKER = 0
CHAT_SPEAKER_SLOTS = 1024  # `mimic train --db` and the nightly retraining: room for 1023 people
SEPARATOR = b": "


def extend_slots(table: Mapping[str, int] | None, speakers: Iterable[str], capacity: int) -> dict[str, int]:
    """`table` plus the next free slots for the `speakers` it lacks, in the order given (most messages first,
    so the most active people get a slot when rows run short). Existing slots never change."""
    out = dict(table or {})
    if capacity < 2:
        return out
    used = set(out.values())
    free = (slot for slot in range(1, capacity) if slot not in used)
    left_out = []
    for name in speakers:
        if name in out:
            continue
        slot = next(free, None)
        if slot is None:
            left_out.append(name)
        else:
            out[name] = slot
    if left_out:
        log.warning("the model has %d speaker slots and all are taken: %d people (%s%s) are written for "
                    "unconditioned; train from scratch with more slots to give them their own (`mimic retrain "
                    "--from-scratch --speaker-slots N`, or `mimic train --db PATH --speaker-slots N`)",
                    capacity, len(left_out), ", ".join(left_out[:5]), ", ..." if len(left_out) > 5 else "")
    return out


def speaker_ids(data: bytes, table: Mapping[str, int]) -> np.ndarray:
    """(len(data),) int64: the slot of each byte of corpus records (see the module docstring).

    Records are split at b"\\n" only, never with splitlines(), which also splits at the "\\x1e" that stands
    for a line break inside a message. A line without `name: ` (a record cut by a held-out split), or whose
    name has no slot, is all slot 0.
    """
    ids = np.zeros(len(data), dtype=np.int64)
    start = 0
    for line in data.split(b"\n"):
        end = start + len(line)  # the record's "\n", if any, is data[end]
        colon = line.find(SEPARATOR)
        if colon > 0:
            slot = table.get(line[:colon].decode("utf-8", "replace"), NO_SPEAKER)
            ids[start + colon + 1:min(end + 1, len(data))] = slot  # the space, the text and the "\n"
        start = end + 1
    return ids
