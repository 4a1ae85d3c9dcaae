"""NDCG@10 against intra-list diversity over the MMR lambda, on MovieLens 100K.

    python benchmarks/mmr_ml100k.py [--data ../shared/data] [--seeds 42 7 2024] [--pool 50]

Protocol: the batch-core per-user stratified random 75/25 split (benchmarks/ml100k_als.py's seeds and
hash), the tuned ALS (conf defaults) fitted on the training part, each user's best ``--pool`` unseen
items by ALS score, then the nightly job's own MMR (``liverec.diversity.pools`` + ``mmr_batch``: relevance = score
min-max scaled within the pool, similarity = cosine of the packaged MiniLM's title + genre
embeddings) picks 10 for every lambda. Relevance comes from ALS, not the deep ranker: ALS keeps the
curve reproducible without a training run per seed (benchmarks/product_ml100k.py measures MMR on the
published table itself).

Diversity is reported twice: intra-list diversity (mean 1 - cosine over the pairs of a list) with the
text embeddings MMR uses, and with the items' genre vectors (multi-hot; an independent view).

Writes benchmarks/results/mmr_ml100k.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from pathlib import Path

import _ml100k
import numpy as np
import pandas as pd
from _measure import machine, write_results
from pyspark.sql import functions as F

from liverec import als, diversity, splits, vectors
from liverec.config import load_settings
from liverec.session import build_spark

REPO = Path(__file__).resolve().parents[1]
LAMBDAS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.0)


def ild(lists: pd.DataFrame, vecs: dict[str, np.ndarray]) -> float:
    """Mean over users of mean (1 - cosine) over the pairs of the user's list."""
    values = []
    for items in lists.groupby("user_id")["item_id"].apply(list):
        m = np.stack([vecs[i] for i in items if i in vecs])
        m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
        n = len(m)
        if n > 1:
            values.append(1.0 - (float((m @ m.T).sum()) - n) / (n * (n - 1)))
    return float(np.mean(values))


def mmr_lists(lists: pd.DataFrame, unit: dict[str, np.ndarray], n: int, lam: float, pool: int) -> pd.DataFrame:
    """(user_id, item_id, rank) that the nightly job's MMR (``diversity.pools`` + ``diversity.mmr_batch``) picks
    from each user's scored rows (in item id order), every user's list in one batch."""
    users, groups = zip(*lists.groupby("user_id", sort=True), strict=True)
    chosen, rel = diversity.pools([g["score"].to_numpy() for g in groups], max(pool, n))
    dim = len(next(iter(unit.values())))
    vecs = np.zeros((len(groups), rel.shape[1], dim), dtype=np.float32)
    for j, (g, c) in enumerate(zip(groups, chosen, strict=True)):
        vecs[j, :len(c)] = [unit.get(i, np.zeros(dim, dtype=np.float32)) for i in g["item_id"].to_numpy()[c]]
    picks = diversity.mmr_batch(rel, vecs @ vecs.transpose(0, 2, 1), np.array([len(c) for c in chosen]), n, lam)
    out = [(u, r + 1, g["item_id"].to_numpy()[c[p]]) for u, g, c, row in zip(users, groups, chosen, picks, strict=True)
           for r, p in enumerate(row) if p >= 0]
    return pd.DataFrame(out, columns=["user_id", "rank", "item_id"])


def one_seed(spark, settings, events, item_emb, genre_vecs, text_vecs, seed: int, pool: int) -> list[dict]:
    train, test = splits.random_split(events, 0.25, seed)
    pairs = als.strengths(train, settings.als, settings.clean.event_weights).cache()
    users, items = als.index_ids(pairs)
    ratings = pairs.join(users, "user_id").join(items, "item_id").select("user_idx", "item_idx", "strength")
    model = als.fit(spark, ratings, settings.als, str(Path(settings.scratch_dir) / "ckpt"))
    uf, itf = als.factor_frames(model, users, items)
    seen = (pairs.join(users, "user_id").join(items, "item_id").groupBy("user_idx")
            .agg(F.collect_list("item_idx").alias("seen")))
    top = vectors.top_k(uf.select("user_idx", "features"), itf.select("item_idx", "features"), seen, pool)
    scored = (top.select("user_idx", F.posexplode(F.arrays_zip("items", "scores")).alias("p", "x"))
              .join(uf.select("user_id", "user_idx"), "user_idx")
              .join(itf.select(F.col("item_idx").alias("ii"), "item_id"), F.col("x.items") == F.col("ii"))
              .select("user_id", "item_id", F.col("x.scores").alias("score"))).localCheckpoint()
    test_pd = test.select("user_id", "item_id").toPandas()
    rows = []
    lists = scored.toPandas().sort_values(["user_id", "item_id"])
    emb = item_emb.toPandas()
    unit = dict(zip(emb["item_id"], diversity.unit_rows(np.stack(emb["features"].to_numpy())), strict=True))
    for lam in LAMBDAS:
        t = time.monotonic()
        picked = mmr_lists(lists, unit, 10, lam, pool)
        seconds = time.monotonic() - t
        m = _ml100k.ndcg_of(spark, picked.assign(score=-picked["rank"].astype(float)), test_pd)
        rows.append({"seed": seed, "lambda": lam, "ndcg@10": m["ndcg"], "precision@10": m["precision"],
                     "ild_text": ild(picked, text_vecs), "ild_genre": ild(picked, genre_vecs),
                     "users": int(picked["user_id"].nunique()), "mmr_seconds": seconds})
        print(f"seed {seed} lambda {lam}: nDCG@10 {m['ndcg']:.4f}, ILD text {rows[-1]['ild_text']:.3f}, "
              f"genre {rows[-1]['ild_genre']:.3f} ({seconds:.1f}s)", flush=True)
    pairs.unpersist()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 2024])
    ap.add_argument("--pool", type=int, help="candidates per user MMR picks from (default: conf recommend.mmr_pool)")
    args = ap.parse_args()
    work = REPO / ".liverec" / "bench-mmr"
    settings = load_settings(overrides=[f"scratch_dir={work}", "spark.master=local[2]", "spark.shuffle_partitions=4",
                                        "spark.driver_memory=6g", "demo_mode=true"])
    spark = build_spark(settings, "bench-mmr")
    args.pool = args.pool or settings.recommend.mmr_pool
    events, items, item_emb = _ml100k.load(spark, settings, args.data)
    emb = item_emb.select("item_id", F.col("embedding").alias("features")).localCheckpoint()
    emb_pd = emb.toPandas()
    text_vecs = {i: np.asarray(v, dtype=np.float32) for i, v in zip(emb_pd["item_id"], emb_pd["features"], strict=True)}
    genres = items.select("item_id", "categories").toPandas()
    names = sorted({g for gs in genres["categories"] for g in gs})
    genre_vecs = {i: np.array([1.0 if n in gs else 0.0 for n in names])
                  for i, gs in zip(genres["item_id"], genres["categories"], strict=True)}
    rows = []
    for seed in args.seeds:
        rows += one_seed(spark, settings, events, emb, genre_vecs, text_vecs, seed, args.pool)
    table = pd.DataFrame(rows)
    mean = table.groupby("lambda", sort=False)[["ndcg@10", "ild_text", "ild_genre", "mmr_seconds"]].mean()
    std = table.groupby("lambda", sort=False)["ndcg@10"].std()
    base = mean.loc[1.0, "ndcg@10"]
    payload = {"machine": machine(), "date": dt.date.today().isoformat(), "pool": args.pool, "seeds": args.seeds,
               "runs": rows, "mean": mean.reset_index().to_dict(orient="records")}
    lines = ["# MMR on MovieLens 100K: NDCG@10 against intra-list diversity", "",
             f"Machine: {machine()}. Command: `cd benchmarks && python mmr_ml100k.py` (seeds "
             f"{', '.join(map(str, args.seeds))}; ALS relevance, pool {args.pool}, 10 picked per user).", "",
             "| lambda | nDCG@10 (mean ± sd) | vs lambda 1 | ILD, text embeddings | ILD, genres |",
             "|---|---|---|---|---|"]
    for lam, r in mean.iterrows():
        lines.append(f"| {lam} | {r['ndcg@10']:.4f} ± {std.loc[lam]:.4f} | {r['ndcg@10'] / base - 1:+.1%} | "
                     f"{r['ild_text']:.3f} | {r['ild_genre']:.3f} |")
    lines += ["", "lambda 1 is the list by score alone (ALS's top 10); lambda 0 ignores relevance after the first "
              "pick. The nightly default (conf recommend.mmr_lambda) is chosen from this table.",
              "", f"MMR time (Spark applyInPandas, 943 users x {args.pool} candidates): "
              f"{statistics.mean(r['mmr_seconds'] for r in rows):.1f}s per lambda on average."]
    write_results("mmr_ml100k", payload, lines)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
