"""Vector arithmetic over DataFrames: top-K by dot product (blocked matrix products in the executors)
and cosine similarity as a Spark expression. ALS scoring, content neighbours and content candidates
all go through here."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

# rows scored per matrix product inside a task: bounds memory at chunk x n_keys floats
SCORE_CHUNK = 512


def top_k(user_vectors: DataFrame, item_vectors: DataFrame, seen: DataFrame | None, n: int) -> DataFrame:
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


def _dot(a: Column | str, b: Column | str) -> Column:
    return F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0), lambda acc, x: acc + x)


def cosine(a: Column | str, b: Column | str) -> Column:
    """Cosine of two array<float> columns (0 when either is the zero vector)."""
    return _dot(a, b) / F.greatest(F.sqrt(_dot(a, a)) * F.sqrt(_dot(b, b)), F.lit(1e-12))
