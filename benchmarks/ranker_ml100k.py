"""The deep ranker re-ranking ALS's top 200 on MovieLens 100K (the batch-core protocol), and training
throughput with 1 and 2 processes on CPU.

    python benchmarks/ranker_ml100k.py [--data ../shared/data] [--seeds 42 7 2024] [--quick]

Protocol: the per-user stratified random 75/25 split of ml-100k of benchmarks/ml100k_als.py (same seeds,
same hash), top 10, items seen in training removed, Spark's RankingEvaluator.
- ALS alone: the tuned ALS (conf defaults) fitted on the training part, its top 10.
- Ranker: training examples never touch the test part: the training part is split again (per user,
  75/25); features come from the inner 75% (profiles, an ALS fit, popularity, content vectors from the
  packaged MiniLM over titles + genres), labels from the inner 25% (positives, 20 hard negatives from
  ALS's top 100, 10 random negatives per user); 20% of the users validate (early stopping). At test
  time features come from the whole training part, ALS's top 200 per user are scored by the ranker
  and its top 10 are judged against the test part.
- Throughput: the same training run with 1 and with 2 TorchDistributor processes (gloo, CPU);
  examples/s over training steps (validation excluded).

Writes benchmarks/results/ranker_ml100k.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import statistics
import time
from pathlib import Path

import _ml100k
import pandas as pd
from _measure import machine, write_results
from pyspark.sql import functions as F

from liverec import evaluation, metrics
from liverec.config import load_settings
from liverec.ranker import examples as ex
from liverec.ranker import train
from liverec.ranker.registry import RankerModel, pyfunc_frame
from liverec.session import build_spark

REPO = Path(__file__).resolve().parents[1]


def ndcg_of(spark, ranked: pd.DataFrame, test: pd.DataFrame, k: int = 10) -> dict[str, float]:
    """ranked: user_id, item_id, score (any number per user); test: user_id, item_id."""
    ids = {i: n for n, i in enumerate(sorted(set(ranked["item_id"]) | set(test["item_id"])))}
    top = (ranked.sort_values(["user_id", "score"], ascending=[True, False]).groupby("user_id").head(k)
           .groupby("user_id")["item_id"].apply(lambda s: [float(ids[i]) for i in s]))
    labels = test.groupby("user_id")["item_id"].apply(lambda s: [float(ids[i]) for i in s])
    rows = [(u, top.get(u, []), lab) for u, lab in labels.items()]
    lists = spark.createDataFrame(rows, "user string, prediction array<double>, label array<double>")
    return metrics.accuracy(lists, k)


def one_seed(spark, settings, events, item_emb, seed: int, processes: list[int]) -> dict:
    conf = settings.ranker
    train_ev, test_ev = evaluation.random_split(events, 0.25, seed)
    train_ev, test_ev = train_ev.cache(), test_ev.cache()
    inner_hist, inner_label = evaluation.random_split(train_ev, 0.25, seed + 1)
    items = item_emb.select("item_id", "categories")
    ckpt = str(Path(settings.scratch_dir) / "ckpt")

    t = time.monotonic()
    f_in = ex.history_features(spark, inner_hist.cache(), items, item_emb, None, settings, b"k", ckpt)
    rows = ex.build_examples(f_in, inner_label.cache(), settings)
    vocab = ex.vocabulary(f_in).localCheckpoint()
    rows = ex.with_indices(rows, vocab).localCheckpoint()  # cut the lineage: the plan behind it is large
    n_examples = rows.count()
    examples_s = time.monotonic() - t
    print(f"seed {seed}: {n_examples:,} examples in {examples_s:.0f}s", flush=True)
    id_dim = settings.als.rank
    cache = (Path(settings.scratch_dir) / "petastorm").resolve().as_uri()
    runs = {}
    for world in processes:
        t = time.monotonic()
        runs[world] = train.fit(spark, rows, vocab, conf, id_dim, cache, world)
        r = runs[world]
        print(f"seed {seed}: {world} process(es): best val NDCG@10 {r.best_ndcg:.4f} at epoch {r.best_epoch}, "
              f"{r.examples_per_s:.0f} examples/s, {time.monotonic() - t:.0f}s", flush=True)
    result = runs[processes[-1]]
    vocab_map = {r["item_id"]: int(r["item_idx"]) for r in vocab.select("item_id", "item_idx").collect()}
    scorer = RankerModel.from_parts(result.shape, result.state, vocab_map, conf.recent_items)

    f_full = ex.history_features(spark, train_ev, items, item_emb, None, settings, b"k", ckpt)
    users = test_ev.select("user_id").distinct()
    cands = ex.candidate_pairs(f_full, users, conf.candidates)  # 200 by default: ALS's top 200 re-ranked
    feats = ex.assemble(cands.withColumn("rank", F.col("als_rank")), f_full, conf.recent_items, conf.candidates).select(
        "user_id", "item_id", F.col("rank").alias("als_rank"), "dense", "recent_items").toPandas()
    test = test_ev.select("user_id", "item_id").toPandas()
    t = time.monotonic()
    feats["ranker"] = scorer.scores(pyfunc_frame(feats))
    score_s = time.monotonic() - t
    als_only = ndcg_of(spark, feats.assign(score=-feats["als_rank"].astype(float)), test)
    reranked = ndcg_of(spark, feats.assign(score=feats["ranker"]), test)
    recall200 = feats.merge(test, on=["user_id", "item_id"]).shape[0] / len(test)
    print(f"seed {seed}: ALS nDCG@10 {als_only['ndcg']:.4f} -> re-ranked {reranked['ndcg']:.4f} "
          f"(recall of the 200 candidates {recall200:.3f})", flush=True)
    for df in (train_ev, test_ev):
        df.unpersist()
    return {"seed": seed, "examples": n_examples, "examples_seconds": examples_s, "als": als_only,
            "reranked": reranked, "candidate_recall@200": recall200, "scored_pairs": len(feats),
            "score_seconds": score_s,
            "training": {str(w): {"examples_per_s": r.examples_per_s, "best_val_ndcg@10": r.best_ndcg,
                                  "best_epoch": r.best_epoch, "epochs": len(r.history),
                                  "train_examples": r.train_examples, "device": r.device}
                         for w, r in runs.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 2024])
    ap.add_argument("--quick", action="store_true", help="one seed, 2 processes only")
    args = ap.parse_args()
    work = REPO / ".liverec" / "bench-ranker"
    settings = load_settings(overrides=[f"scratch_dir={work}", "spark.master=local[2]", "spark.shuffle_partitions=4",
                                        "spark.driver_memory=8g", "demo_mode=true"])
    spark = build_spark(settings, "bench-ranker")
    events, _, item_emb = _ml100k.load(spark, settings, args.data)
    seeds = args.seeds[:1] if args.quick else args.seeds
    runs = []
    for i, seed in enumerate(seeds):
        processes = [2] if args.quick or i > 0 else [1, 2]
        runs.append(one_seed(spark, settings, events, item_emb, seed, processes))
    als_ndcg = [r["als"]["ndcg"] for r in runs]
    rr_ndcg = [r["reranked"]["ndcg"] for r in runs]
    lift = [b / a - 1 for a, b in zip(als_ndcg, rr_ndcg, strict=True)]
    payload = {"machine": machine(), "date": dt.date.today().isoformat(), "runs": runs,
               "ranker_conf": dataclasses.asdict(settings.ranker),
               "als_ndcg@10_mean": statistics.mean(als_ndcg), "reranked_ndcg@10_mean": statistics.mean(rr_ndcg),
               "relative_lift_mean": statistics.mean(lift)}
    first = runs[0]["training"]
    lines = ["# Deep ranker on MovieLens 100K: re-ranking ALS's top 200", "",
             f"Machine: {machine()}. Command: `cd benchmarks && python ranker_ml100k.py`", "",
             "| seed | ALS nDCG@10 | re-ranked nDCG@10 | relative | ALS P@10 | re-ranked P@10 | recall of 200 candidates "
             "| examples |", "|---|---|---|---|---|---|---|---|"]
    for r, d in zip(runs, lift, strict=True):
        lines.append(f"| {r['seed']} | {r['als']['ndcg']:.4f} | {r['reranked']['ndcg']:.4f} | {d:+.1%} | "
                     f"{r['als']['precision']:.4f} | {r['reranked']['precision']:.4f} | "
                     f"{r['candidate_recall@200']:.3f} | {r['examples']:,} |")
    lines += ["", f"Mean: ALS {statistics.mean(als_ndcg):.4f}, re-ranked {statistics.mean(rr_ndcg):.4f} "
              f"({statistics.mean(lift):+.1%}; target +5%, aim 0.50).", "",
              "## Training throughput (seed " + str(runs[0]["seed"]) + ", CPU, gloo)", "",
              "| processes | examples/s | best val NDCG@10 | best epoch / epochs run |", "|---|---|---|---|"]
    for w, t in first.items():
        lines.append(f"| {w} | {t['examples_per_s']:.0f} | {t['best_val_ndcg@10']:.4f} | "
                     f"{t['best_epoch']} / {t['epochs']} |")
    lines += ["", "No GPU was lent to this session: the `use_gpu=True` (NCCL) path has not been measured."]
    write_results("ranker_ml100k", payload, lines)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
