"""Nightly ranked recommendations: users/s for about 6k users x 300 candidates on this machine.

    python benchmarks/nightly_throughput.py [--users 6000] [--items 3000] [--events 300000] [--repeat 2]
    (or --prepare-only first, then --reuse to measure alone on an otherwise idle machine)

A generated demo log (6k users) goes through every stage up to a champion ranker (ranker.epochs=2,
quality is not the point here), each as its own `liverec run` process; then recommend_nightly is run
``--repeat`` times on the same inputs (a rerun replaces the date) and timed: the job's own
"done in" seconds (Spark session up, inputs read, features, the per-user pass in mapInArrow:
candidates, dense features, champion scoring and MMR; reasons, Delta write) and the process's wall time
and peak RSS (JVM start included). Candidates per user come from the job's own progress line.

Writes benchmarks/results/nightly_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import sys
from pathlib import Path

from _measure import isolated_args, machine, run_measured, write_results

REPO = Path(__file__).resolve().parents[1]
DS = "2026-11-02"
PREPARE = ["ingest", "clean", "embed_items", "build_profiles", "train_als", "build_ranker_examples", "train_ranker"]


def _num(x: float | None, digits: int) -> str:
    return "not recorded" if x is None else f"{x:.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=6000)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--prepare-only", action="store_true", help="build the inputs and the champion, measure nothing")
    ap.add_argument("--reuse", action="store_true", help="measure on the inputs a --prepare-only run left")
    ap.add_argument("--parse-only", action="store_true", help="write the results from the logs of the last runs")
    args = ap.parse_args()
    work = REPO / ".liverec" / "bench-nightly"
    if not args.reuse:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYSPARK_PYTHON": sys.executable}
    common = [*isolated_args(work, "8g"), "--set", f"demo.users={args.users}", "--set", f"demo.items={args.items}",
              "--set", f"demo.events={args.events}", "--set", "ranker.epochs=2", "--ds", DS]
    liverec = str(bin_dir / "liverec")
    prepared = {}
    for stage in [] if args.reuse else PREPARE:
        extra = ["--source", "demo"] if stage == "ingest" else []
        prepared[stage] = run_measured([liverec, "run", stage, *common, *extra], env, work / f"{stage}.log")
        print(f"{stage}: {prepared[stage]['seconds']:.0f}s", flush=True)
    if args.prepare_only:
        (work / "prepared.json").write_text(json.dumps(prepared))
        return 0
    if args.reuse:
        prepared = json.loads((work / "prepared.json").read_text())
    runs = []
    for i in range(args.repeat):
        log = work / f"recommend_nightly-{i}.log"
        if args.parse_only:  # wall time and peak memory were only printed by the measuring run
            measured = json.loads((work / f"measured-{i}.json").read_text())
        else:
            measured = run_measured([liverec, "run", "recommend_nightly", *common], env, log)
            (work / f"measured-{i}.json").write_text(json.dumps(measured))
        text = log.read_text()
        done = float(re.search(r"\[recommend_nightly\] done in ([\d.]+)s", text).group(1))
        found = re.search(r"\[recommend_nightly\] ranked lists: .*?candidates=([\d,]+)", text)
        cands = int(found.group(1).replace(",", ""))
        written = re.search(r"write gold.recommendations: ([\d,]+) rows.*? users=([\d,]+) ranked_rows=([\d,]+)", text)
        users, ranked = (int(written.group(g).replace(",", "")) for g in (2, 3))
        steps = {m.group(1): float(m.group(2)) for m in re.finditer(r"\[recommend_nightly\] ([\w ]+?): .*?([\d.]+)s",
                                                                    text)}
        runs.append({**measured, "job_seconds": done, "users": users, "ranked_rows": ranked, "candidates": cands,
                     "candidates_per_user": cands / max(users, 1), "users_per_s": users / done,
                     "users_per_s_wall": users / measured["seconds"] if measured["seconds"] else None, "steps": steps})
        print(f"run {i}: {users} users, {cands / users:.0f} candidates/user, job {done:.0f}s -> "
              f"{users / done:.1f} users/s", flush=True)
    best = max(runs, key=lambda r: r["users_per_s"])
    payload = {"machine": machine(), "date": dt.date.today().isoformat(), "args": vars(args), "prepare": prepared,
               "runs": runs}
    lines = ["# Nightly ranked recommendations: throughput", "",
             f"Machine: {machine()}. Command: `cd benchmarks && python nightly_throughput.py` "
             f"(demo log: {args.users:,} users, {args.items:,} items, {args.events:,} events; local[*], driver 8g).",
             "", "| run | users | candidates/user | ranked rows | job s | users/s (job) | wall s | users/s (wall) "
             "| peak RSS GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(runs):
        lines.append(f"| {i} | {r['users']:,} | {r['candidates_per_user']:.0f} | {r['ranked_rows']:,} | "
                     f"{r['job_seconds']:.0f} | {r['users_per_s']:.1f} | {_num(r['seconds'], 0)} | "
                     f"{_num(r['users_per_s_wall'], 1)} | {_num(r['peak_rss_gib'], 1)} |")
    lines += ["", f"Best: {best['users_per_s']:.1f} users/s ({best['users']:,} users x "
              f"{best['candidates_per_user']:.0f} candidates = {best['candidates']:,} scored pairs in "
              f"{best['job_seconds']:.0f}s, {best['candidates'] / best['job_seconds']:,.0f} pairs/s). "
              f"Mean over runs: {statistics.mean(r['users_per_s'] for r in runs):.1f} users/s.", "",
              "Progress lines of the last run (seconds per step, from the job's log):", ""]
    lines += [f"- {k}: {v:.1f}s" for k, v in runs[-1]["steps"].items()]
    lines += ["", "Preparation (each its own process): " +
              ", ".join(f"{k} {v['seconds']:.0f}s" for k, v in prepared.items())]
    write_results("nightly_throughput", payload, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
