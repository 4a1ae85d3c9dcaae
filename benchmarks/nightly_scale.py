"""The nightly chain at scale: generated logs of 100k, 1M and 20M events, every stage timed.

    python benchmarks/nightly_scale.py [--sizes 100k 1m 20m] [--label NAME] [--driver-memory 12g]
                                       [--reuse] [--nightly-only] [--set key=value ...]

Per size, a demo log (``liverec generate``: users and items scaled with the events, see ``SIZES``) goes
through one ``liverec pipeline`` process, as a user runs it: the nightly chain (the ``liverec_nightly``
DAG's stages, ingest to publish_online) with the weekly training (build_ranker_examples, train_ranker)
in its place, so recommend_nightly and publish_online rank with a champion. Each stage's own
"done in" seconds come from its progress line; the chain's figure is the sum of the nightly stages (the
process's start and the training stages left out), beside the whole process's wall time and the peak
summed RSS of its process tree (driver JVM + Python workers). recommend_nightly's users/s is its active
users over its own seconds, with its step lines (read inputs, features, candidates, ranked lists, write).

``--reuse`` keeps an earlier run's tables and champion and reruns the serving stages (recommend_nightly,
publish_online) on them: a change to the nightly path measured on the same inputs. ``--champion-from SIZE``
skips the weekly training: the registry (MLflow store and artifacts) of an earlier run of SIZE is copied in,
so its champion ranks this size's users (items it never saw score as unknown ones; for throughput, not
quality: the 20M log is otherwise a day and more of ranker training on 2 cores). ``--resume`` continues a run
that was cut off (a machine restart): the stages with no "done in" line in its pipeline.log, or the ones
``--rerun`` names, run in a new process on its tables (appending pipeline-resume.log); the other stages'
seconds come from the first log, the process figures (wall time, peak memory) from the new process only.

Writes benchmarks/results/nightly_scale[_<label>].{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sys
from pathlib import Path

from _measure import isolated_args, machine, relocate_registry, run_measured, write_results

REPO = Path(__file__).resolve().parents[1]
DS = "2026-11-02"
# events -> (users, items): about 100 events per user; items grow more slowly (the catalogue of a bigger site is
# bigger, but not 200x bigger)
# events, users, items; "2k" has 20m's catalogue with a hundredth of its users (online_artifact_scale.py)
SIZES = {"100k": (100_000, 1_000, 500), "1m": (1_000_000, 10_000, 4_000), "20m": (20_000_000, 200_000, 27_000),
         "2k": (400_000, 2_000, 27_000)}
NIGHTLY = ("ingest", "clean", "embed_items", "build_profiles", "train_als", "train_ease")
TRAINING = ("build_ranker_examples", "train_ranker")
SERVING = ("recommend_nightly", "publish_online")


def stage_lines(log: str) -> tuple[dict[str, float], dict[str, float]]:
    """(stage -> its "done in" seconds, recommend_nightly step -> seconds) from a pipeline log."""
    done = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\[(\w+)\] done in ([\d.]+)s", log, re.M)}
    steps = {}
    for m in re.finditer(r"^\[recommend_nightly\] ([\w .]+?): (?:([\d,]+) rows, )?([\d.]+)s", log, re.M):
        steps[m.group(1)] = float(m.group(3))
    return done, steps


def copy_registry(source: Path, work: Path) -> None:
    """The MLflow store and artifacts of another run, its paths pointed at ``work``."""
    shutil.copy(source / "mlflow.db", work / "mlflow.db")
    shutil.copytree(source / "mlartifacts", work / "mlartifacts")
    relocate_registry(work / "mlflow.db", source, work)


def one_size(name: str, args: argparse.Namespace) -> dict:
    events, users, items = SIZES[name]
    work = REPO / ".liverec" / f"bench-scale-{name}"
    liverec = str(Path(sys.executable).parent / "liverec")
    partitions = max(events // 1_000_000, 2)
    common = [*isolated_args(work, args.driver_memory), "--set", f"demo.partitions={partitions}",
              "--set", f"spark.shuffle_partitions={max(partitions * 2, 8)}", "--set", "recommend.active_days=100000",
              *[x for kv in args.set for x in ("--set", kv)], "--ds", DS]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out: dict = {"events": events, "users": users, "items": items, "champion_from": args.champion_from}
    planned = (*NIGHTLY, *SERVING) if args.champion_from else (*NIGHTLY, *TRAINING, *SERVING)
    earlier = ""
    if args.reuse:
        stages = SERVING
        log = work / f"pipeline-{args.label or 'rerun'}.log"
    elif args.resume:
        earlier = (work / "pipeline.log").read_text()
        finished, _ = stage_lines(earlier)
        stages = tuple(s for s in planned if s not in finished or s in args.rerun)
        log = work / "pipeline-resume.log"
        out["resumed"] = list(stages)
    else:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        if args.champion_from:
            copy_registry(REPO / ".liverec" / f"bench-scale-{args.champion_from}", work)
        out["generate"] = run_measured([liverec, "generate", *common, "--events", str(events), "--users", str(users),
                                        "--items", str(items)], env, work / "generate.log")
        print(f"{name}: generate {out['generate']['seconds']:.0f}s", flush=True)
        stages = planned
        log = work / "pipeline.log"
    run = run_measured([liverec, "pipeline", *common, "--source", "demo", "--stages", ",".join(stages)], env, log)
    done, steps = stage_lines(earlier)
    later, later_steps = stage_lines(log.read_text())
    done, steps = {**done, **later}, {**steps, **later_steps}
    text = earlier + log.read_text()
    if args.resume:
        stages = planned
    written = re.search(r"^\[recommend_nightly\] write gold.recommendations: ([\d,]+) rows.*? users=([\d,]+) "
                        r"ranked_rows=([\d,]+)", text, re.M)
    cands = re.search(r"^\[recommend_nightly\] ranked lists: .*?candidates=([\d,]+)", text, re.M)
    n_users = int(written.group(2).replace(",", ""))
    out.update(process=run, stages=done, recommend_steps=steps, active_users=n_users,
               ranked_rows=int(written.group(3).replace(",", "")),
               candidates=int(cands.group(1).replace(",", "")) if cands else None,
               chain_seconds=sum(done.get(s, 0.0) for s in (*NIGHTLY, *SERVING) if s in stages),
               training_seconds=sum(done.get(s, 0.0) for s in TRAINING if s in stages),
               users_per_s=n_users / done["recommend_nightly"])
    print(f"{name}: chain {out['chain_seconds']:.0f}s, recommend_nightly {done['recommend_nightly']:.0f}s = "
          f"{out['users_per_s']:.1f} users/s, peak {run['peak_rss_gib']:.2f} GiB", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", choices=tuple(SIZES), default=list(SIZES))
    ap.add_argument("--label", default="", help="suffix of the result files")
    ap.add_argument("--driver-memory", default="12g")
    ap.add_argument("--reuse", action="store_true", help="rerun recommend_nightly and publish_online on the tables "
                                                         "and champion an earlier run of the same size left")
    ap.add_argument("--champion-from", choices=tuple(SIZES), help="rank with the champion of an earlier run of this "
                                                                     "size instead of training one")
    ap.add_argument("--resume", action="store_true", help="continue a run of these sizes that was cut off: the "
                                                          "stages its pipeline.log has not finished")
    ap.add_argument("--rerun", nargs="*", default=[], help="with --resume: stages to run again though finished")
    ap.add_argument("--set", action="append", default=[], help="extra conf override for every run")
    args = ap.parse_args()
    results = {name: one_size(name, args) for name in args.sizes}
    command = "python benchmarks/nightly_scale.py " + " ".join(sys.argv[1:])
    name = "nightly_scale" + (f"_{args.label}" if args.label else "")
    payload = {"benchmark": name, "date": dt.date.today().isoformat(), "machine": machine(), "command": command,
               "sizes": results}
    lines = [f"# {name}", "", f"Measured {payload['date']} on {payload['machine']}; `{command}` (one `liverec "
             f"pipeline` process per size, driver memory {args.driver_memory}).", ""]
    stages = [s for s in (*NIGHTLY, *TRAINING, *SERVING) if any(s in r["stages"] for r in results.values())]
    heads = list(results)
    lines += ["| stage (s) | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for s in stages:
        lines.append(f"| {s}{' (weekly training)' if s in TRAINING else ''} | " +
                     " | ".join(f"{r['stages'][s]:.1f}" if s in r["stages"] else "-" for r in results.values()) + " |")
    rows = [("**nightly chain** (sum of its stages)", lambda r: f"**{r['chain_seconds']:.1f}**"),
            ("process wall time (JVM start, training included)", lambda r: f"{r['process']['seconds']:.1f}"),
            ("peak RSS of the process tree, GiB", lambda r: f"{r['process']['peak_rss_gib']:.2f}"),
            ("events / users / items generated", lambda r: f"{r['events']:,} / {r['users']:,} / {r['items']:,}"),
            ("active users ranked", lambda r: f"{r['active_users']:,}"),
            ("candidates per user", lambda r: f"{r['candidates'] / r['active_users']:.0f}" if r["candidates"] else "-"),
            ("**recommend_nightly users/s**", lambda r: f"**{r['users_per_s']:.1f}**")]
    for label, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(fmt(r) for r in results.values()) + " |")
    for n, r in results.items():
        if r.get("resumed"):
            lines += ["", f"{n}: a run cut off and resumed (`--resume`): {', '.join(r['resumed'])} ran in the second "
                          "process, whose wall time and peak memory are the ones above; the other stages' seconds come "
                          "from the first process's log."]
    steps = sorted({k for r in results.values() for k in r["recommend_steps"]},
                   key=lambda k: next(list(r["recommend_steps"]).index(k) for r in results.values()
                                      if k in r["recommend_steps"]))
    lines += ["", "recommend_nightly's steps (s, from its progress lines):", "",
              "| step | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for k in steps:
        lines.append(f"| {k} | " + " | ".join(f"{r['recommend_steps'][k]:.1f}" if k in r["recommend_steps"] else "-"
                                             for r in results.values()) + " |")
    if len(heads) > 1:
        growth = ", ".join(f"{results[b]['events'] / results[a]['events']:.0f}x"
                           for a, b in zip(heads, heads[1:], strict=False))
        lines += ["", f"Growth from one size to the next (ratio of seconds; events grow {growth}):", ""]
        for a, b in zip(heads, heads[1:], strict=False):
            ra, rb = results[a], results[b]
            lines.append(f"- {a} -> {b}: nightly chain x{rb['chain_seconds'] / ra['chain_seconds']:.1f}, "
                         f"recommend_nightly x{rb['stages']['recommend_nightly'] / ra['stages']['recommend_nightly']:.1f}"
                         f" for x{rb['active_users'] / ra['active_users']:.1f} users")
    write_results(name, payload, lines)
    (REPO / ".liverec" / f"{name}.json").write_text(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
