"""What every exported model carries in its ONNX metadata. No torch here, so the Darknet converter can use
it on a host without the training extra."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

FORMAT_VERSION = "1"  # the engine contract (engine/session.py SUPPORTED_FORMATS)
SPEAKER_FORMAT_VERSION = "2"  # the same plus a `speakers` input, which an engine that knows only "1" never feeds


def tool_version() -> str:
    try:
        return importlib_metadata.version("mimic")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


def model_metadata(config: Any, **facts: Any) -> dict[str, str]:
    """Everything the engine needs to serve a model without the database or the checkpoint.

    `config` is a ModelConfig or its dict. Values are strings (ONNX metadata_props); structured ones
    (speakers) are JSON; facts given as None are left out.
    """
    c = config if isinstance(config, dict) else config.to_dict()
    state_rows = 2 * c["layers"] if c["arch"] == "lstm" else c["layers"]
    meta = {
        "mimic_format": SPEAKER_FORMAT_VERSION if c.get("speaker_slots") else FORMAT_VERSION,
        "arch": c["arch"],
        "hidden": str(c["hidden"]),
        "layers": str(c["layers"]),
        "vocab": str(c.get("vocab", 256)),
        "vocabulary": "bytes",  # token i is the byte value i (UTF-8 text)
        "state_rows": str(state_rows),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "mimic_version": tool_version(),
    }
    if c.get("speaker_slots"):
        meta["speaker_slots"] = str(c["speaker_slots"])  # rows of the speaker embedding; the graph takes `speakers`
    for key, value in facts.items():
        if value is None:
            continue
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return meta
