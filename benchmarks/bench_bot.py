"""The bot's serving path: command -> posted text latency, throughput under 50 concurrent requests, and the
cost of the verbatim-copy check against a million-message corpus. Prints figures; not a test.

    python benchmarks/bench_bot.py [--model PATH [--db PATH]] [--requests 200] [--corpus-messages 1000000]

Latency is measured through the command layer and the batching service (store lookups, speaker resolution,
generation, copy check, mention safety), everything but the network: `Commands.handle` from the moment a
command arrives until the reply text a Slack/Discord adapter would post.

Without --model, a model of the default size (a 1-layer GRU of ModelConfig's default width) is built for
timing only. Generation
cost does not depend on what a model learned, but message length does, so its weights are set by hand: the
output is uniform over printable ASCII, and one hidden unit counts steps (a GRU unit with a constant input
and update gate 0.99 climbs smoothly towards 0.9) and drives the newline logit, so every message ends after
about 200 characters. The model is served with a copy-check index of the benchmark's synthetic corpus, so
each message also pays the copy check it pays in production.

With --model and --db, a real chat model is served instead, with its own copy index and voice memory and its
own store (the five people with the most messages, primed with a channel's last 12 messages): what a team's
messages cost, at their real lengths.
"""

from __future__ import annotations

import argparse
import html
import math
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bot.capture import StoreAccess  # noqa: E402
from bot.commands import Commands, Invocation, ModelGate, impersonation_config  # noqa: E402
from bot.config import GenerationSettings, LimitSettings, Settings, StorageSettings  # noqa: E402
from bot.demo import TEAM, compose, write_demo_export  # noqa: E402
from engine.impersonate import impersonate  # noqa: E402
from engine.voice import VoiceMemory  # noqa: E402

TARGET_CHARS = 200


DEMO_PEOPLE = ["ada", "grace", "linus", "marvin", "yoda"]


def synthetic_corpus(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (speaker, message) as the store holds them (normalised): the demo team's voices, mentions as @names."""
    rng = random.Random(seed)
    talkers = [m for m in TEAM if m.weight > 0]
    handles = {m.user_id: m.handle for m in TEAM}
    mention = re.compile(r"<@([A-Z0-9]+)>")
    out = []
    for _ in range(n):
        member = rng.choice(talkers)
        out.append((member.handle, mention.sub(lambda m: "@" + handles[m.group(1)], compose(member, rng))))
    return out


def timing_model(path: Path, speakers: dict[str, int], hidden: int | None = None) -> Path:
    """A default-size GRU whose messages end after about TARGET_CHARS characters (see the module docstring)."""
    import torch

    from export.metadata import model_metadata
    from export.onnx_graph import build_onnx
    from training.atomic import write_atomic
    from training.models import ModelConfig, build_model

    hidden = hidden or ModelConfig().hidden
    cfg = ModelConfig(arch="gru", hidden=hidden)
    model = build_model(cfg).eval()
    h = hidden
    z, c = 0.99, 0.9  # counter unit: h_t = c * (1 - z**t)
    step = TARGET_CHARS + 8  # where the newline gets even odds; tuned so the median message is TARGET_CHARS
    h_end = c * (1 - z ** step)
    k = 1000.0  # steepness: the newline goes from unlikely to likely within a few characters of the target
    with torch.no_grad():
        rnn = model.rnn
        for w in (rnn.weight_ih_l0, rnn.weight_hh_l0):
            w[[0, h, 2 * h], :] = 0.0  # unit 0 ignores its input and the other units
        rnn.bias_ih_l0[[0, h, 2 * h]] = torch.tensor([0.0, math.log(z / (1 - z)), math.atanh(c)])
        rnn.bias_hh_l0[[0, h, 2 * h]] = 0.0
        # The counter restarts at every newline, so it counts from the start of the message being written,
        # whatever conversation the command layer primes with: embedding dimension 0 flags the newline
        # byte, which closes the update gate and zeroes the candidate for unit 0.
        model.embed.weight[:, 0] = 0.0
        model.embed.weight[10, 0] = 1.0
        rnn.weight_ih_l0[h, 0] = -50.0
        rnn.weight_ih_l0[2 * h, 0] = -math.atanh(c)
        model.head.weight.zero_()
        model.head.bias.fill_(-30.0)
        model.head.bias[32:127] = 0.0  # printable ASCII, uniform: one byte is one character
        model.head.weight[10, 0] = k
        model.head.bias[10] = -k * h_end + math.log(95)  # even odds of ending exactly at the target
    meta = model_metadata(cfg, corpus_kind="chat", line_break="\x1e", speakers=speakers, source="bench_bot")
    weights = {name: t.detach().numpy() for name, t in model.state_dict().items()}
    # Written without export's parity check: the steep newline logit turns float32 rounding in the state
    # (~1e-6) into logit differences above its tolerance. Timing does not care.
    write_atomic(path, build_onnx(cfg.to_dict(), weights, meta).SerializeToString())
    return path


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="an .onnx chat model (default: a default-size model built for timing)")
    ap.add_argument("--requests", type=int, default=200, help="requests for each latency measurement")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--corpus-messages", type=int, default=1_000_000, help="copy-check corpus size")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--db", type=Path, help="with --model: the model's own message store; the model is served with "
                                            "its own copy index and voice memory, as the people with most messages")
    args = ap.parse_args()

    from engine.copyindex import CopyIndex, build_copy_index, index_path_for
    from engine.voice import build_voice_memory, voice_path_for
    from training.corpus import LINE_BREAK
    from training.ingest_slack import ingest_slack_export
    from training.store import Store

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db = tmp / "mimic.db"
        with Store.open(db) as store:
            ingest_slack_export(write_demo_export(tmp / "export"), store)
            speakers = store.speaker_counts()

        print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        records = synthetic_corpus(args.corpus_messages)
        corpus = [t for _, t in records]
        index_file = tmp / "corpus.copyindex.npy"
        start = time.perf_counter()
        build_copy_index(corpus, index_file)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        index = CopyIndex(index_file)  # read into memory, as serving loads it
        load_s = time.perf_counter() - start
        rng = random.Random(1)
        novel = ["".join(rng.choice("abcdefghij klmnopqrstuvwxyz.,") for _ in range(TARGET_CHARS)) for _ in range(2000)]
        copies = [rng.choice(corpus) for _ in range(2000)]
        start = time.perf_counter()
        hits_novel = sum(index.copies(t) for t in novel)
        novel_us = (time.perf_counter() - start) / len(novel) * 1e6
        start = time.perf_counter()
        hits_copy = sum(index.copies(t) for t in copies)
        copy_us = (time.perf_counter() - start) / len(copies) * 1e6
        chars = sum(map(len, corpus))
        print(f"\n## copy check, {len(corpus):,} messages ({chars / 1e6:.0f} M characters)")
        print(f"index build: {build_s:.1f} s, {index_file.stat().st_size / 2**20:.0f} MiB, load {load_s * 1e3:.0f} ms")
        print(f"check a new {TARGET_CHARS}-char message: {novel_us:.0f} µs (false hits {hits_novel}/{len(novel)})")
        print(f"check a copied training message: {copy_us:.0f} µs (caught {hits_copy}/{len(copies)})")

        if args.model is not None and args.db is not None:
            db, model = tmp / "real.db", tmp / "real" / args.model.name
            shutil.copy(args.db, db)
            model.parent.mkdir()
            for f in args.model.parent.glob(args.model.stem + ".*"):  # the model, its copy index, its voice memory
                shutil.copy(f, model.parent / f.name)
            for voice in (False, True):
                serve(args, tmp_name, db, model, f"{args.model} with its own store", voice, *real_audience(db))
            return 0
        if args.model is None:
            model = timing_model(tmp / "model.onnx", speakers)
            what = "GRU of the default size, weights set for ~200-char messages"
        else:
            model = tmp / "model.onnx"
            model.write_bytes(args.model.read_bytes())
            what = str(args.model)
        index_path_for(model).write_bytes(index_file.read_bytes())  # serve with the big copy index
        start = time.perf_counter()
        build_voice_memory(records, voice_path_for(model), LINE_BREAK)
        voice_s = time.perf_counter() - start
        print(f"\n## voice memory, {len(records):,} messages: build {voice_s:.1f} s, "
              f"{voice_path_for(model).stat().st_size / 2**20:.0f} MiB")
        time_voice_memory(VoiceMemory(voice_path_for(model)), records[:2000])
        del corpus, records
        for voice in (False, True):
            serve(args, tmp_name, db, model, what, voice, DEMO_PEOPLE, ("slack", "C0DEMOGEN", "general"))
    return 0


def real_audience(db: Path) -> tuple[list[str], tuple[str, str, str]]:
    """The five people with the most messages, and a Slack or Discord channel with a conversation to prime with."""
    from training.store import Store

    with Store.open(db, create=False) as store:
        people = [s for s, _ in sorted(store.speaker_counts().items(), key=lambda kv: -kv[1])[:5]]
        for platform in ("slack", "discord"):
            for cid, name in store.channel_names(platform).items():
                if len(store.recent_messages(platform, cid, 12)) == 12:
                    return people, (platform, cid, name)
    raise SystemExit(f"bench_bot: no channel in {db} has 12 messages to prime with")


def time_voice_memory(memory: VoiceMemory, records: list[tuple[str, str]]) -> None:
    """The memory's cost per generation step (adapting one row, and a batch of 128, with real contexts), and its
    style ranker's per draft."""
    contexts = [(s, f"{s}: {t}".encode()[:n]) for s, t in records for n in range(len(s) + 2, len(s) + 40, 5)]
    for rows in (1, 4, 32, 128):
        probs = np.full((rows, 256), 1 / 256)
        batches = [contexts[i:i + rows] for i in range(0, len(contexts) - rows, rows)][:300]
        start = time.perf_counter()
        for batch in batches:
            memory.adapt(probs, [memory.speaker_id(s) for s, _ in batch], [c for _, c in batch], [2.0] * rows)
        print(f"adapt {rows} row(s): {(time.perf_counter() - start) / len(batches) * 1e6:.0f} µs per step")
    if memory.style is not None:  # once per draft, on its finished text
        start = time.perf_counter()
        for s, t in records:
            memory.style.margin(t, memory.speaker_id(s))
        print(f"style ranker: {(time.perf_counter() - start) / len(records) * 1e6:.0f} µs per draft "
              f"({statistics.mean(len(t) for _, t in records):.0f} chars on average)")


def serve(args: argparse.Namespace, tmp_name: str, db: Path, model: Path, what: str, voice: bool, people: list[str],
          channel: tuple[str, str, str]) -> None:
    """Latency one at a time and throughput under load, served with or without the voice memory."""
    gen = GenerationSettings(max_chars=300, voice_memory=voice)
    settings = Settings(storage=StorageSettings(data_dir=tmp_name, database=str(db), model=str(model)),
                        generation=gen, limits=LimitSettings(user_limit=0, channel_limit=0))
    gate = ModelGate.from_settings(settings, watch_seconds=None, threads=args.threads)
    commands = Commands(settings, gate, StoreAccess(db))

    def one(i: int) -> tuple[float, int]:
        inv = Invocation.from_text(f"impersonate {people[i % len(people)]}", platform=channel[0],
                                   user_id=f"U{i}", channel_id=channel[1], channel_name=channel[2])
        start = time.perf_counter()
        reply = commands.handle(inv)
        elapsed = time.perf_counter() - start
        if reply.private:
            raise SystemExit(f"bench_bot: request refused: {reply.text}")
        return elapsed, len(html.unescape(reply.text))  # characters written, before Slack's escaping

    for i in range(5):  # warm up: sessions, caches, the batching thread
        one(i)
    sequential = [one(i) for i in range(args.requests)]
    lat = [t for t, _ in sequential]
    lengths = [n for _, n in sequential]
    how = f"voice memory on, {gen.drafts} drafts" if voice else "voice memory off"
    print(f"\n## command -> posted text, {what}, {how}, CPU, {args.threads} ORT thread(s)")
    print(f"message length: median {statistics.median(lengths):.0f} chars "
          f"(p5 {percentile(lengths, 5):.0f}, p95 {percentile(lengths, 95):.0f})")
    print(f"one at a time ({args.requests} requests): p50 {percentile(lat, 50) * 1e3:.0f} ms, "
          f"p99 {percentile(lat, 99) * 1e3:.0f} ms")

    service = gate.service()
    served = service.holder.get()
    tries = [impersonate(served, people[i % len(people)], srand=i, cfg=impersonation_config(settings))[0].attempts
             for i in range(50)]
    print(f"attempts per message (a draft that copies a training message is drawn again): "
          f"mean {statistics.mean(tries):.2f}, max {max(tries)}")
    batches_before, jobs_before = service.batches_run, service.jobs_run
    total = max(args.requests, args.concurrency * 4)
    with ThreadPoolExecutor(args.concurrency) as pool:
        start = time.perf_counter()
        loaded = list(pool.map(one, range(total)))
        wall = time.perf_counter() - start
    lat = [t for t, _ in loaded]
    batches = service.batches_run - batches_before
    print(f"{args.concurrency} concurrent ({total} requests): {total / wall:.1f} messages/s, "
          f"p50 {percentile(lat, 50) * 1e3:.0f} ms, p99 {percentile(lat, 99) * 1e3:.0f} ms, "
          f"{(service.jobs_run - jobs_before) / max(1, batches):.1f} requests per batch")
    gate.close()


if __name__ == "__main__":
    raise SystemExit(main())
