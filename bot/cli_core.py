"""`mimic train`, `mimic export`, `mimic generate`, `mimic eval`: the Darknet `rnn train`/`rnn generate` verbs.

Darknet's single-dash flags (`-len`, `-seed`, `-srand`, `-temp`, `-file`) are accepted as written in its docs,
next to the double-dash spellings.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from bot.errors import UsageError

DARKNET_SEED = "\n\n"  # examples/rnn.c's default -seed
MIMIC_SEED = "\n"  # a record boundary: where a Mimic model's text starts

log = logging.getLogger("bot.eval")


def _train_args(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("what to train on (one of)")
    src.add_argument("file", nargs="?", help="a text file (like Darknet's -file)")
    src.add_argument("-file", "--file", dest="file_flag", metavar="FILE", help="same, Darknet's spelling")
    src.add_argument("--db", metavar="PATH", nargs="?", const="", help="a Mimic message store: train on its "
                     "speaker-tagged corpus (--db alone: [storage] of the config, else data/mimic.db)")
    src.add_argument("--config", metavar="PATH", help="a config.toml for --db alone (default: $MIMIC_CONFIG, else "
                     "built-in defaults)")
    m = p.add_argument_group("model")
    m.add_argument("--arch", help="gru (default), lstm or darknet-rnn")
    m.add_argument("--hidden", type=int, help="hidden size (default 256: see the README's benchmark)")
    m.add_argument("--layers", type=int, default=None,
                   help="recurrent layers (default 1), or Darknet [rnn] modules for darknet-rnn (default 3)")
    m.add_argument("--dropout", type=float, help="dropout between layers (default 0)")
    m.add_argument("--no-batch-norm", action="store_true", default=None, help="darknet-rnn without batch normalisation")
    m.add_argument("--speaker-slots", type=int, metavar="N",
                   help="gru/lstm on --db: rows of the learned speaker embedding, one per person plus row 0 for "
                        "nobody (default 1024 with --db, 0 = unconditioned for a text file or darknet-rnn)")
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=int, help="train this many steps (with --resume: this many more)")
    t.add_argument("--time-budget", type=float, metavar="SECONDS", help="train for this long (default 600 s "
                   "when neither --steps nor --time-budget is given; with --resume: this much longer, and without "
                   "either a resumed run finishes what it was planned to)")
    t.add_argument("--batch-size", type=int, help="parallel streams of the text (default 32)")
    t.add_argument("--seq-len", type=int, help="BPTT window in bytes (default 128)")
    t.add_argument("--lr", type=float, help="peak learning rate (default 0.003)")
    t.add_argument("--valid-fraction", type=float, help="held-out end of the text (default 0.05)")
    t.add_argument("--eval-every", type=int, help="steps between validations (default 200; 0: only at the end)")
    t.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500)")
    t.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    t.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="auto (default: bf16 autocast on CUDA)")
    t.add_argument("--threads", type=int, help="torch threads (default: half the cores)")
    t.add_argument("--seed", type=int, help="random seed (default 1337; a CPU run is repeatable)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<timestamp>; with --resume, the "
                   "checkpoint's)")
    p.add_argument("--resume", metavar="CKPT", help="continue a run exactly from its checkpoint (give its text "
                   "again; its model and training settings come from the checkpoint)")
    p.add_argument("--no-export", action="store_true", help="skip writing DIR/model.onnx at the end")


def run_train(args: argparse.Namespace) -> int:
    from bot import train_plan
    from bot.jobs import chat_store_data, text_digest, text_file_data, train_and_export
    from bot.progress import TrainingBar
    from training.checkpoint import load_checkpoint

    sources = [s for s in (args.file, args.file_flag, args.db) if s is not None]
    if len(sources) != 1:
        raise UsageError("give exactly one of: a text FILE, -file FILE or --db [PATH]")
    if args.db == "":  # --db alone: the store the bots serve from
        args.db = str(config_storage(args.config).database_path)
    ckpt = load_checkpoint(args.resume) if args.resume else None
    model_cfg = train_plan.model_config(args, ckpt)
    train_cfg = train_plan.train_config(args, ckpt)
    data = (chat_store_data(args.db, train_cfg.valid_fraction) if args.db
            else text_file_data(args.file or args.file_flag))
    if ckpt is not None:
        train_plan.check_same_text(args.resume, ckpt, text_digest(data))
        del ckpt  # the trainer loads it again, with its optimiser state, where it needs it
    out = train_plan.run_dir(args)
    bar = TrainingBar(train_cfg.steps, train_cfg.time_budget)
    try:
        result, onnx_path = train_and_export(data, model_cfg, train_cfg, out, resume=args.resume,
                                             export=not args.no_export, on_progress=bar)
    except BaseException:
        _remove_if_empty(out)  # a run that failed before its first checkpoint leaves no empty folder behind
        raise
    finally:
        bar.close()
    if not result.is_main:  # another rank of a torchrun job: rank 0 reports
        return 0
    held_out = "" if math.isnan(result.val_bpc) else f", held-out {result.val_bpc:.3f} bits/char"
    print(f"mimic: {result.step} steps, {result.chars_per_sec:,.0f} chars/s{held_out}; checkpoint {result.checkpoint}",
          file=sys.stderr)
    if result.interrupted:
        how, code = ("terminated", 143) if result.stop_signal == signal.SIGTERM else ("interrupted", 130)
        source = f"--db {args.db}" if args.db else str(args.file or args.file_flag)
        print(f"mimic: {how}; resume with: mimic train {source} --resume {result.checkpoint}", file=sys.stderr)
        return code
    if onnx_path:
        print(onnx_path)
    return 0


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()  # only an empty one


def run_export(args: argparse.Namespace) -> int:
    from bot import darknet_cli

    if args.darknet or darknet_cli.is_darknet_pair(args.paths):
        print(f"mimic: {darknet_cli.export(args.paths, args.darknet)}", file=sys.stderr)
        return 0
    from export.onnx_export import export_checkpoint

    if len(args.paths) != 2:
        raise UsageError("usage: mimic export CKPT OUT.onnx")
    if args.db is not None:  # a chat model as `mimic train --db` exports it: copy index and voice memory beside it
        from bot.jobs import chat_store_data, export_for_serving

        db = Path(args.db) if args.db else config_storage(args.config).database_path  # bare --db: the config's
        if not db.is_file():
            raise UsageError(f"{db}: no such message store")
        path = export_for_serving(chat_store_data(db), args.paths[0], args.paths[1])
        print(f"mimic: wrote {path}, its copy index and voice memory (from {db})", file=sys.stderr)
        return 0
    report = export_checkpoint(args.paths[0], args.paths[1])
    print(f"mimic: wrote {report.path} (parity max |diff| {report.max_abs_diff:.2g})", file=sys.stderr)
    return 0


def unescape_seed(seed: str) -> str:
    """`-seed "\\n"` as typed in a shell arrives as backslash-n: read \\n, \\t and \\\\ as their characters."""
    out, i = [], 0
    while i < len(seed):
        if seed[i] == "\\" and i + 1 < len(seed) and seed[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[seed[i + 1]])
            i += 2
        else:
            out.append(seed[i])
            i += 1
    return "".join(out)


def load_generator(paths: list[str]):
    """A Generator for an .onnx model (one path) or a Darknet CFG WEIGHTS pair (converted in memory)."""
    from bot.darknet_cli import load_session
    from engine.generate import Generator

    return Generator(load_session(paths))


def run_generate(args: argparse.Namespace) -> int:
    from bot import darknet_cli
    from engine.sampling import SamplingConfig

    SamplingConfig(args.temp, args.top_k, args.top_p)  # reject bad sampling options before loading anything
    if args.len < 0:
        raise UsageError("-len must be zero or more")
    generator = load_generator(args.model)
    if darknet_cli.is_darknet_model(generator.session):  # Darknet's semantics: cut-off, its sampler, raw bytes
        # The seed's bytes as typed (os.fsencode undoes how Python decoded them), backslashes included.
        seed_bytes = os.fsencode(DARKNET_SEED if args.seed is None else args.seed)
        darknet_cli.generate(generator.session, seed_bytes, args.len, args.temp, args.srand, args.top_k, args.top_p)
        return 0
    seed = unescape_seed(MIMIC_SEED if args.seed is None else args.seed)
    try:
        seed.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("-seed is not valid UTF-8 text") from None
    out = _utf8_stdout()
    out.write(seed)
    for piece in generator.stream(seed, args.len, args.temp, args.srand, args.top_k, args.top_p):
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()
    return 0


def _utf8_stdout() -> TextIO:
    """stdout as UTF-8 whatever the locale says: the model writes UTF-8 (and U+FFFD for a byte that is not),
    which a Latin-1 or ASCII terminal encoding would refuse halfway through a message."""
    if (sys.stdout.encoding or "").lower().replace("-", "") != "utf8" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8", errors="replace")
    return sys.stdout


def run_eval(args: argparse.Namespace) -> int:
    from bot import eval_report, evaluation

    text_path = args.text or args.file
    if args.png and not args.plot:
        raise UsageError("--png goes with --plot RUN_DIR")
    if text_path and args.db:
        raise UsageError("give one of: a text FILE, --text FILE or --db PATH (a message store)")
    if args.plot:
        from bot.plot import plot_training_curve

        print(f"mimic: wrote {plot_training_curve(args.plot, args.png)}", file=sys.stderr)
        if not (args.model or text_path or args.db):  # --plot alone only draws
            return 0
    if args.json:
        _check_writable(args.json)
    model = eval_model_file(args)
    if text_path:
        report = evaluation.evaluate_text(model, text_path)
        print(eval_report.format_text_report(report))
    else:
        cfg = evaluation.EvalConfig(samples=args.samples, min_messages=args.min_messages,
                                    max_speakers=args.max_speakers, srand=args.srand, temperature=args.temp,
                                    context=args.context, valid_fraction=args.valid_fraction, show=args.show,
                                    voice=not args.no_voice, style=not args.no_style, drafts=args.drafts)
        report = evaluation.evaluate_chat(model, args.db or config_storage(args.config).database_path, cfg)
        print(eval_report.format_chat_report(report))
    if args.json:
        eval_report.write_json(report, args.json)
    return 0


def config_storage(config: str | None) -> Any:
    """The [storage] of --config (else $MIMIC_CONFIG, else the defaults): where the bots' store and models are.
    Read only when a path was left out, so a broken config never stops a command given every path."""
    from bot.config import load_settings

    return load_settings(config, os.environ).storage


def eval_model_file(args: argparse.Namespace) -> Path:
    """The .onnx file `mimic eval` reads: MODEL, else the config's [storage] model; a registry folder (what
    `mimic retrain` writes and the bots serve) stands for its current version."""
    path = Path(args.model) if args.model else config_storage(args.config).model_path
    if not args.model and not path.exists():
        raise UsageError(f"{path}: no model here yet (the config's [storage] model); give MODEL, or train one "
                         "with `mimic retrain`")
    if not path.is_dir():
        return path  # a file, or a path the model loader reports as missing
    from export.registry import Registry

    registry = Registry.open(path)  # the registry's own reading of `current`: one line when there is none
    version = registry.current()
    if version is None:
        raise UsageError(f"{path}: no current version to evaluate ({registry.pointer_problem()}); see "
                         "`mimic models list`, or give MODEL as an .onnx file")
    model = registry.model_path(version)
    log.info("evaluating version %s, current in %s (%s)", version, path, model)
    return model


def _check_writable(path: str) -> None:
    """Fail now, not after minutes of work, when `path` cannot be written (raises OSError)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    existed = p.exists()
    with open(p, "a", encoding="utf-8"):
        pass
    if not existed:
        p.unlink()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a char-RNN on a text file or a chat store",
                       description="Train a byte-level char-RNN; writes checkpoints and DIR/model.onnx.")
    _train_args(p)
    p.set_defaults(run=run_train)

    p = sub.add_parser("export", help="convert a checkpoint or Darknet files to ONNX (parity-checked)",
                       description="CKPT OUT.onnx | CFG WEIGHTS OUT.onnx (Darknet files) | "
                                   "CKPT OUT.weights --darknet (writes OUT.weights and OUT.cfg for Darknet)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="CKPT OUT.onnx, or CFG WEIGHTS OUT.onnx")
    p.add_argument("--darknet", action="store_true", help="write a darknet-rnn checkpoint as Darknet .weights + .cfg")
    p.add_argument("--db", metavar="PATH", nargs="?", const="",
                   help="the message store a chat model was trained on: also write its copy index and voice memory, "
                        "as `mimic train --db` does (--db alone: [storage] of the config, else data/mimic.db)")
    p.add_argument("--config", metavar="PATH", help="a config.toml for --db alone (default: $MIMIC_CONFIG, else "
                                                    "built-in defaults)")
    p.set_defaults(run=run_export)

    p = sub.add_parser("generate", help="generate text from a model (Darknet's rnn generate)")
    p.add_argument("model", nargs="+", metavar="MODEL", help="an .onnx model, or a Darknet CFG WEIGHTS pair")
    p.add_argument("-len", "--len", type=int, default=1000, help="bytes to generate (default 1000)")
    p.add_argument("-seed", "--seed", default=None,
                   help='text to start from. Darknet models: its bytes as typed, default two newlines, as '
                        './darknet; Mimic models: \\n and \\t read as newline and tab, default one newline')
    p.add_argument("-srand", "--srand", type=int, default=None,
                   help="random seed, any integer, taken modulo 2^64 (Darknet models without --top-k/--top-p: "
                        "modulo 2^32, as ./darknet's unsigned srand) (default: a fresh one)")
    p.add_argument("-temp", "--temp", type=float, default=0.7, help="temperature (default 0.7)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.set_defaults(run=run_generate)

    p = sub.add_parser("eval", help="evaluate a model: bits/char, speaker fidelity, novelty, a Markov baseline",
                       description="MODEL FILE (or --text FILE): bits per character on a text. MODEL --db PATH: "
                                   "held-out bits/char overall and per speaker, speaker fidelity and novelty of "
                                   "generated messages next to a per-speaker Markov chain; without --db, the "
                                   "config's store, and without MODEL, its models. --plot RUN_DIR: the training "
                                   "curve as a PNG. Needs the eval extra: pip install 'mimic[eval]'.")
    p.add_argument("model", nargs="?", metavar="MODEL", help="an .onnx model, or a model registry folder (its "
                   "current version) (default: [storage] model of the config, else data/models)")
    p.add_argument("file", nargs="?", metavar="FILE", help="a text file")
    p.add_argument("--text", metavar="FILE", help="same as FILE")
    p.add_argument("--db", metavar="PATH", help="the message store the model was trained on (default without FILE "
                                                "or --text: [storage] of the config, else data/mimic.db)")
    p.add_argument("--config", metavar="PATH", help="a config.toml (default: $MIMIC_CONFIG, else built-in defaults)")
    p.add_argument("--json", metavar="OUT", help="also write the full report as JSON")
    p.add_argument("--samples", type=int, default=30, metavar="M", help="messages generated per speaker (default 30)")
    p.add_argument("--min-messages", type=int, default=10, metavar="N",
                   help="held-out and training messages a speaker needs to be scored (default 10)")
    p.add_argument("--max-speakers", type=int, default=20, metavar="K",
                   help="score at most the K speakers with the most held-out messages (default 20)")
    p.add_argument("-srand", "--srand", type=int, default=0, help="random seed (default 0: a repeatable run)")
    p.add_argument("-temp", "--temp", type=float, default=0.7, help="sampling temperature (default 0.7)")
    p.add_argument("--context", type=int, default=0, metavar="LINES",
                   help="prime each message with the LINES held-out messages that preceded a real one (default 0)")
    p.add_argument("--valid-fraction", type=float, default=0.05, help="the held-out split used in training (0.05)")
    p.add_argument("--show", type=int, default=3, metavar="N", help="sample messages printed per speaker (default 3)")
    p.add_argument("--no-voice", action="store_true",
                   help="generate with the model alone, without its voice memory (the bot uses the memory)")
    p.add_argument("--drafts", type=int, default=4, metavar="N",
                   help="drafts per attempt with the voice memory (default 4, as the bot writes them)")
    p.add_argument("--no-style", action="store_true",
                   help="keep the draft the voice memory explains best, not the style ranker's (the bot uses the ranker)")
    p.add_argument("--plot", metavar="RUN_DIR", help="write the training curve of a run directory as a PNG")
    p.add_argument("--png", metavar="OUT", help="where --plot writes (default RUN_DIR/training-curve.png)")
    p.set_defaults(run=run_eval)
