"""Ingest benchmark: generate a big Slack export zip, import it, report messages/s and peak memory.

    python benchmarks/bench_ingest.py                     # 1,000,000 messages (needs ~1 GB of disk, minutes)
    python benchmarks/bench_ingest.py --messages 100000   # a quick check
    python benchmarks/bench_ingest.py --export PATH.zip   # time a real export instead

The issue's bar: a 1-million-message export ingests with peak RSS well under 1 GB. The generated export
looks like a busy workspace: 50 channels, 500 people, ~100 messages per channel-day, mentions, links,
escapes, multi-line messages, threads, edits, joins and bot posts.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.ingest_slack import ingest_slack_export  # noqa: E402
from training.store import Store  # noqa: E402

_VOCABULARY = """the a to and of in is it you that for on we this be with have not are can just so but what
deploy build test merge review ship bug fix release coffee lunch meeting today tomorrow yes no
maybe great thanks sounds good looks weird again ok lol 🎉 :+1: :tada:"""
WORDS = _VOCABULARY.split()
START = 1_600_000_000


def _text(rng: random.Random, users: list[str]) -> str:
    words = rng.choices(WORDS, k=rng.randint(3, 30))
    roll = rng.random()
    if roll < 0.1:
        words.insert(0, f"<@{rng.choice(users)}>")
    elif roll < 0.13:
        words.append("<https://example.invalid/x?a=1&amp;b=2|the link>")
    elif roll < 0.15:
        words.append("&lt;tag&gt; &amp;")
    text = " ".join(words)
    return text.replace(" ok ", " ok\n") if rng.random() < 0.1 else text


def generate(path: Path, messages: int, *, channels: int = 50, people: int = 500, per_day: int = 100,
             seed: int = 0) -> None:
    """Write an official-layout export with `messages` day-file records, one day file at a time."""
    rng = random.Random(seed)
    users = [f"U{i:08d}" for i in range(people)]
    names = [f"c{i:03d}" for i in range(channels)]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("users.json", json.dumps([
            {"id": u, "team_id": "TBENCH", "name": f"user{i}", "real_name": f"User {i}",
             "profile": {"display_name": f"User {i}" if i % 3 else "", "real_name": f"User {i}"}}
            for i, u in enumerate(users)] + [{"id": "UBOT", "name": "ci", "is_bot": True, "profile": {}}]))
        archive.writestr("channels.json", json.dumps([{"id": f"C{i:08d}", "name": n, "created": START}
                                                      for i, n in enumerate(names)]))
        written, day = 0, 0
        while written < messages:
            for c, name in enumerate(names):
                if written >= messages:
                    break
                batch, ts = [], START + day * 86400 + c
                for k in range(min(per_day, messages - written)):
                    ts += rng.randint(1, 600)
                    m = {"type": "message", "user": rng.choice(users), "text": _text(rng, users),
                         "ts": f"{ts}.{k:06d}", "client_msg_id": f"{day}-{c}-{k}"}
                    roll = rng.random()
                    if roll < 0.02:
                        m.update(subtype="channel_join", text=f"<@{m['user']}> has joined the channel")
                    elif roll < 0.04:
                        m = {"type": "message", "subtype": "bot_message", "bot_id": "B1", "text": m["text"], "ts": m["ts"]}
                    elif roll < 0.07 and batch:
                        m["thread_ts"] = batch[0]["ts"]
                    elif roll < 0.09:
                        m["edited"] = {"user": m["user"], "ts": f"{ts + 5}.000000"}
                    batch.append(m)
                archive.writestr(f"{name}/{time.strftime('%Y-%m-%d', time.gmtime(START + day * 86400))}.json",
                                 json.dumps(batch))
                written += len(batch)
            day += 1


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--export", type=Path, help="benchmark this export instead of a generated one")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mimic-bench-") as tmp:
        export = args.export
        if export is None:
            export = Path(tmp) / "export.zip"
            t0 = time.perf_counter()
            generate(export, args.messages)
            print(f"generated {args.messages:,} records ({export.stat().st_size / 1e6:.0f} MB zip) "
                  f"in {time.perf_counter() - t0:.1f} s; peak RSS so far {peak_rss_mb():.0f} MB")
        with Store.open(Path(tmp) / "mimic.db") as store:
            t0 = time.perf_counter()
            report = ingest_slack_export(export, store)
            seconds = time.perf_counter() - t0
        records = report.stored + sum(report.skipped.values())
        print(report.summary())
        print(f"ingested {records:,} records in {seconds:.1f} s: {records / seconds:,.0f} records/s, "
              f"{report.stored / seconds:,.0f} stored messages/s; peak RSS {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
