"""Implicit-feedback ALS (``pyspark.ml``) and top-N scoring over its factors.

Strength of a (user, item) pair = sum over its events of weight(event_type) x time decay (x the
rating for ratings, when ``rating_as_strength``); ALS turns it into confidence 1 + alpha x strength.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from liverec.catalog import decay, event_weight
from liverec.config import AlsSettings

# users scored per matrix product inside a task: bounds memory at chunk x n_items floats
SCORE_CHUNK = 512


def strengths(events: DataFrame, conf: AlsSettings, weights: dict[str, float]) -> DataFrame:
    """(user_id, item_id, strength) with strength > 0."""
    reference = events.agg(F.max("ts").alias("ref"))
    w = event_weight(weights)
    if conf.rating_as_strength:
        w = F.when((F.col("event_type") == "rating") & F.col("value").isNotNull(), w * F.col("value")).otherwise(w)
    ev = events.crossJoin(F.broadcast(reference)).withColumn(
        "s", w * decay(F.col("ts"), F.col("ref"), conf.half_life_days))
    return ev.groupBy("user_id", "item_id").agg(F.sum("s").alias("strength")).where(F.col("strength") > 0)


def index_ids(pairs: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Dense integer ids ALS needs: (user_id, user_idx) and (item_id, item_idx), ordered by the string id."""
    users = pairs.select("user_id").distinct().withColumn(
        "user_idx", (F.row_number().over(Window.orderBy("user_id")) - 1).cast("int"))
    items = pairs.select("item_id").distinct().withColumn(
        "item_idx", (F.row_number().over(Window.orderBy("item_id")) - 1).cast("int"))
    return users, items


def fit(spark: SparkSession, ratings: DataFrame, conf: AlsSettings, checkpoint_dir: str) -> ALSModel:
    """Fit on (user_idx, item_idx, strength). Checkpointing cuts the lineage every few iterations."""
    spark.sparkContext.setCheckpointDir(checkpoint_dir)
    als = ALS(rank=conf.rank, maxIter=conf.max_iter, regParam=conf.reg_param, alpha=conf.alpha,
              implicitPrefs=True, userCol="user_idx", itemCol="item_idx", ratingCol="strength",
              coldStartStrategy="drop", checkpointInterval=conf.checkpoint_interval, seed=conf.seed,
              nonnegative=False)
    if conf.num_blocks > 0:
        als = als.setNumUserBlocks(conf.num_blocks).setNumItemBlocks(conf.num_blocks)
    return als.fit(ratings)


def top_n(user_vectors: DataFrame, item_vectors: DataFrame, seen: DataFrame | None, n: int) -> DataFrame:
    """Top ``n`` items per user by dot product, never an item the user has seen.

    user_vectors: (user_idx, features); item_vectors: (item_idx, features), small enough to broadcast
    (27k items x rank 64 is 7 MB); seen: (user_idx, seen array<int>). Scoring runs in the executors,
    a chunk of users at a time, as one matrix product each. Returns (user_idx, items array<int>,
    scores array<double>), best first.
    """
    spark = user_vectors.sparkSession
    # the model-sized factor matrix (not a table of events) comes to the driver once, through Arrow
    pdf = item_vectors.select("item_idx", "features").toPandas()
    if pdf.empty:
        return spark.createDataFrame([], "user_idx int, items array<int>, scores array<double>")
    idx = pdf["item_idx"].to_numpy(dtype=np.int64)
    vectors = np.stack(pdf["features"].to_numpy()).astype(np.float32)
    matrix = np.zeros((int(idx.max()) + 1, vectors.shape[1]), dtype=np.float32)
    present = np.zeros(len(matrix), dtype=bool)
    matrix[idx] = vectors
    present[idx] = True
    shared = spark.sparkContext.broadcast((matrix, present))

    users = user_vectors.select("user_idx", "features")
    if seen is not None:
        users = users.join(seen.select("user_idx", "seen"), "user_idx", "left")
    else:
        users = users.withColumn("seen", F.lit(None).cast("array<int>"))

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        items, valid = shared.value
        k = min(n, int(valid.sum()))
        for pdf in batches:
            for start in range(0, len(pdf), SCORE_CHUNK):
                part = pdf.iloc[start:start + SCORE_CHUNK]
                u = np.stack(part["features"].to_numpy()).astype(np.float32)
                scores = u @ items.T
                scores[:, ~valid] = -np.inf
                for row, seen_items in enumerate(part["seen"]):
                    if seen_items is not None and len(seen_items):
                        idx = np.asarray(seen_items, dtype=np.int64)
                        scores[row, idx[idx < scores.shape[1]]] = -np.inf
                top = np.argpartition(-scores, kth=min(k, scores.shape[1] - 1), axis=1)[:, :k] if k else \
                    np.empty((len(part), 0), dtype=np.int64)
                out_items, out_scores = [], []
                for row in range(len(part)):
                    cand = top[row]
                    cand = cand[np.argsort(-scores[row, cand], kind="stable")]
                    cand = cand[np.isfinite(scores[row, cand])]
                    out_items.append(cand.astype(np.int32).tolist())
                    out_scores.append(scores[row, cand].astype(np.float64).tolist())
                yield pd.DataFrame({"user_idx": part["user_idx"].to_numpy(), "items": out_items,
                                    "scores": out_scores})

    return users.mapInPandas(score, "user_idx int, items array<int>, scores array<double>")


def factor_frames(model: ALSModel, users: DataFrame, items: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(user_id, user_idx, features) and (item_id, item_idx, features) from a fitted model."""
    uf = model.userFactors.select(F.col("id").alias("user_idx"), "features").join(users, "user_idx")
    itf = model.itemFactors.select(F.col("id").alias("item_idx"), "features").join(items, "item_idx")
    return uf, itf
