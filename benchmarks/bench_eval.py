"""The README's evaluation table, end to end on the Shakespeare corpus: ingest, train, evaluate.

    python benchmarks/bench_eval.py [--work /tmp/shk] [--budget 600] [--samples 30] [--reuse] [-- EVAL ARGS...]

Runs exactly what a user would type, through the real CLI (`python -m bot.cli`, the `mimic` entry point):

    mimic ingest ../shared/corpora/shakespeare/slack-export.zip --db WORK/mimic.db
    mimic train --db WORK/mimic.db --time-budget BUDGET --out WORK/run          (the default recipe)
    mimic eval WORK/run/model.onnx --db WORK/mimic.db --samples M --json WORK/eval.json --plot WORK/run

then prints the headline rows as a Markdown table for the README. `--reuse` skips ingest and training when
WORK already holds them (training is the expensive part: BUDGET seconds of CPU). Skips cleanly, exit 0,
when the shared corpus is not there (it is not shipped with Mimic). Not a test: the figures depend on the
machine, since a time budget trains further on a faster one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ROOT.parent / "shared" / "corpora" / "shakespeare" / "slack-export.zip"
ROWS = [("mimic", "Mimic (char-RNN + voice memory), copy guard off"),
        ("mimic_guarded", "Mimic (char-RNN + voice memory), copy guard on: posted"),
        ("mimic_alone", "Mimic char-RNN alone, copy guard on"), ("markov", "markovify, raw"), ("markov_tested", "markovify, its overlap test"),
        ("real", "real held-out messages (ceiling)")]


def mimic(*args: str) -> float:
    t = time.monotonic()
    print("$ mimic " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=ROOT, check=True)
    return time.monotonic() - t


def markdown(report: dict) -> str:
    cls, systems = report["classifier"], report["systems"]
    lines = ["| generator | fidelity | fidelity on new messages (how many) | copies >= 40 chars | mean longest copied span "
             "| whole-message copies | messages |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in ROWS:
        if key not in systems:  # the model alone is scored only next to the voice memory
            continue
        s = systems[key]
        made = f"{s['messages']:,}" if key == "real" else f"{s['messages']}/{s['asked']}"

        def f(x: float | None, pct: bool = False) -> str:
            return "-" if x is None else (f"{x:.1%}" if pct else f"{x:.2f}")

        lines.append(f"| {label} | {f(s['fidelity'])} | {f(s['fidelity_novel'])} ({s['new_messages']}) | {f(s['copy_rate'], True)} | "
                     f"{s['mean_longest_span']:.1f} | {f(s['exact_copy_rate'], True)} | {made} |")
    lines.append(f"| chance (1/{len(cls['speakers'])}) | {cls['chance']:.2f} | | | | | |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/shk", help="working directory (store, run, report)")
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds (mimic train's default: 600)")
    ap.add_argument("--samples", type=int, default=30, help="messages generated per speaker")
    ap.add_argument("--reuse", action="store_true", help="keep an existing WORK/mimic.db and WORK/run/model.onnx")
    ap.add_argument("eval_args", nargs="*", help="more `mimic eval` options, after --")
    args = ap.parse_args()
    if not EXPORT.is_file():
        print(f"skipped: {EXPORT} not found (the shared Shakespeare corpus is needed)")
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    db, run, out = work / "mimic.db", work / "run", work / "eval.json"
    spent = {}
    if not (args.reuse and db.is_file()):
        db.unlink(missing_ok=True)
        spent["ingest"] = mimic("ingest", str(EXPORT), "--db", str(db))
    if not (args.reuse and (run / "model.onnx").is_file()):
        shutil.rmtree(run, ignore_errors=True)  # a new run: `mimic train` will not write over an older one
        spent["train"] = mimic("train", "--db", str(db), "--time-budget", str(args.budget), "--out", str(run))
    spent["eval"] = mimic("eval", str(run / "model.onnx"), "--db", str(db), "--samples", str(args.samples),
                          "--json", str(out), "--plot", str(run), *args.eval_args)
    report = json.loads(out.read_text())
    info, held = report["model_info"], report["held_out"]
    print()
    print(f"model: {info.get('arch')}, hidden {info.get('hidden')}, {info.get('layers')} layer(s); held-out "
          f"{held['messages']:,} messages, {held['bits_per_char']:.3f} bits/char; {len(report['classifier']['speakers'])} "
          f"speakers x {args.samples} messages; seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in spent.items()))
    print(markdown(report))
    for key, t in report["target"].items():
        print(f"target ({key}): " + ", ".join(f"{k} {v}" for k, v in t.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
