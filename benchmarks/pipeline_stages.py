"""Wall time per stage and peak memory of the whole pipeline, on ml-100k and a generated 1M-event log.

    python benchmarks/pipeline_stages.py [--dataset ml-100k|demo-1m|both] [--als-only-events N]

Each stage runs as its own `liverec run` process, as the scheduler would run it (JVM start, MLflow
logging included); peak memory is the summed RSS of that process tree (driver JVM + Python workers).
`--als-only-events N` instead generates an N-event log and times ingest, clean and train_als only
(the ALS-at-scale check). Writes benchmarks/results/pipeline_stages[_<name>].{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from pathlib import Path

from _measure import isolated_args, machine, run_measured, write_results

REPO = Path(__file__).resolve().parents[1]
DS = "2026-11-02"


def run_dataset(name: str, stages: list[tuple[str, list[str]]], driver_memory: str, extra: list[str]) -> dict:
    work = REPO / ".liverec" / f"bench-pipeline-{name}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    liverec = str(Path(sys.executable).parent / "liverec")
    common = [*isolated_args(work, driver_memory), *extra, "--ds", DS]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    out = {}
    for stage, opts in stages:
        cmd = [liverec, "generate", *common, *opts] if stage == "generate" else [liverec, "run", stage, *common, *opts]
        out[stage] = run_measured(cmd, env, work / f"{stage}.log")
        print(f"{name} {stage}: {out[stage]['seconds']:.1f}s, peak {out[stage]['peak_rss_gib']:.2f} GiB", flush=True)
    return out


def write(name: str, results: dict, command: str, driver_memory: str) -> None:
    payload = {"benchmark": name, "date": dt.date.today().isoformat(), "machine": machine(),
               "driver_memory": driver_memory, "command": command, "datasets": results}
    lines = [f"# {name}", "", f"Measured {payload['date']} on {payload['machine']}, driver memory {driver_memory}; "
             f"`{command}`. Each stage is its own process (JVM start and MLflow logging included); peak = summed RSS "
             "of the process tree.", ""]
    for ds_name, stages in results.items():
        total = sum(s["seconds"] for k, s in stages.items() if k != "generate")
        peak = max(s["peak_rss_gib"] for s in stages.values())
        lines += [f"## {ds_name}", "", "| stage | wall s | peak RSS GiB |", "|---|---|---|",
                  *[f"| {k} | {s['seconds']:.1f} | {s['peak_rss_gib']:.2f} |" for k, s in stages.items()],
                  f"| **pipeline (without generate)** | **{total:.1f}** | **{peak:.2f}** |", ""]
    write_results(name, payload, lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("ml-100k", "demo-1m", "both"), default="both")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--als-only-events", type=int, help="time ingest+clean+train_als on an N-event generated log")
    ap.add_argument("--users", type=int, default=140_000)
    ap.add_argument("--items", type=int, default=27_000)
    ap.add_argument("--driver-memory", default="8g")
    args = ap.parse_args()
    command = "python benchmarks/pipeline_stages.py " + " ".join(sys.argv[1:])
    tail = [("build_profiles", []), ("train_als", []), ("recommend_nightly", []), ("evaluate", [])]
    if args.als_only_events:
        n = args.als_only_events
        stages = [("generate", ["--events", str(n), "--users", str(args.users), "--items", str(args.items)]),
                  ("ingest", ["--source", "demo"]), ("clean", []), ("train_als", [])]
        extra = ["--set", f"demo.partitions={max(n // 1_000_000, 2)}", "--set", "spark.shuffle_partitions=32"]
        name = f"als_{n // 1_000_000}m"
        write(f"pipeline_stages_{name}", {name: run_dataset(name, stages, args.driver_memory, extra)}, command,
              args.driver_memory)
        return 0
    results = {}
    if args.dataset in ("ml-100k", "both"):
        stages = [("ingest", ["--source", "movielens", "--input", args.data]), ("clean", []), *tail]
        results["ml-100k"] = run_dataset("ml-100k", stages, args.driver_memory, [])
    if args.dataset in ("demo-1m", "both"):
        stages = [("generate", ["--events", "1000000", "--users", "6000", "--items", "4000"]),
                  ("ingest", ["--source", "demo"]), ("clean", []), *tail]
        results["demo-1m"] = run_dataset("demo-1m", stages, args.driver_memory, [])
    write("pipeline_stages", results, command, args.driver_memory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
