"""The training curve of a run directory as a PNG: bits per character over steps, training and held-out.

Reads RUN_DIR/history.json (written by the trainer beside its checkpoint: `{"history": [{"step", "loss",
"val_bpc"?}, ...], "chars_per_step": N, "model_config": {...}}`, loss in nats per character), so plotting
needs neither torch nor the checkpoint. matplotlib draws off-screen (Agg).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bot.errors import UsageError

HISTORY = "history.json"
DEFAULT_NAME = "training-curve.png"


def read_history(run_dir: str | Path) -> dict[str, Any]:
    run = Path(run_dir)
    path = run / HISTORY if run.is_dir() else run
    if not path.is_file():
        raise UsageError(f"{run}: no {HISTORY} here; is this a `mimic train` run directory?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        history = data["history"]
        points = [(int(h["step"]), float(h["loss"]), h.get("val_bpc")) for h in history]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a training history ({exc.__class__.__name__}: {exc})") from exc
    if not points:
        raise UsageError(f"{path}: the run has no training steps yet")
    return {"points": points, "chars_per_step": data.get("chars_per_step"), "model": data.get("model_config") or {}}


def _smooth(values: list[float], width: int) -> list[float]:
    """Trailing moving average: per-step losses are noisy."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out


def plot_training_curve(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the curve PNG (default RUN_DIR/training-curve.png); returns its path."""
    from bot.evaluation import require

    require("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = read_history(run_dir)
    steps = [p[0] for p in h["points"]]
    train = [p[1] / math.log(2.0) for p in h["points"]]
    held = [(p[0], float(p[2])) for p in h["points"] if p[2] is not None]
    target = Path(out) if out else (Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent) / DEFAULT_NAME
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        ax.plot(steps, train, color="#9ecae1", linewidth=0.8, label="training (per step)")
        width = max(1, len(train) // 50)
        if width > 1:
            ax.plot(steps, _smooth(train, width), color="#3182bd", linewidth=1.6,
                    label=f"training ({width}-step average)")
        if held:
            ax.plot([s for s, _ in held], [v for _, v in held], "o-", color="#e6550d", markersize=3,
                    linewidth=1.4, label="held-out")
        m = h["model"]
        title = "Mimic training curve"
        if m:
            title += f": {m.get('arch', '?')}, hidden {m.get('hidden', '?')}, {m.get('layers', '?')} layer(s)"
        ax.set_title(title)
        ax.set_xlabel("step" + (f" ({h['chars_per_step']:,} chars per step)" if h["chars_per_step"] else ""))
        ax.set_ylabel("bits per character")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, format="png")
    finally:
        plt.close(fig)
    return target
