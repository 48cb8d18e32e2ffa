"""Warm-start fine-tuning vs training from scratch, the choice the nightly retraining job makes.

    python benchmarks/bench_warmstart.py [--budget 600] [--base-budget SECONDS] [--hidden 256] [--threads N]

Shakespeare's plays as a team's chat (../shared/corpora/shakespeare/transcript.txt, one play per "day", in the
corpus format `speaker: text`): the "current model" is trained on every play but the last for --base-budget
seconds (default: the same as --budget, i.e. one earlier night's worth). Then the last play arrives as the new day; its most recent --holdout part is the held-out slice. Both
contenders train for --budget seconds on everything else (the old plays plus the start of the new one):
  warm     starts from the current model's weights (the nightly default, learning rate --warm-lr)
  scratch  starts from random weights (learning rate --lr)
Held-out bits/char is measured every --eval-every steps. Printed: each one's final bits/char, the seconds the
warm start needs to reach the from-scratch final quality, and their ratio (the fraction of the nightly budget
a warm start needs). The base model's training is not counted: it is the sunk cost of earlier nights.
Not a test: timings depend on the machine. Skips cleanly without the shared corpus.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_TRANSCRIPT = ROOT.parent / "shared" / "corpora" / "shakespeare" / "transcript.txt"
LINE_BREAK = "\x1e"  # training/corpus.py's stand-in for a line break inside a message


def read_days(path: Path) -> list[tuple[str, list[str]]]:
    """[(play, [records])]: the transcript's channels as corpus records `speaker: text\\n`, in order."""
    days: list[tuple[str, list[str]]] = []
    speaker, lines = None, []

    def flush() -> None:
        if speaker is not None and days:
            days[-1][1].append(f"{speaker}: {LINE_BREAK.join(lines)}\n")

    for raw in path.read_text(encoding="utf-8").split("\n"):
        if raw.startswith("# "):
            flush()
            speaker, lines = None, []
            days.append((raw[2:].split(" ", 1)[0], []))
        elif raw.startswith("    ") and speaker is not None:
            lines.append(raw[4:])
        elif ": " in raw and not raw.startswith(" "):
            flush()
            speaker, _, text = raw.partition(": ")
            lines = [text]
    flush()
    return days


def curve(text: bytes, valid: bytes, model_cfg, cfg, out: Path, init_from: Path | None = None):
    """Train and return (result, [(seconds, held-out bits/char)]) from the periodic evaluations."""
    from training.trainer import train

    points: list[tuple[float, float]] = []

    def progress(p) -> None:
        if p.val_bpc is not None:
            points.append((p.elapsed, p.val_bpc))

    result = train(text, model_cfg, cfg, out, valid_text=valid, init_from=init_from, on_progress=progress)
    points.append((result.elapsed, result.val_bpc))
    return result, points


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transcript", default=str(DEFAULT_TRANSCRIPT))
    ap.add_argument("--base-budget", type=float, default=None, help="seconds for the current model (default --budget)")
    ap.add_argument("--budget", type=float, default=600.0, help="seconds per contender ([retrain] time_budget)")
    ap.add_argument("--holdout", type=float, default=0.3, help="held-out end of the new day (default 0.3)")
    ap.add_argument("--arch", default="gru")
    ap.add_argument("--hidden", type=int, default=256, help="default: Mimic's default size")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warm-lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--eval-every", type=int, default=50, help="steps between held-out evaluations")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    path = Path(args.transcript)
    if not path.is_file():
        print(f"skipped: {path} not found (the shared Shakespeare corpus is needed)")
        return 0
    from training.models import ModelConfig
    from training.trainer import TrainConfig, evaluate_bpc  # noqa: F401 - fail early without torch

    base_budget = args.base_budget or args.budget
    days = read_days(path)
    (old_days, (new_name, new_day)) = days[:-1], days[-1]
    cut = int(len(new_day) * (1 - args.holdout))
    old = "".join(r for _, recs in old_days for r in recs).encode()
    train_text = old + "".join(new_day[:cut]).encode()
    valid = "".join(new_day[cut:]).encode()
    model_cfg = ModelConfig(arch=args.arch, hidden=args.hidden)

    def cfg(budget: float, lr: float) -> TrainConfig:
        return TrainConfig(time_budget=budget, batch_size=args.batch_size, seq_len=args.seq_len, lr=lr,
                           eval_every=args.eval_every, eval_chars=len(valid), checkpoint_every=0,
                           threads=args.threads, device=args.device)

    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, threads {args.threads or 'default'}, device {args.device}")
    print(f"# {len(old_days)} old days ({len(old):,} bytes); new day {new_name}: {cut} messages trained on, "
          f"{len(new_day) - cut} held out ({len(valid):,} bytes); {args.arch} hidden {args.hidden}")
    with tempfile.TemporaryDirectory() as tmp:
        base, _ = curve(old, valid, model_cfg, cfg(base_budget, args.lr), Path(tmp) / "base")
        print(f"current model: {base.step} steps in {base.elapsed:.0f} s on {base.device}; "
              f"{base.val_bpc:.3f} bits/char on the new day's held-out slice before retraining", flush=True)
        scratch, scratch_curve = curve(train_text, valid, model_cfg, cfg(args.budget, args.lr), Path(tmp) / "scratch")
        warm, warm_curve = curve(train_text, valid, model_cfg, cfg(args.budget, args.warm_lr), Path(tmp) / "warm",
                                 init_from=base.checkpoint)
    target = scratch.val_bpc
    reach = next((t for t, bpc in [(0.0, base.val_bpc), *warm_curve] if bpc <= target), None)
    print("| start | budget s | steps | held-out bits/char at the end |")
    print("|---|---|---|---|")
    print(f"| from scratch (lr {args.lr}) | {args.budget:.0f} | {scratch.step} | {scratch.val_bpc:.3f} |")
    print(f"| warm start (lr {args.warm_lr}) | {args.budget:.0f} | {warm.step} | {warm.val_bpc:.3f} |")
    print("warm-start curve (s, bits/char): " + ", ".join(f"({t:.0f}, {b:.3f})" for t, b in warm_curve))
    print("from-scratch curve (s, bits/char): " + ", ".join(f"({t:.0f}, {b:.3f})" for t, b in scratch_curve))
    print(f"the new day moved the warm start from {base.val_bpc:.3f} to {warm.val_bpc:.3f} bits/char")
    if reach is None:
        print(f"the warm start did not reach the from-scratch quality ({target:.3f}) within {args.budget:.0f} s")
    elif reach == 0.0:
        print(f"the current model was already better than {args.budget:.0f} s from scratch ({target:.3f}) before "
              "fine-tuning: ratio 0 (warm start needs no time to match a from-scratch run)")
    else:
        print(f"warm start reached the from-scratch quality ({target:.3f} bits/char) after {reach:.1f} s: "
              f"ratio {reach / args.budget:.3f} of the from-scratch time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
