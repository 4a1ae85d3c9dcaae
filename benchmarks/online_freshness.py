"""Online freshness: seconds from an event file landing to a changed answer for that user (user id alone).

    python benchmarks/online_freshness.py [--work .liverec/bench-online] [--rounds 10] [--warmup 3]

Needs the published ml-100k model of ``benchmarks/online_latency.py --prepare`` in ``--work``. stream_events
runs in this process (``liverec.streaming.start``, processing-time trigger ``--trigger-seconds``) on that
lakehouse, writing each micro-batch's recent events into the online store (the published SQLite store); the
online model (``models:/liverec-online@champion``, loaded in this process, reading the same store) answers
``{"user_id": <raw id>, "k": 10}``. Each round picks a known user and an item they never chose, renames a
one-click JSON-lines file into the landing folder and asks every 100 ms until the answer holds that click
(``streamed`` >= 1) and a content neighbour of the item among its session places; the seconds from the
rename to then are the round's freshness. ``--warmup`` rounds first are reported apart (the first batches
compile the queries).

Writes benchmarks/results/online_freshness.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

from _measure import isolated_args, machine, write_results

from liverec import cleaning, streaming
from liverec.config import load_settings
from liverec.progress import Progress
from liverec.session import build_spark

REPO = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / ".liverec" / "bench-online")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--trigger-seconds", type=float, default=1.0)
    ap.add_argument("--deadline", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    work = args.work.resolve()
    landing, outbox = work / "fresh-landing", work / "fresh-outbox"
    for d in (landing, outbox):
        d.mkdir(parents=True, exist_ok=True)
        for f in d.iterdir():
            f.unlink()
    overrides = [a for a in isolated_args(work, "4g") if a != "--set"]
    settings = load_settings(overrides=[*overrides, f"stream.landing={landing}",
                                        f"stream.trigger_seconds={args.trigger_seconds}",
                                        f"stream.checkpoint={work / 'fresh-checkpoint'}"])
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import mlflow
    import torch

    torch.set_num_threads(1)
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{settings.online.registered_model}@{settings.online.alias}")
    scorer = model.unwrap_python_model().scorer
    key = cleaning.id_key(settings)
    rng = random.Random(args.seed)

    spark = build_spark(settings, "bench-online-freshness")
    batch_seconds: list[float] = []
    state = streaming.StreamState(Progress("stream_events"), on_batch=lambda r, s: batch_seconds.append(s))
    query = streaming.start(spark, settings, str(landing), False, state)
    load_before = os.getloadavg()
    rounds = []
    try:
        for r in range(args.warmup + args.rounds):
            while True:  # a known user and an item with neighbours they never chose
                raw = str(rng.randint(1, 943))
                user = scorer.lookup_user(cleaning.pseudonymise_value(raw, key))[0]
                item = rng.randrange(len(scorer.item_ids))
                if user is not None and item not in set(user.seen_idx.tolist()) and (scorer.neighbors[item] >= 0).any():
                    break
            neighbours = {scorer.item_ids[i] for i in scorer.neighbors[item] if i >= 0}
            before = scorer.answer([{"user_id": raw, "k": 10}])
            event = {"user_id": raw, "item_id": scorer.item_ids[item], "event_type": "click",
                     "ts": dt.datetime.now(dt.UTC).isoformat(), "event_id": f"fresh-{r}-{time.time_ns()}"}
            tmp = outbox / f"round-{r}.json"
            tmp.write_text(json.dumps(event) + "\n")
            batches = len(batch_seconds)
            landed = time.monotonic()
            os.rename(tmp, landing / tmp.name)
            while True:
                out = scorer.answer([{"user_id": raw, "k": 10}])
                live = set(out[out["source"] == "session"]["item_id"])
                if out["streamed"].max() >= 1 and live & neighbours:
                    break
                if time.monotonic() - landed > args.deadline or query.exception() is not None:
                    raise SystemExit(f"round {r}: no changed answer after {time.monotonic() - landed:.0f}s "
                                     f"({query.exception()})")
                time.sleep(0.1)
            seconds = time.monotonic() - landed
            changed = list(out["item_id"]) != list(before["item_id"])
            while len(batch_seconds) == batches or query.status.get("isTriggerActive"):
                time.sleep(0.05)
            rounds.append({"round": r, "warmup": r < args.warmup, "freshness_s": round(seconds, 3),
                           "batch_s": round(batch_seconds[-1], 3), "answer_changed": changed})
            print(f"round {r}{' (warm-up)' if r < args.warmup else ''}: {seconds:.2f}s to a changed answer, "
                  f"batch {batch_seconds[-1]:.2f}s", flush=True)
    finally:
        streaming.stop_between_batches(query)
        spark.stop()
    load_after = os.getloadavg()
    measured = [x["freshness_s"] for x in rounds if not x["warmup"]]
    summary = {"p50_s": round(statistics.median(measured), 2), "p90_s": round(percentile(measured, 0.9), 2),
               "max_s": round(max(measured), 2),
               "mean_batch_s": round(statistics.mean(x["batch_s"] for x in rounds if not x["warmup"]), 2),
               "target_p90_s": 10.0}
    cmd = (f"cd benchmarks && python online_freshness.py --rounds {args.rounds} --warmup {args.warmup} "
           f"--trigger-seconds {args.trigger_seconds:g}")
    payload = {"benchmark": "online_freshness", "machine": machine(), "command": cmd, "summary": summary,
               "store": scorer.store.url if scorer.store is not None else None,
               "load_average_1_5_15_before": [round(x, 2) for x in load_before],
               "load_average_1_5_15_after": [round(x, 2) for x in load_after], "rounds": rounds}
    met = "met" if summary["p90_s"] <= 10 else "not met"
    lines = [
        "# Online freshness: event file landing -> a changed answer for that user", "",
        f"Machine: {machine()}. Command: `{cmd}` (after `python online_latency.py --prepare`).", "",
        "stream_events in this process (trigger "
        f"{args.trigger_seconds:g} s, Spark `{settings.spark.master}`) writes each micro-batch's recent events to "
        "the online store (SQLite) before its gold.user_recent MERGE; the online model in this process answers "
        "the user id alone every 100 ms until the answer holds the click and a content neighbour of its item.", "",
        "| measure | seconds |", "|---|---|",
        f"| p50 freshness | {summary['p50_s']:.2f} |", f"| p90 freshness | {summary['p90_s']:.2f} |",
        f"| max freshness | {summary['max_s']:.2f} |", f"| mean micro-batch | {summary['mean_batch_s']:.2f} |", "",
        f"Target: p90 <= 10 s ({met}); {args.rounds} measured rounds after {args.warmup} warm-up round(s).", "",
        "| round | freshness (s) | micro-batch (s) | top 10 changed |", "|---|---|---|---|",
        *[f"| {x['round']}{' (warm-up)' if x['warmup'] else ''} | {x['freshness_s']:.2f} | {x['batch_s']:.2f} | "
          f"{'yes' if x['answer_changed'] else 'no'} |" for x in rounds], ""]
    write_results("online_freshness", payload, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
