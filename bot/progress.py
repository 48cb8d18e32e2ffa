"""Progress bars on stderr, drawn from the callbacks that training/ and export/ report through."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class TrainingBar:
    """A tqdm bar for training: steps (or seconds of the budget), loss, bits/char, chars/s and time left."""

    def __init__(self, steps: int | None, time_budget: float | None, disable: bool = False):
        self.by_time = steps is None
        self.total = time_budget if self.by_time else steps
        self.disable = disable
        self.bar: tqdm | None = None  # drawn at the first step: a run refused before training draws nothing
        self.val: float | None = None

    def _draw(self) -> tqdm:
        if self.bar is None:
            # Drawn into logs too (a nightly job's stderr), but less often there than on a terminal.
            self.bar = tqdm(total=self.total, unit="s" if self.by_time else "step", file=sys.stderr,
                            dynamic_ncols=True, disable=self.disable,
                            mininterval=0.1 if sys.stderr.isatty() else 5.0,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}{postfix}]")
        return self.bar

    def __call__(self, p: Any) -> None:  # p: training.trainer.Progress
        bar = self._draw()
        if p.val_bpc is not None:
            self.val = p.val_bpc
        postfix = {"step": p.step, "loss": f"{p.loss:.3f}", "bpc": f"{p.bpc:.3f}", "chars/s": f"{p.chars_per_sec:,.0f}"}
        if self.val is not None:
            postfix["val"] = f"{self.val:.3f}"
        bar.set_postfix(postfix, refresh=False)
        target = p.elapsed if self.by_time else p.step
        if p.time_budget and not self.by_time:
            target = p.step
        bar.update(max(0.0, min(bar.total, target) - bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def counter(desc: str, unit: str, total: int | None = None, disable: bool | None = None) -> tqdm:
    """A plain counting bar (messages ingested, channels fetched, ...)."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=disable)
