"""Training benchmark: chars/s and held-out bits/char reached in a fixed time budget, per architecture.

    python benchmarks/bench_train.py [--text PATH] [--budget 600] [--params 1.8e6] [--archs gru,lstm,darknet-rnn]

Each architecture is sized to about the same parameter count and trained for the same wall-clock budget on
the same text (default ../shared/corpora/shakespeare/plays.txt), one after the other in this process, with
the same thread count. Prints one table row per run. Not a test: timings depend on the machine.
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

from training.models import ModelConfig, build_model, count_parameters  # noqa: E402
from training.trainer import TrainConfig, train  # noqa: E402

DEFAULT_TEXT = ROOT.parent / "shared" / "corpora" / "shakespeare" / "plays.txt"


def sized(arch: str, params: float, layers: int, batch_norm: bool = True) -> ModelConfig:
    """The largest hidden size (multiple of 16) whose model has at most `params` parameters."""
    best = ModelConfig(arch=arch, hidden=16, layers=layers, batch_norm=batch_norm)
    for hidden in range(16, 4097, 16):
        cfg = ModelConfig(arch=arch, hidden=hidden, layers=layers, batch_norm=batch_norm)
        if count_parameters(build_model(cfg)) > params:
            break
        best = cfg
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", default=str(DEFAULT_TEXT))
    ap.add_argument("--budget", type=float, default=600.0, help="seconds per architecture")
    ap.add_argument("--params", type=float, default=1.8e6)
    ap.add_argument("--archs", default="gru,lstm,darknet-rnn")
    ap.add_argument("--layers", default="1,1,3", help="layers per arch, in the order of --archs")
    ap.add_argument("--hidden", default=None, help="hidden size per arch instead of sizing by --params")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    text_path = Path(args.text)
    if not text_path.is_file():
        print(f"skipped: {text_path} not found (the shared Shakespeare corpus is needed)")
        return 0
    text = text_path.read_bytes()
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; text {text_path.name} {len(text):,} bytes; budget {args.budget:.0f} s")
    print("| arch | layers | hidden | params | threads | batch x seq | steps | chars/s | held-out bits/char |")
    print("|---|---|---|---|---|---|---|---|---|")
    archs, layers_list = args.archs.split(","), [int(x) for x in args.layers.split(",")]
    hiddens = [int(x) for x in args.hidden.split(",")] if args.hidden else [None] * len(archs)
    for arch, layers, hidden in zip(archs, layers_list, hiddens, strict=True):
        cfg = ModelConfig(arch=arch, hidden=hidden, layers=layers) if hidden else sized(arch, args.params, layers)
        tcfg = TrainConfig(time_budget=args.budget, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                           eval_every=0, checkpoint_every=0, threads=args.threads, device=args.device)
        with tempfile.TemporaryDirectory() as tmp:
            r = train(text, cfg, tcfg, tmp)
        threads = args.threads or "default"
        print(f"| {arch} | {layers} | {cfg.hidden} | {r.parameters:,} | {threads} | {args.batch_size}x{args.seq_len} "
              f"| {r.step} | {r.chars_per_sec:,.0f} | {r.val_bpc:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
