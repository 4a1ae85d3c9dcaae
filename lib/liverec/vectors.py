"""Vector arithmetic over DataFrames: top-K by dot product (blocked matrix products in the executors)
and cosine similarity as a Spark expression. ALS scoring, content neighbours and content candidates
all go through here; EASE (``ease.py``) shares the top-K selection."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

# rows scored per matrix product inside a task: bounds memory at chunk x n_keys floats
SCORE_CHUNK = 512
# what top_k returns: per user the best items, their scores, and the mean / standard deviation of the user's
# scores over every item it could be given (its unseen items), which turn a score into a per-user z-score
TOP_K_SCHEMA = "user_idx int, items array<int>, scores array<double>, score_mean double, score_std double"


def dense_index(frame: DataFrame, key: str, name: str, start: int = 0) -> DataFrame:
    """``frame`` + ``name`` (int): its ``key`` values numbered ``start``, ``start`` + 1, ... in their sort order (what
    ``row_number()`` over ``Window.orderBy(key)`` gives, without moving every row into one partition). A range-
    partitioned sort, each row tagged with its partition and position there and pinned by a local checkpoint; each
    partition's offset from the row counts of the ones before it (one small collect). ``key`` must be unique in
    ``frame`` when it holds other columns (they are joined back by key, a null key too)."""
    tagged = (frame.select(key).distinct().orderBy(key)
              .select(key, F.spark_partition_id().alias("_part"), F.monotonically_increasing_id().alias("_id"))
              .localCheckpoint())
    counts = sorted((r["_part"], r["count"]) for r in tagged.groupBy("_part").count().collect())
    offsets, total = [], start
    for part, n in counts:
        offsets += [F.lit(part), F.lit(total)]
        total += n
    if not offsets:
        return frame.withColumn(name, F.lit(None).cast("int"))
    # monotonically_increasing_id is (partition << 33) + the row's position in its partition
    position = F.col("_id") - F.shiftleft(F.col("_part").cast("long"), 33)
    index = tagged.select(key, (position + F.create_map(*offsets)[F.col("_part")]).cast("int").alias(name))
    if frame.columns == [key]:
        return index
    index = index.withColumnRenamed(key, "_key")
    return frame.join(index, frame[key].eqNullSafe(index["_key"])).drop("_key")


def mask_seen(scores: np.ndarray, seen: pd.Series) -> None:
    """Set each row's seen items (an array of column indices per row, or None) to -inf, in place."""
    for row, seen_items in enumerate(seen):
        if seen_items is not None and len(seen_items):
            idx = np.asarray(seen_items, dtype=np.int64)
            scores[row, idx[(idx >= 0) & (idx < scores.shape[1])]] = -np.inf


def best_of(scores: np.ndarray, k: int) -> tuple[list[list[int]], list[list[float]], np.ndarray, np.ndarray]:
    """Per row of ``scores`` (-inf = not allowed): the ``k`` best columns, best first (ties: lower index), their
    scores, and the mean and standard deviation of the row's finite scores (0 and 1 without any)."""
    finite = np.isfinite(scores)
    count = finite.sum(axis=1)
    safe = np.where(finite, scores, 0.0).astype(np.float64)
    mean = safe.sum(axis=1) / np.maximum(count, 1)
    var = (np.where(finite, (safe - mean[:, None]) ** 2, 0.0)).sum(axis=1) / np.maximum(count, 1)
    std = np.where(var > 0, np.sqrt(var), 1.0)
    k = min(k, scores.shape[1])
    if k <= 0:
        return [[] for _ in scores], [[] for _ in scores], mean, std
    top = np.argpartition(-scores, kth=k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    out_items, out_scores = [], []
    for row in range(len(scores)):
        cand = top[row]
        cand = cand[np.lexsort((cand, -scores[row, cand]))]
        cand = cand[np.isfinite(scores[row, cand])]
        out_items.append(cand.astype(np.int32).tolist())
        out_scores.append(scores[row, cand].astype(np.float64).tolist())
    return out_items, out_scores, mean, std


def dot_top(users: np.ndarray, items: np.ndarray, valid: np.ndarray, seen: pd.Series, n: int
            ) -> tuple[list[list[int]], list[list[float]], np.ndarray, np.ndarray]:
    """``best_of`` the dot products of ``users`` (rows, float32) with ``items`` (float32, one row per column index),
    only over ``valid`` columns and never a row's ``seen`` columns (``mask_seen``): the ALS lists of ``top_k`` and
    of the nightly job's per-user lists (``liverec.candidates``)."""
    scores = users @ items.T
    scores[:, ~valid] = -np.inf
    mask_seen(scores, seen)
    return best_of(scores, n)


def top_k(user_vectors: DataFrame, item_vectors: DataFrame, seen: DataFrame | None, n: int) -> DataFrame:
    """Top ``n`` items per user by dot product, never an item the user has seen.

    user_vectors: (user_idx, features); item_vectors: (item_idx, features), small enough to broadcast
    (27k items x rank 64 is 7 MB); seen: (user_idx, seen array<int>). Scoring runs in the executors,
    a chunk of users at a time, as one matrix product each. Returns TOP_K_SCHEMA rows: (user_idx, items,
    scores best first, score_mean, score_std over the user's unseen items).
    """
    spark = user_vectors.sparkSession
    # the model-sized factor matrix (not a table of events) comes to the driver once, through Arrow
    pdf = item_vectors.select("item_idx", "features").toPandas()
    if pdf.empty:
        return spark.createDataFrame([], TOP_K_SCHEMA)
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
        for pdf in batches:
            for start in range(0, len(pdf), SCORE_CHUNK):
                part = pdf.iloc[start:start + SCORE_CHUNK]
                u = np.stack(part["features"].to_numpy()).astype(np.float32)
                out_items, out_scores, mean, std = dot_top(u, items, valid, part["seen"], n)
                yield pd.DataFrame({"user_idx": part["user_idx"].to_numpy(), "items": out_items,
                                    "scores": out_scores, "score_mean": mean, "score_std": std})

    return users.mapInPandas(score, TOP_K_SCHEMA)


def top_items(user_vectors: DataFrame, item_vectors: DataFrame, seen: DataFrame, n: int) -> DataFrame:
    """``top_k`` in ids: (user_id, item_id, rank, score, score_mean, score_std), each user's top ``n`` unseen
    items by dot product. user_vectors: (user_id, user_idx, features); item_vectors: (item_id, item_idx,
    features); seen: (user_id, item_id) pairs the users already have. ALS lists (candidates, the fallback
    chain) and content lists all go through here."""
    seen_idx = (seen.join(user_vectors.select("user_id", "user_idx"), "user_id")
                .join(item_vectors.select("item_id", "item_idx"), "item_id")
                .groupBy("user_idx").agg(F.collect_list("item_idx").alias("seen")))
    top = top_k(user_vectors.select("user_idx", "features"), item_vectors.select("item_idx", "features"), seen_idx, n)
    rows = top.select("user_idx", "score_mean", "score_std",
                      F.posexplode(F.arrays_zip("items", "scores")).alias("pos", "x"))
    ids = F.broadcast(item_vectors.select(F.col("item_idx").alias("x_item"), "item_id"))
    return (rows.join(user_vectors.select("user_id", "user_idx"), "user_idx")
            .join(ids, F.col("x.items") == F.col("x_item"))
            .select("user_id", "item_id", (F.col("pos") + 1).alias("rank"), F.col("x.scores").alias("score"),
                    "score_mean", "score_std"))


def _dot(a: Column | str, b: Column | str) -> Column:
    return F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0), lambda acc, x: acc + x)


def dot(a: Column | str, b: Column | str) -> Column:
    """Dot product of two array<float> columns (null when either is null)."""
    return _dot(a, b)


def cosine(a: Column | str, b: Column | str) -> Column:
    """Cosine of two array<float> columns (0 when either is the zero vector)."""
    return _dot(a, b) / F.greatest(F.sqrt(_dot(a, a)) * F.sqrt(_dot(b, b)), F.lit(1e-12))
