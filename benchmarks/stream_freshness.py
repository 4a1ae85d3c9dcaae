"""Streaming freshness: seconds from an event file landing to its MERGE being visible in gold.user_recent.

    python benchmarks/stream_freshness.py [--rounds 10] [--warmup 5] [--trigger-seconds 1] [--events-per-file 20]

stream_events runs in this process (``liverec.streaming.start``, processing-time trigger, conf defaults
otherwise) on a fresh lakehouse under .liverec/bench-stream. Each round writes one small JSON-lines file
(``--events-per-file`` events of a few users, the last a new item for the round's user) under a temporary
name outside the landing folder, ``os.rename``s it in, and polls gold.user_recent (through ``deltalake``,
without Spark, every 100 ms) until that item heads the user's list; the seconds from the rename to then
are the round's freshness. The next round starts once the stream is idle again. The ``--warmup`` rounds
first are reported apart: the first batch of a fresh JVM creates the tables and compiles everything, and
the JIT keeps speeding the next few up (a stream runs for days, so the steady state is the figure).

Writes benchmarks/results/stream_freshness.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from _measure import machine, write_results
from deltalake import DeltaTable, QueryBuilder

from liverec import cleaning, lakehouse, streaming, tables
from liverec.config import load_settings
from liverec.progress import Progress
from liverec.session import build_spark

REPO = Path(__file__).resolve().parents[1]
USERS = 5


def head_item(path: str, user: str) -> str | None:
    """The newest item of ``user`` in gold.user_recent, read without Spark (None until the table has it)."""
    try:
        sql = f"select recent[1]['item_id'] as item from t where user_id = '{user}'"
        items = QueryBuilder().register("t", DeltaTable(path)).execute(sql).read_all()["item"].to_pylist()
    except Exception:  # not created yet
        return None
    return items[0] if items else None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--trigger-seconds", type=float, default=1.0)
    ap.add_argument("--events-per-file", type=int, default=20)
    ap.add_argument("--deadline", type=float, default=300.0, help="give up on a round after this many seconds")
    args = ap.parse_args()
    work = REPO / ".liverec" / "bench-stream"
    if work.exists():
        shutil.rmtree(work)
    (work / "outbox").mkdir(parents=True)
    settings = load_settings(overrides=[
        f"lakehouse_root={work / 'lakehouse'}", f"scratch_dir={work / 'scratch'}", "demo_mode=true",
        f"stream.landing={work / 'landing'}", f"stream.trigger_seconds={args.trigger_seconds}",
        "spark.driver_memory=4g"])
    load_before = os.getloadavg()  # other work on the machine slows every figure: recorded with them
    spark = build_spark(settings, "bench-stream")
    key = cleaning.id_key(settings)
    recent = tables.table_path(settings, tables.USER_RECENT)
    batch_seconds: list[float] = []
    state = streaming.StreamState(Progress("stream_events"), on_batch=lambda r, s: batch_seconds.append(s))
    query = streaming.start(spark, settings, settings.stream.landing, False, state)

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rounds: list[dict] = []
    for r in range(args.warmup + args.rounds):
        user = f"bench-user-{r % USERS}"
        item = f"bench-item-{r}"
        rows = [{"event_id": f"r{r}-e{i}", "user_id": f"bench-user-{i % USERS}", "item_id": f"item-{(r * 7 + i) % 50}",
                 "event_type": "view", "ts": (t0 + dt.timedelta(minutes=r, seconds=i)).isoformat()}
                for i in range(args.events_per_file - 1)]
        rows.append({"event_id": f"r{r}-new", "user_id": user, "item_id": item, "event_type": "click",
                     "ts": (t0 + dt.timedelta(minutes=r, seconds=59)).isoformat()})
        tmp = work / "outbox" / f"round-{r}.json"
        tmp.write_text("".join(json.dumps(x) + "\n" for x in rows))
        batches_before = len(batch_seconds)
        landed = time.monotonic()
        os.rename(tmp, Path(settings.stream.landing) / tmp.name)
        pseudonym = cleaning.pseudonymise_value(user, key)
        while head_item(recent, pseudonym) != item:
            if time.monotonic() - landed > args.deadline or query.exception() is not None:
                raise SystemExit(f"round {r}: {item} not visible after {time.monotonic() - landed:.0f}s "
                                 f"({query.exception()})")
            time.sleep(0.1)
        seconds = time.monotonic() - landed
        # wait for the batch to finish (its progress line comes after the MERGE) before the next file lands
        while len(batch_seconds) == batches_before or query.status.get("isTriggerActive"):
            time.sleep(0.05)
        rounds.append({"round": r, "warmup": r < args.warmup, "freshness_s": round(seconds, 3),
                       "batch_s": round(batch_seconds[-1], 3)})
        print(f"round {r}{' (warm-up)' if r < args.warmup else ''}: {seconds:.2f}s to visible, "
              f"batch {batch_seconds[-1]:.2f}s", flush=True)
    load_after = os.getloadavg()
    streaming.stop_between_batches(query)
    silver_rows = lakehouse.read(spark, settings, tables.SILVER_EVENTS).count()
    spark.stop()

    measured = [x["freshness_s"] for x in rounds if not x["warmup"]]
    batches = [x["batch_s"] for x in rounds if not x["warmup"]]
    summary = {"p50_s": round(statistics.median(measured), 2), "p90_s": round(percentile(measured, 0.9), 2),
               "max_s": round(max(measured), 2), "mean_batch_s": round(statistics.mean(batches), 2),
               "target_s": 10.0}
    cmd = (f"cd benchmarks && python stream_freshness.py --rounds {args.rounds} --warmup {args.warmup} "
           f"--trigger-seconds {args.trigger_seconds:g} --events-per-file {args.events_per_file}")
    payload = {"benchmark": "stream_freshness", "machine": machine(), "command": cmd,
               "trigger_seconds": args.trigger_seconds, "events_per_file": args.events_per_file,
               "spark_master": settings.spark.master, "stream_shuffle_partitions": settings.stream.shuffle_partitions,
               "stream_snapshot_partitions": settings.stream.snapshot_partitions,
               "recent_items": settings.stream.recent_items, "silver_rows_at_end": silver_rows,
               "load_average_1_5_15_before": [round(x, 2) for x in load_before],
               "load_average_1_5_15_after": [round(x, 2) for x in load_after], "summary": summary, "rounds": rounds}
    met = "met" if summary["p90_s"] <= 10 else "not met"
    warm = ", ".join(f"{x['freshness_s']:.1f}" for x in rounds if x["warmup"])
    lines = [
        "# Streaming freshness: event file landing -> visible in gold.user_recent", "",
        f"Machine: {machine()}. Command: `{cmd}`. Load average (1, 5, 15 min) before "
        f"{', '.join(f'{x:.2f}' for x in load_before)}, at the end {', '.join(f'{x:.2f}' for x in load_after)} "
        "(this benchmark alone keeps it near 3).", "",
        f"stream_events in-process, processing-time trigger {args.trigger_seconds:g} s, Spark "
        f"`{settings.spark.master}`, stream.shuffle_partitions {settings.stream.shuffle_partitions}, "
        f"stream.snapshot_partitions {settings.stream.snapshot_partitions}, "
        f"recent_items {settings.stream.recent_items}; a fresh lakehouse (silver.events holds {silver_rows:,} rows "
        f"at the end). Each round renames one {args.events_per_file}-event JSON-lines file into the landing folder "
        "and polls gold.user_recent (deltalake, every 100 ms) until the file's newest event heads its user's list. "
        "Per micro-batch: clean (the batch job's functions), MERGE into gold.user_recent, append to silver.events.",
        "",
        "| measure | seconds |", "|---|---|",
        f"| p50 freshness | {summary['p50_s']:.2f} |", f"| p90 freshness | {summary['p90_s']:.2f} |",
        f"| max freshness | {summary['max_s']:.2f} |",
        f"| mean micro-batch (clean + MERGE + append) | {summary['mean_batch_s']:.2f} |", "",
        f"Target: p90 <= 10 s ({met}). {args.rounds} measured rounds after {args.warmup} warm-up round(s) "
        f"({warm or 'none'} s: the first batch "
        "creates the tables and compiles the queries, and the JIT speeds the next few up).", "",
        "| round | freshness (s) | micro-batch (s) |", "|---|---|---|",
        *[f"| {x['round']}{' (warm-up)' if x['warmup'] else ''} | {x['freshness_s']:.2f} | {x['batch_s']:.2f} |"
          for x in rounds], "",
    ]
    write_results("stream_freshness", payload, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
