"""Does feedback flow into the next model for the better? ``ranker.impression_negatives`` on MovieLens 100K, end
to end: the nDCG@10 of the published table (gold.recommendations) with and without the impressions users saw and
did not click as the ranker's negatives.

    python benchmarks/feedback_loop_ml100k.py [--data ../shared/data/ml-100k] [--seeds 42 7 2024] [--label NAME]

Protocol, per seed (the held-out part is ``product_ml100k``'s: a per-user 25% of the ratings, never seen here):

1. Each user's training ratings are cut in time: the newest 20% (B, at least one) come after the cut, the rest
   (A) before. Round 1: the pipeline runs on A and publishes its lists (gold.recommendations, every user).
2. Each user is shown round 1's list just before their first rating of B: impressions
   (``liverec.impressions.rows_of``, propensity 1: the nightly list is deterministic, so this measures the
   negatives, not the inverse-propensity weights). ``liverec.impressions.attribute`` credits the user's B ratings
   to them (rating is one of feedback.click_events; the window reaches past the last rating) and the rows are
   appended to gold.feedback of round 2's lakehouse (a Spark step of this script, in its own process; the
   impressions span many days, which ``collect_feedback``, one day per run, would need one run per day for).
3. Round 2, "with": the pipeline on the whole training part (A and B), ``ranker.impression_negatives=true``.
4. Round 2, "without": the same pipeline on the same data, the option off (what ``product_ml100k`` runs).

Both round-2 tables are scored with numpy against the held-out part (``product_ml100k.ndcg_precision``). Writes
benchmarks/results/feedback_loop_ml100k[_<label>].{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
from _measure import isolated_args, machine, run_measured, write_results
from product_ml100k import DS, OVERLAY, REPO, load, ndcg_precision, read_table, split

STAGES = "ingest,clean,embed_items,build_profiles,train_als,train_ease,build_ranker_examples,train_ranker," \
         "recommend_nightly"
LATER = 0.2  # the share of each user's training ratings after their cut (B)


def write_movielens(folder: Path, rows: np.ndarray, data: Path) -> None:
    folder.mkdir(parents=True)
    np.savetxt(folder / "u.data", rows, fmt="%d", delimiter="\t")
    for name in ("u.item", "u.genre"):
        shutil.copy(data / name, folder / name)


def pipeline(work: Path, folder: Path, extra: list[str]) -> dict:
    cmd = [str(Path(sys.executable).parent / "liverec"), "pipeline", "--ds", DS, "--source", "movielens", "--input",
           str(folder), "--stages", STAGES, *isolated_args(work, "6g"), *OVERLAY, *extra]
    return run_measured(cmd, {**os.environ, "PYSPARK_PYTHON": sys.executable}, work / "pipeline.log")


def published(lakehouse: Path, pseudo: dict[str, int]) -> dict[int, list[int]]:
    recs = read_table(lakehouse / "gold" / "recommendations",
                      f"select user_id, item_id, rank from t where ds = '{DS}'")
    out: dict[int, list[tuple[int, int]]] = {}
    for u, i, r in zip(recs["user_id"], recs["item_id"], recs["rank"], strict=True):
        out.setdefault(pseudo[u], []).append((int(r), int(i)))
    return {u: [i for _, i in sorted(v)] for u, v in out.items()}


def cut_per_user(tr: np.ndarray) -> np.ndarray:
    """A mask of each user's newest LATER share of ratings (at least one; ties in time by row order)."""
    later = np.zeros(len(tr), dtype=bool)
    order = np.lexsort((np.arange(len(tr)), tr[:, 3], tr[:, 0]))
    bounds = np.r_[0, np.flatnonzero(np.diff(tr[order, 0])) + 1, len(tr)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        n = max(1, int(round((b - a) * LATER)))
        later[order[b - n:b]] = True
    return later


def write_feedback(work: Path, shown: Path, events: Path, window: int) -> None:
    """In its own process (``--write-feedback``): the impressions and events files -> liverec.impressions.attribute
    -> appended to gold.feedback of ``work``'s lakehouse."""
    from pyspark.sql import functions as F

    from liverec import impressions, lakehouse, tables
    from liverec.config import load_settings
    from liverec.session import build_spark

    settings = load_settings(overrides=[x for x in isolated_args(work, "4g") if x != "--set"])
    spark = build_spark(settings, "feedback-loop")
    rows = impressions.typed(spark.read.schema(impressions.landing_schema()).json(str(shown)))
    ev = (spark.read.json(str(events)).select("event_id", "user_id", "item_id", "event_type",
                                             F.timestamp_seconds("ts").alias("ts")))
    feedback = impressions.attribute(rows, ev, window, ("rating",))
    lakehouse.append(spark, settings, tables.FEEDBACK, feedback)
    written = lakehouse.read(spark, settings, tables.FEEDBACK)
    print(f"gold.feedback: {written.count():,} impressions, {written.where(F.col('clicked')).count():,} clicked")
    spark.stop()


def one_seed(args: argparse.Namespace, rows: np.ndarray, seed: int) -> dict:
    import json

    from liverec import impressions
    from liverec.cleaning import pseudonymise_value
    from liverec.config import load_settings

    data = Path(args.data)
    train, test = split(rows, seed)
    tr = rows[train]
    later = cut_per_user(tr)
    a, b = tr[~later], tr[later]
    key = load_settings(overrides=["demo_mode=true"]).ids.demo_key.encode()
    pseudo = {pseudonymise_value(str(u), key): int(u) for u in np.unique(rows[:, 0])}
    raw_to_pseudo = {v: k for k, v in pseudo.items()}
    test_sets: dict[int, set[int]] = {}
    for u, i in rows[test, :2]:
        test_sets.setdefault(int(u), set()).add(int(i))
    root = REPO / ".liverec" / "bench-loop" / f"{args.label or 'run'}-{seed}"
    if root.exists():
        shutil.rmtree(root)
    runs: dict[str, dict] = {}

    # round 1: what the pipeline publishes from A alone
    r1 = root / "round1"
    write_movielens(r1 / "ml-100k-a", a, data)
    runs["round1"] = pipeline(r1, r1 / "ml-100k-a", [])
    lists = published(r1 / "lakehouse", pseudo)

    # round 1's list shown to each user just before their first rating of B, and B's ratings as events
    first_b = {}
    for u, _, _, t in b:
        first_b[int(u)] = min(first_b.get(int(u), t), int(t))
    later_pairs = {(int(u), int(i)) for u, i in b[:, :2]}
    with_ = root / "with"
    (with_ / "loop").mkdir(parents=True)
    shown = clicked = 0
    with open(with_ / "loop" / "impressions.jsonl", "wb") as fh:
        for u in sorted(set(first_b) & set(lists)):
            for r in impressions.rows_of(f"loop-{seed}-{u}", raw_to_pseudo[u], [
                    {"item_id": str(i), "score": 1.0 / p, "propensity": 1.0} for p, i in enumerate(lists[u], start=1)],
                    "round1", "nightly", False, first_b[u] - 1):
                fh.write(json.dumps(r).encode() + b"\n")
            shown += len(lists[u])
            clicked += sum((u, i) in later_pairs for i in lists[u])
    with open(with_ / "loop" / "events.jsonl", "w") as fh:
        for n, (u, i, _, t) in enumerate(b):
            fh.write(json.dumps({"event_id": f"b{n}", "user_id": raw_to_pseudo[int(u)], "item_id": str(int(i)),
                                 "event_type": "rating", "ts": int(t)}) + "\n")
    window = int(tr[:, 3].max() - tr[:, 3].min()) + 1
    runs["feedback"] = run_measured([sys.executable, __file__, "--write-feedback", str(with_),
                                     str(with_ / "loop" / "impressions.jsonl"), str(with_ / "loop" / "events.jsonl"),
                                     str(window)], {**os.environ, "PYSPARK_PYTHON": sys.executable},
                                    with_ / "feedback.log")
    print(f"seed {seed}: A {len(a):,} / B {len(b):,} ratings, {shown:,} impressions to "
          f"{len(set(first_b) & set(lists)):,} users, {clicked:,} rated after", flush=True)

    # round 2, with and without the impressions' non-clicks as negatives
    first_day = dt.datetime.fromtimestamp(float(tr[:, 3].min()), dt.UTC).date()
    days = (dt.date.fromisoformat(DS) - first_day).days + 1
    write_movielens(with_ / "ml-100k-train", tr, data)
    runs["with"] = pipeline(with_, with_ / "ml-100k-train", ["--set", "ranker.impression_negatives=true", "--set",
                                                             f"ranker.impression_days={days}"])
    without = root / "without"
    write_movielens(without / "ml-100k-train", tr, data)
    runs["without"] = pipeline(without, without / "ml-100k-train", [])
    models = {"round1 (A only)": ndcg_precision(lists, test_sets),
              "without": ndcg_precision(published(without / "lakehouse", pseudo), test_sets),
              "with impression negatives": ndcg_precision(published(with_ / "lakehouse", pseudo), test_sets)}
    print(f"seed {seed}: " + ", ".join(f"{m} {v['ndcg']:.4f}" for m, v in models.items()), flush=True)
    return {"seed": seed, "a": len(a), "b": len(b), "impressions": shown, "clicked": clicked,
            "users_shown": len(set(first_b) & set(lists)), "negatives_used": negatives_in(with_ / "pipeline.log"),
            "models": models, "seconds": {k: round(v["seconds"], 1) for k, v in runs.items()}}


def negatives_in(log: Path) -> int:
    """The training negatives build_ranker_examples took from the impressions (its progress line)."""
    for line in log.read_text().splitlines():
        if "] impression negatives:" in line:
            return int(line.split("impression negatives:")[1].split("rows")[0].strip().replace(",", ""))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 2024])
    ap.add_argument("--label", default="")
    ap.add_argument("--write-feedback", nargs=4, metavar=("WORK", "IMPRESSIONS", "EVENTS", "WINDOW"),
                    help=argparse.SUPPRESS)  # the Spark step of one seed, run in its own process
    args = ap.parse_args()
    if args.write_feedback:
        work, shown, events, window = args.write_feedback
        write_feedback(Path(work), Path(shown), Path(events), int(window))
        return 0
    rows = load(Path(args.data))
    results = [one_seed(args, rows, s) for s in args.seeds]
    name = "feedback_loop_ml100k" + (f"_{args.label}" if args.label else "")
    names = list(results[0]["models"])
    mean = {m: statistics.mean(r["models"][m]["ndcg"] for r in results) for m in names}
    command = "python benchmarks/feedback_loop_ml100k.py " + " ".join(sys.argv[1:])
    payload = {"benchmark": name, "date": dt.date.today().isoformat(), "machine": machine(), "command": command,
               "seeds": results, "mean_ndcg": mean}
    lines = [f"# {name}", "", f"Measured {payload['date']} on {payload['machine']}; `{command}`.", "",
             "ml-100k, product_ml100k's per-user 75/25 split; round 1 trains on each user's older 80% of training "
             "ratings (A) and its list is shown to the user just before their newest 20% (B), a rating of B on a "
             "shown item being a click; round 2 trains on the whole training part, with or without those "
             "impressions' non-clicks as ranker negatives (ranker.impression_negatives). nDCG@10 of "
             "gold.recommendations on the held-out part.", "",
             "| | " + " | ".join(f"seed {r['seed']}" for r in results) + " | mean |",
             "|---" * (len(results) + 2) + "|"]
    for m in names:
        lines.append(f"| {m} | " + " | ".join(f"{r['models'][m]['ndcg']:.4f}" for r in results) + f" | {mean[m]:.4f} |")
    lines += ["", "| seed | ratings A / B | impressions (users) | rated in B | negatives used in training | "
              "seconds |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['seed']} | {r['a']:,} / {r['b']:,} | {r['impressions']:,} ({r['users_shown']:,}) | "
                     f"{r['clicked']:,} | {r['negatives_used']:,} | "
                     + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()) + " |")
    write_results(name, payload, lines + [""])
    return 0


if __name__ == "__main__":
    sys.exit(main())
