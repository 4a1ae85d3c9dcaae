"""The candidates the ranker ranks, defined once: the nightly job, the training examples and the evaluation
all take them from here.

Per user, the union of:
- ``ease``: EASE's top ``recommend.ease_candidates`` unseen items (``via`` = the history item that adds
  most to the score);
- ``als``: ALS's top ``recommend.als_candidates`` unseen items;
- ``content``: the content neighbours (gold.item_neighbors, the best ``neighbors_per_item`` of each) of
  the user's ``neighbor_history`` most recent items (``via`` = that history item);
- ``popular_category``: the ``category_candidates`` items most popular lately in each of the user's
  ``fallback_categories`` favourite categories (``via`` = the category);
- ``friends``: the ``friend_candidates`` items most of the user's friends chose (``via`` = a friend).

Seen items never come back; an item found by several sources is one row that remembers all of them, its
rank in the ALS and EASE lists, its EASE score, and ``source``/``via`` of the most specific evidence
(``SOURCE_PRIORITY``). Every row also carries the user's score statistics (``examples.SCORE_STATS``) that
turn ALS and EASE scores into per-user z-scores.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from liverec import ease, vectors
from liverec.config import RecommendSettings
from liverec.features import SCORE_STATS, Features

# which source names a candidate found by several (the most specific evidence first)
SOURCE_PRIORITY = {"content": 0, "friends": 1, "ease": 2, "popular_category": 3, "als": 4}
SOURCES = tuple(SOURCE_PRIORITY)


def _source(rows: DataFrame, source: str, order: Any, via: Any = None, extra: dict[str, Any] | None = None
            ) -> DataFrame:
    extra = extra or {}
    cols = {"als_rank": "int", "ease_rank": "int", "ease_score": "double", "neighbor_similarity": "double"}
    return rows.select("user_id", "item_id",
                       *[(extra[c] if c in extra else F.lit(None)).cast(t).alias(c) for c, t in cols.items()],
                       F.lit(source).alias("source"), F.lit(SOURCE_PRIORITY[source]).alias("prio"),
                       order.cast("double").alias("order"),
                       (via if via is not None else F.lit(None)).cast("string").alias("via"))


def als_lists(f: Features, users: DataFrame, k: int) -> DataFrame:
    """(user_id, item_id, rank, score, score_mean, score_std): each user's top ``k`` unseen items by the
    features' ALS factors."""
    uf = f.user_factors.join(users.select("user_id").distinct(), "user_id")
    return vectors.top_items(uf, f.item_factors, f.seen, k)


def ease_lists(spark: SparkSession, model: ease.EaseModel, seen: DataFrame, users: DataFrame, k: int
               ) -> DataFrame:
    """(user_id, item_id, rank, score, via, score_mean, score_std): each user's top ``k`` unseen items by EASE
    over their history ``seen`` (user_id, item_id); users without an item EASE knows get no rows."""
    index = spark.createDataFrame([(i, n) for n, i in enumerate(model.item_ids)], "item_id string, item_idx int")
    hist = ease.user_items(seen.join(users.select("user_id").distinct(), "user_id", "left_semi"), F.broadcast(index))
    top = ease.scored_top(spark, model, hist, k)
    rows = top.select("user_id", "score_mean", "score_std",
                      F.posexplode(F.arrays_zip("items", "scores", "via")).alias("pos", "x"))
    return (rows.join(F.broadcast(index), F.col("x.items") == F.col("item_idx"))
            .join(F.broadcast(index.select(F.col("item_idx").alias("v_idx"), F.col("item_id").alias("via"))),
                  F.col("x.via") == F.col("v_idx"), "left")
            .select("user_id", "item_id", (F.col("pos") + 1).alias("rank"), F.col("x.scores").alias("score"),
                    "via", "score_mean", "score_std"))


def _stats(lists: DataFrame, name: str) -> DataFrame:
    """Per user: mean, std and floor (the score of the last listed item) of a source's scores."""
    return lists.groupBy("user_id").agg(F.first("score_mean").alias(f"{name}_mean"),
                                        F.first("score_std").alias(f"{name}_std"),
                                        F.min("score").alias(f"{name}_floor"))


def generate(spark: SparkSession, f: Features, users: DataFrame, neighbors: DataFrame | None,
             conf: RecommendSettings) -> DataFrame:
    """(user_id, item_id, sources array<string>, source, via, als_rank, ease_rank, ease_score,
    neighbor_similarity, *SCORE_STATS): the union of the sources of the module doc for ``users``."""
    users = users.select("user_id").distinct()
    parts, stats = [], []
    if conf.ease_candidates > 0 and f.ease is not None:
        lists = ease_lists(spark, f.ease, f.seen, users, conf.ease_candidates).localCheckpoint()
        parts.append(_source(lists, "ease", F.col("rank"), F.col("via"),
                             {"ease_rank": F.col("rank"), "ease_score": F.col("score")}))
        stats.append(_stats(lists, "ease"))
    if conf.als_candidates > 0:
        lists = als_lists(f, users, conf.als_candidates).localCheckpoint()
        parts.append(_source(lists, "als", F.col("rank"), None, {"als_rank": F.col("rank")}))
        stats.append(_stats(lists, "als"))
    if neighbors is not None and conf.neighbor_history > 0 and conf.neighbors_per_item > 0:
        recent = f.users.join(users, "user_id").select(
            "user_id", F.posexplode(F.slice("recent_items", 1, conf.neighbor_history)).alias("rp", "hist_id"))
        nb = neighbors.where(F.col("rank") <= conf.neighbors_per_item).select(
            F.col("item_id").alias("hist_id"), F.col("neighbor_id").alias("item_id"), "similarity")
        parts.append(_source(recent.join(nb, "hist_id"), "content", -F.col("similarity"), F.col("hist_id"),
                             {"neighbor_similarity": F.col("similarity")}))
    if conf.category_candidates > 0:
        by_cat = Window.partitionBy("category").orderBy(F.col("log_item_recent_users").desc(),
                                                        F.col("log_item_users").desc(), "item_id")
        popular = (f.items.where(F.col("item_unseen") == 0)
                   .select("item_id", "log_item_recent_users", "log_item_users",
                           F.explode("categories").alias("category"))
                   .withColumn("cr", F.row_number().over(by_cat)).where(F.col("cr") <= conf.category_candidates))
        prefs = f.profiles.join(users, "user_id").select(
            "user_id", F.posexplode(F.slice("top_categories", 1, conf.fallback_categories)).alias("cp", "category"))
        parts.append(_source(prefs.join(popular, "category"), "popular_category",
                             F.col("cp") * 1000 + F.col("cr"), F.col("category")))
    if conf.friend_candidates > 0:
        best = Window.partitionBy("user_id").orderBy(F.col("n_friends").desc(), "item_id")
        friends = (f.friends_on_item.join(users, "user_id").withColumn("fr", F.row_number().over(best))
                   .where(F.col("fr") <= conf.friend_candidates))
        parts.append(_source(friends, "friends", F.col("fr"), F.col("a_friend")))
    if not parts:
        raise ValueError("every candidate source is turned off (recommend.*_candidates)")
    rows = parts[0]
    for p in parts[1:]:
        rows = rows.unionByName(p)
    rows = rows.join(f.seen, ["user_id", "item_id"], "left_anti")
    merged = rows.groupBy("user_id", "item_id").agg(
        F.min("als_rank").alias("als_rank"), F.min("ease_rank").alias("ease_rank"),
        F.max("ease_score").alias("ease_score"), F.max("neighbor_similarity").alias("neighbor_similarity"),
        F.sort_array(F.collect_set("source")).alias("sources"),
        F.min(F.struct("prio", "order", "source", "via")).alias("best"))
    out = merged.select("user_id", "item_id", "als_rank", "ease_rank", "ease_score", "neighbor_similarity",
                        "sources", F.col("best.source").alias("source"), F.col("best.via").alias("via"))
    for s in stats:
        out = out.join(s, "user_id", "left")
    for c in SCORE_STATS:
        if c not in out.columns:
            out = out.withColumn(c, F.lit(None).cast("double"))
    return out


def recall(cands: DataFrame, held: DataFrame) -> dict[str, float]:
    """Share of the held-out (user_id, item_id) pairs of the candidates' users that the union, and each
    source, found: a re-ranker cannot do better than the union."""
    users = cands.select("user_id").distinct()
    truth = held.select("user_id", "item_id").distinct().join(users, "user_id", "left_semi").cache()
    total = truth.count()
    found = truth.join(cands.select("user_id", "item_id", "sources"), ["user_id", "item_id"])
    per = {r["s"]: r["n"] for r in found.select(F.explode("sources").alias("s")).groupBy("s")
           .agg(F.count("*").alias("n")).collect()}
    out = {"union": found.count() / total if total else 0.0}
    out.update({s: per.get(s, 0) / total if total else 0.0 for s in SOURCES})
    truth.unpersist()
    return out
