"""Diversity: maximal marginal relevance over each user's best candidates (``recommend.mmr_lambda``: 1 = by
score alone, ``recommend.mmr_pool`` candidates considered), with the cosine of the items' vectors (text
embeddings, ALS factors when there are none)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T


def mmr_order(relevance: np.ndarray, vectors: np.ndarray, n: int, lam: float) -> list[int]:
    """Indices of ``n`` rows picked by maximal marginal relevance: each step takes the row maximising
    ``lam * relevance - (1 - lam) * max cosine to the rows already picked``. relevance in [0, 1];
    vectors unit length (a zero row is similar to nothing); ties go to the earlier row."""
    m = len(relevance)
    n = min(n, m)
    if n == 0:
        return []
    sims = vectors @ vectors.T if len(vectors) else np.zeros((m, m))
    picked: list[int] = []
    closest = np.full(m, 0.0)
    free = np.ones(m, dtype=bool)
    for step in range(n):
        value = lam * relevance - (1.0 - lam) * closest if step else relevance.astype(np.float64)
        value = np.where(free, value, -np.inf)
        best = int(np.argmax(value))
        picked.append(best)
        free[best] = False
        closest = np.maximum(closest, sims[best])
    return picked



def unit_vectors(item_vectors: DataFrame) -> tuple[dict[str, int], np.ndarray]:
    """(item id -> row, unit-length float32 matrix) from (item_id, features): model-sized, via Arrow."""
    pdf = item_vectors.select("item_id", "features").where(F.col("features").isNotNull()).toPandas()
    if pdf.empty:
        return {}, np.zeros((0, 1), dtype=np.float32)
    mat = np.stack(pdf["features"].to_numpy()).astype(np.float32)
    mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    return {str(i): n for n, i in enumerate(pdf["item_id"])}, mat



def diversify(scored: DataFrame, item_vectors: DataFrame, n: int, lam: float, pool: int) -> DataFrame:
    """scored (user_id, item_id, score, ...) -> per user the ``n`` rows MMR picks from the ``pool`` best by
    score, + ``rank`` (1..n in pick order). Relevance is the score min-max scaled within the pool."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"recommend.mmr_lambda must be between 0 and 1, got {lam}")
    best = Window.partitionBy("user_id").orderBy(F.col("score").desc(), "item_id")
    top = scored.withColumn("_r", F.row_number().over(best)).where(F.col("_r") <= max(pool, n)).drop("_r")
    index, matrix = unit_vectors(item_vectors)
    shared = scored.sparkSession.sparkContext.broadcast((index, matrix))
    schema = T.StructType([*top.schema.fields, T.StructField("rank", T.IntegerType())])

    def pick(pdf: pd.DataFrame) -> pd.DataFrame:
        ids, mat = shared.value
        pdf = pdf.sort_values(["score", "item_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
        s = pdf["score"].to_numpy(dtype=np.float64)
        span = s.max() - s.min() if len(s) else 0.0
        rel = (s - s.min()) / span if span > 0 else np.ones(len(s))
        vecs = np.zeros((len(pdf), mat.shape[1]), dtype=np.float32)
        for row, item in enumerate(pdf["item_id"]):
            at = ids.get(str(item))
            if at is not None:
                vecs[row] = mat[at]
        order = mmr_order(rel, vecs, n, lam)
        out = pdf.iloc[order].copy()
        out["rank"] = np.arange(1, len(order) + 1, dtype=np.int32)
        return out

    return top.groupBy("user_id").applyInPandas(pick, schema)
