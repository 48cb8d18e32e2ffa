"""Prove an ONNX graph computes what its source model computes, before anyone is allowed to serve it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from export.errors import ParityError

TOLERANCE = 1e-4
# A trained recurrent net amplifies float32 rounding over a long prompt: two correct float32 programs that sum in
# a different order drift apart by more than TOLERANCE (seen: 5e-4 on the logits of a 2 x 768 GRU over 64
# bytes). Given the source in float64, the check allows ONNX this many times the source's own float32 error.
ROUNDING_FACTOR = 3.0
# Shapes checked: a prompt (many bytes at once, several sequences) and a single generation step.
SHAPES = ((2, 64), (3, 1))

# reference(tokens, state, speakers or None) -> (logits, state)
Reference = Callable[[np.ndarray, np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


def check_parity(reference: Reference, onnx_bytes: bytes, state_rows: int, hidden: int,
                 tolerance: float = TOLERANCE, seed: int = 0, speaker_slots: int = 0,
                 exact: Reference | None = None) -> float:
    """Run `reference(tokens, state, speakers) -> (logits, state)` and ONNX Runtime on the same random input;
    a model with speaker slots also gets random slots (speakers is None for one without).

    `exact`, the same source computed in float64, measures how far float32 rounding alone moves the source;
    the logits may then differ by the larger of `tolerance` and ROUNDING_FACTOR times that, the state by the
    larger of 10 x `tolerance` and ROUNDING_FACTOR times the state's own float32 error.
    Returns the largest absolute difference on logits; raises ParityError when it exceeds the allowance.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch, time in SHAPES:
        tokens = rng.integers(0, 256, size=(batch, time), dtype=np.int64)
        state = (rng.standard_normal((state_rows, batch, hidden)) * 0.5).astype(np.float32)
        feed = {"tokens": tokens, "state_in": state}
        speakers = None
        if speaker_slots:
            speakers = feed["speakers"] = rng.integers(0, speaker_slots, size=(batch, time), dtype=np.int64)
        want_logits, want_state = reference(tokens, state, speakers)
        got_logits, got_state = session.run(["logits", "state_out"], feed)
        if got_logits.shape != want_logits.shape or got_state.shape != want_state.shape:
            raise ParityError(f"ONNX output shapes {got_logits.shape}/{got_state.shape} differ from the "
                              f"source's {want_logits.shape}/{want_state.shape}")
        allowed, allowed_state, because = tolerance, tolerance * 10, ""
        if exact is not None:
            exact_logits, exact_state = exact(tokens, state, speakers)
            noise = float(np.max(np.abs(want_logits - exact_logits)))
            state_noise = float(np.max(np.abs(want_state - exact_state)))
            allowed = max(allowed, ROUNDING_FACTOR * noise)
            allowed_state = max(allowed_state, ROUNDING_FACTOR * state_noise)
            because = f", the source's own float32 rounding moves its logits by {noise:.3g}"
        diff = float(np.max(np.abs(got_logits - want_logits)))
        state_diff = float(np.max(np.abs(got_state - want_state)))
        if not (diff <= allowed and state_diff <= allowed_state):  # also catches NaN
            raise ParityError(
                f"export rejected: ONNX Runtime and the source model disagree on shape (batch={batch}, "
                f"time={time}): max |logits diff| {diff:.3g}, max |state diff| {state_diff:.3g} "
                f"(allowed {allowed:.3g} and {allowed_state:.3g}{because}); the model was not written")
        worst = max(worst, diff)
    return worst
