"""Every ranking metric liverec reports, defined once, computed in Spark.

Accuracy metrics are Spark's ``RankingEvaluator`` (precisionAtK, recallAtK, ndcgAtK,
meanAveragePrecisionAtK with binary relevance), so the numbers match its published definitions.
Beyond accuracy:

- hit_rate@K: share of users with at least one relevant item in their top K.
- coverage@K: distinct items recommended to anyone / items in the catalogue.
- diversity@K (intra-list): mean over users of 1 - mean pairwise cosine similarity of the item
  vectors in the list (ALS item factors here; text embeddings once they exist).
- novelty@K: mean over recommended items of -log2(share of training users who interacted with it).

Exposure and calibration (``exposure``, ``calibration``):

- exposure of an item: the sum over the lists that show it of 1 / log2(position + 1) (a position-discounted view).
- exposure_gini@K: the Gini coefficient of the items' exposure over every catalogue item (those never shown count
  0): 0 when every item gets the same exposure, towards 1 when a few get it all.
- tail_exposure@K: the share of all exposure that goes to the long tail, the items outside the top ``HEAD_SHARE``
  (20%) of the catalogue by training popularity (distinct users); tail_interactions: the tail's share of the
  training interactions (distinct user-item pairs), the level a popularity-neutral list would match.
- avg_popularity@K: mean over users of the mean, over their list, of the share of training users who interacted
  with the item.
- calibration_kl@K: mean over users of KL(p || q~), p the category mix of the user's training items and q~ that of
  their list smoothed towards p, ``(1 - CALIBRATION_ALPHA) q + CALIBRATION_ALPHA p`` (Steck, "Calibrated
  Recommendations", 2018); an item with several categories counts 1 / their number to each. Natural logarithm;
  users whose items have no category are left out.
- category_exposure_gap@K: how far exposure per category group is from the groups' share of the training
  interactions: the total variation distance 1/2 sum_c |e_c - t_c|, e_c the category's share of all
  position-discounted exposure, t_c its share of the training (user, item) pairs (an item with several categories
  gives 1 / their number to each); 0 = every group is shown in proportion to how much it is used.

The ranker's own measures, on pandas/numpy rows (training processes and the promotion gate have no Spark
job to run): ``ndcg_at_k`` (grouped scores and labels, the training loop's validation NDCG) and
``top_n_ndcg`` / ``list_quality`` (the gate's NDCG@N of each side's top N, ideal DCG over min(labels, N)).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from liverec.diversity import CALIBRATION_ALPHA

ACCURACY = {"precision": "precisionAtK", "recall": "recallAtK", "ndcg": "ndcgAtK",
            "map": "meanAveragePrecisionAtK"}
HEAD_SHARE = 0.2  # the head: this share of the catalogue's items, the most popular in training; the rest is the tail


def accuracy(lists: DataFrame, k: int) -> dict[str, float]:
    """lists: (prediction array<double>, label array<double>) per user, predictions best first."""
    lists = lists.select("prediction", "label").cache()  # four passes below: compute the lists once
    out = {}
    for name, metric in ACCURACY.items():
        ev = RankingEvaluator(predictionCol="prediction", labelCol="label", metricName=metric, k=k)
        out[name] = float(ev.evaluate(lists))
    lists.unpersist()
    return out


def hit_rate(lists: DataFrame, k: int) -> float:
    hits = lists.select(F.size(F.array_intersect(F.slice("prediction", 1, k), "label")).alias("h"))
    return float(hits.agg(F.avg((F.col("h") > 0).cast("double"))).collect()[0][0] or 0.0)


def coverage(lists: DataFrame, k: int, catalogue_size: int) -> float:
    distinct = lists.select(F.explode(F.slice("prediction", 1, k)).alias("i")).distinct().count()
    return distinct / catalogue_size if catalogue_size else 0.0


def _normalised(vectors: DataFrame) -> DataFrame:
    norm = F.sqrt(F.aggregate(F.transform("features", lambda x: x * x), F.lit(0.0), lambda a, x: a + x))
    return vectors.select(F.col("item_idx").cast("double").alias("i"),
                          F.transform("features", lambda x: x / F.greatest(norm, F.lit(1e-12))).alias("v"))


def diversity(lists: DataFrame, k: int, item_vectors: DataFrame) -> float:
    """item_vectors: (item_idx, features)."""
    vecs = _normalised(item_vectors)
    exploded = lists.select("user", F.posexplode(F.slice("prediction", 1, k)).alias("p", "i")).join(vecs, "i")
    a, b = exploded.alias("a"), exploded.alias("b")
    pairs = a.join(b, (F.col("a.user") == F.col("b.user")) & (F.col("a.p") < F.col("b.p")))
    cos = F.aggregate(F.zip_with("a.v", "b.v", lambda x, y: x * y), F.lit(0.0), lambda acc, x: acc + x)
    per_user = pairs.groupBy(F.col("a.user").alias("user")).agg(F.avg(cos).alias("sim"))
    value = per_user.agg(F.avg(1.0 - F.col("sim"))).collect()[0][0]
    return float(value) if value is not None else 0.0


def novelty(lists: DataFrame, k: int, popularity: DataFrame, n_users: int) -> float:
    """popularity: (item_idx, users) = distinct training users per item."""
    pop = popularity.select(F.col("item_idx").cast("double").alias("i"), "users")
    recs = lists.select(F.explode(F.slice("prediction", 1, k)).alias("i")).join(pop, "i", "left")
    value = recs.agg(F.avg(-F.log2(F.greatest(F.coalesce(F.col("users"), F.lit(0)), F.lit(1)) / n_users)))
    got = value.collect()[0][0]
    return float(got) if got is not None else 0.0


def _discount(position: str) -> Column:
    """The exposure of a 0-based list position: 1 / log2(position + 2) (module doc)."""
    return 1.0 / F.log2(F.col(position) + 2.0)


def gini(values: np.ndarray) -> float:
    """The Gini coefficient of non-negative values: sum_i (2 i - n - 1) x_(i) / (n sum x), x sorted ascending."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n, total = len(x), float(x.sum())
    if n == 0 or total <= 0:
        return 0.0
    return float(((2 * np.arange(1, n + 1) - n - 1) * x).sum() / (n * total))


def exposure(lists: DataFrame, k: int, popularity: DataFrame, n_users: int) -> dict[str, float]:
    """exposure_gini, tail_exposure, tail_interactions and avg_popularity (module doc) of ``lists`` (user,
    prediction) against ``popularity`` (item_idx, users: the catalogue's items, distinct training users each). The
    per-item vectors are catalogue-sized and come to the driver."""
    shown = lists.select("user", F.posexplode(F.slice("prediction", 1, k)).alias("p", "i"))
    pop = popularity.select(F.col("item_idx").cast("double").alias("i"), F.col("users").cast("double"))
    per_item = shown.groupBy("i").agg(F.sum(_discount("p")).alias("e")).toPandas()
    counts = pop.toPandas()
    universe = pd.merge(counts, per_item, on="i", how="outer").fillna(0.0)  # shown items outside training count 0
    order = counts.sort_values(["users", "i"], ascending=[False, True])["i"].to_numpy()
    head = set(order[:int(np.ceil(HEAD_SHARE * len(order)))].tolist())
    tail = ~universe["i"].isin(head)
    total_e, total_u = float(universe["e"].sum()), float(universe["users"].sum())
    per_user = (shown.join(pop, "i", "left").groupBy("user")
                .agg(F.avg(F.coalesce(F.col("users"), F.lit(0.0)) / float(max(n_users, 1))).alias("a")))
    avg_pop = per_user.agg(F.avg("a")).collect()[0][0]
    return {"exposure_gini": gini(universe["e"].to_numpy()),
            "tail_exposure": float(universe.loc[tail, "e"].sum()) / total_e if total_e else 0.0,
            "tail_interactions": float(universe.loc[tail, "users"].sum()) / total_u if total_u else 0.0,
            "avg_popularity": float(avg_pop) if avg_pop is not None else 0.0}


def _category_weights(categories: DataFrame) -> DataFrame:
    """(i, c, w): each item's categories, 1 / their number each (item_idx as double, as the lists hold it)."""
    cats = (categories.select(F.col("item_idx").cast("double").alias("i"), F.explode_outer("categories").alias("c"))
            .where(F.col("c").isNotNull()))
    share = cats.groupBy("i").agg(F.count("*").alias("n"))
    return cats.join(share, "i").select("i", "c", (1.0 / F.col("n")).alias("w"))


def category_exposure(lists: DataFrame, k: int, history: DataFrame, categories: DataFrame) -> float:
    """category_exposure_gap (module doc): ``history`` (user, item_idx) the training pairs, ``categories`` (item_idx,
    categories array<string>)."""
    cats = _category_weights(categories)
    shown = lists.select(F.posexplode(F.slice("prediction", 1, k)).alias("p", "i"))
    got = (shown.join(cats, "i").groupBy("c").agg(F.sum(F.col("w") * _discount("p")).alias("e"))
           .join(history.select(F.col("item_idx").cast("double").alias("i")).join(cats, "i").groupBy("c")
                 .agg(F.sum("w").alias("t")), "c", "full").fillna(0.0).toPandas())
    if got.empty or got["e"].sum() <= 0 or got["t"].sum() <= 0:
        return float("nan")
    return float(0.5 * (got["e"] / got["e"].sum() - got["t"] / got["t"].sum()).abs().sum())


def calibration(lists: DataFrame, k: int, history: DataFrame, categories: DataFrame) -> float:
    """calibration_kl (module doc): ``history`` (user, item_idx) the training items, ``categories`` (item_idx,
    categories array<string>)."""
    cats = _category_weights(categories)

    def mix(rows: DataFrame, name: str) -> DataFrame:
        per = rows.join(cats, "i").groupBy("user", "c").agg(F.sum("w").alias("w"))
        tot = per.groupBy("user").agg(F.sum("w").alias("t"))
        return per.join(tot, "user").select("user", "c", (F.col("w") / F.col("t")).alias(name))

    p = mix(history.select("user", F.col("item_idx").cast("double").alias("i")), "p")
    q = mix(lists.select("user", F.explode(F.slice("prediction", 1, k)).alias("i")), "q")
    users = q.select("user").distinct()
    a = CALIBRATION_ALPHA
    terms = (p.join(users, "user").join(q, ["user", "c"], "left")
             .select("user", (F.col("p") * F.log(F.col("p") / ((1 - a) * F.coalesce(F.col("q"), F.lit(0.0))
                                                                + a * F.col("p")))).alias("t")))
    value = terms.groupBy("user").agg(F.sum("t").alias("kl")).agg(F.avg("kl")).collect()[0][0]
    return float(value) if value is not None else float("nan")


def all_metrics(lists: DataFrame, k: int, catalogue_size: int, item_vectors: DataFrame, popularity: DataFrame,
                n_users: int, history: DataFrame | None = None, categories: DataFrame | None = None
                ) -> dict[str, float]:
    """lists: (user, prediction array<double>, label array<double>); with ``history`` (user, item_idx) and
    ``categories`` (item_idx, categories), the calibration too."""
    lists = lists.cache()
    out = accuracy(lists, k)
    out["hit_rate"] = hit_rate(lists, k)
    out["coverage"] = coverage(lists, k, catalogue_size)
    out["diversity"] = diversity(lists, k, item_vectors)
    out["novelty"] = novelty(lists, k, popularity, n_users)
    out.update(exposure(lists, k, popularity, n_users))
    if history is not None and categories is not None:
        out["calibration_kl"] = calibration(lists, k, history, categories)
        out["category_exposure_gap"] = category_exposure(lists, k, history, categories)
    out["users"] = float(lists.count())
    lists.unpersist()
    return out


# --------------------------------------------------------------------------- ranker lists (numpy)

def ndcg_at_k(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over groups (users) that have at least one positive: the validation metric."""
    order = np.lexsort((-scores, groups))
    g, lab = groups[order], labels[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ends = np.r_[starts[1:], len(g)]
    total, n = 0.0, 0
    for s, e in zip(starts, ends, strict=True):
        rel = lab[s:e]
        n_pos = int(rel.sum())
        if n_pos == 0:
            continue
        top = rel[:k]
        dcg = float((top / np.log2(np.arange(2, len(top) + 2))).sum())
        idcg = float((1.0 / np.log2(np.arange(2, min(n_pos, k) + 2))).sum())
        total += dcg / idcg
        n += 1
    return total / n if n else 0.0


def top_n_ndcg(rows: pd.DataFrame, order: np.ndarray, n: int) -> float:
    """Mean NDCG@n over the users of ``rows`` (user_id, label, n_labels) when each user's list is their rows by
    ``order`` (higher first; NaN = not in the list), the ideal DCG over min(n_labels, n) items."""
    if rows.empty:
        return 0.0
    frame = pd.DataFrame({"u": rows["user_id"].to_numpy(), "o": np.asarray(order, dtype=np.float64),
                          "y": rows["label"].to_numpy(dtype=np.float64),
                          "m": rows["n_labels"].to_numpy(dtype=np.int64)})
    listed = frame[np.isfinite(frame["o"])].sort_values(["u", "o"], ascending=[True, False], kind="stable")
    listed = listed.assign(pos=listed.groupby("u").cumcount()).query(f"pos < {n}")
    disc = 1.0 / np.log2(np.arange(2, n + 2))
    dcg = (listed["y"] * disc[listed["pos"].to_numpy()]).groupby(listed["u"]).sum()
    users = frame.groupby("u")["m"].first()
    ideal = np.cumsum(disc)[np.minimum(users.to_numpy(), n) - 1]
    return float((dcg.reindex(users.index, fill_value=0.0).to_numpy() / ideal).mean())


def list_quality(rows: pd.DataFrame, scores: np.ndarray, n: int, baselines: tuple[str, ...] = ("ease", "als")
                 ) -> dict[str, float]:
    """NDCG@n on the validation users of ``rows`` (validation examples: every candidate of the user, with
    label, n_labels, <baseline>_rank) for the ranker's ``scores`` and for each baseline's own list (its ranks; a
    baseline without any rank on these rows is left out)."""
    out = {"ranker": top_n_ndcg(rows, scores, n)}
    for name in baselines:
        rank = rows[f"{name}_rank"].to_numpy(dtype=np.float64) if f"{name}_rank" in rows else np.array([np.nan])
        if np.isfinite(rank).any():
            out[name] = top_n_ndcg(rows, -rank, n)
    return out
