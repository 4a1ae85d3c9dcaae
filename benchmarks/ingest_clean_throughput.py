"""Ingest + clean throughput on a generated event log (default 10M events), with peak memory.

    python benchmarks/ingest_clean_throughput.py [--events 10000000] [--users 140000] [--items 27000]

Each stage runs as its own `liverec run` process (JVM start and MLflow logging included, as a user
would run it); peak memory is the summed RSS of that process tree (driver JVM + Python workers),
sampled every 0.25 s. Writes benchmarks/results/ingest_clean_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path

from _measure import isolated_args, machine, run_measured, write_results

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=140_000)
    ap.add_argument("--items", type=int, default=27_000)
    ap.add_argument("--workdir", default=str(REPO / ".liverec" / "bench-ingest"))
    ap.add_argument("--driver-memory", default="8g")
    args = ap.parse_args()

    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    liverec = str(Path(sys.executable).parent / "liverec")
    common = [*isolated_args(work, args.driver_memory), "--set", "spark.shuffle_partitions=16",
              "--set", f"demo.partitions={max(args.events // 1_000_000, 2)}", "--ds", "2026-11-02"]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    data = work / "demo"
    gen = run_measured([liverec, "generate", *common, "--output", str(data), "--events", str(args.events),
                        "--users", str(args.users), "--items", str(args.items)], env, work / "generate.log")
    manifest = json.loads((data / "manifest.json").read_text())
    ing = run_measured([liverec, "run", "ingest", *common, "--source", "demo", "--input", str(data)], env,
                       work / "ingest.log")
    cln = run_measured([liverec, "run", "clean", *common], env, work / "clean.log")
    rows = manifest["rows_written"]
    total = ing["seconds"] + cln["seconds"]
    balance = [ln.strip() for ln in (work / "clean.log").read_text().splitlines() if "balance:" in ln]
    result = {
        "benchmark": "ingest_clean_throughput",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "driver_memory": args.driver_memory,
        "input_rows": rows,
        "users": args.users, "items": args.items,
        "generate": {**gen, "rows_per_s": rows / gen["seconds"]},
        "ingest": {**ing, "rows_per_s": rows / ing["seconds"]},
        "clean": {**cln, "rows_per_s": rows / cln["seconds"]},
        "ingest_plus_clean": {"seconds": total, "rows_per_s": rows / total,
                              "peak_rss_gib": max(ing["peak_rss_gib"], cln["peak_rss_gib"])},
        "balance": balance[-1] if balance else None,
        "dirt": manifest["dirt"],
    }
    lines = [
        "# Ingest + clean throughput", "",
        f"Measured {result['date']} on {result['machine']} (driver memory {args.driver_memory}); "
        f"`python benchmarks/ingest_clean_throughput.py --events {args.events}`.", "",
        f"Input: {rows:,} generated rows ({args.users:,} users, {args.items:,} items, dirt included).", "",
        "| step | wall s | rows/s | peak RSS GiB |", "|---|---|---|---|",
    ]
    for name in ("generate", "ingest", "clean", "ingest_plus_clean"):
        r = result[name]
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | {r['peak_rss_gib']:.2f} |")
    lines += ["", f"Clean's balance line: `{result['balance']}`", ""]
    write_results("ingest_clean_throughput", result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
