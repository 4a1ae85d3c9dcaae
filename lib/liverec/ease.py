"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): an item-item linear
model, one of the strongest baselines for top-N recommendation, and a candidate source.

The user-item matrix X is binary (1 where the user has an event with a positive ALS strength). EASE
minimises ||X - X B||^2 + lambda ||B||^2 with diag(B) = 0; the closed form is B = I - P diagMat(1 /
diag(P)) with P = (X^T X + lambda I)^-1, i.e. B_ij = -P_ij / P_jj off the diagonal. A user's score
of item j is sum over the user's items i of B_ij.

- The Gram matrix X^T X is built in Spark: each task adds up the co-occurrences of its users' items
  (a sparse product per chunk of users) into a dense partial matrix, and the partial matrices are summed
  with a tree reduce, so no event comes to the driver. The n x n inverse is solved on the driver, which
  is why ``ease.max_items`` caps the catalogue (n^2 floats: 10,000 items are 400 MB).
- Scoring runs in the executors with B broadcast: per chunk of users one sparse x dense product, the
  seen items masked, the best items kept together with the history item that contributes most to each
  (the reason), and the mean / standard deviation of the user's scores (a per-user z-score feature).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from liverec import vectors
from liverec.errors import InputError

# users per sparse product in a task (bounds memory at chunk x items floats)
CHUNK = 512
TOP_SCHEMA = ("user_id string, items array<int>, scores array<double>, via array<int>, score_mean double, "
              "score_std double")


@dataclass
class EaseModel:
    """B (``weights``, float32, zero diagonal) over the items ``item_ids`` (position = item_idx)."""

    item_ids: list[str]
    weights: np.ndarray
    lam: float
    users: int  # rows of X
    pairs: int  # non-zeros of X

    @property
    def index(self) -> dict[str, int]:
        return {i: n for n, i in enumerate(self.item_ids)}


def item_index(pairs: DataFrame) -> DataFrame:
    """(item_id, item_idx): a dense index over the items of ``pairs``, ordered by item id."""
    return vectors.dense_index(pairs.select("item_id"), "item_id", "item_idx")


def user_items(pairs: DataFrame, index: DataFrame) -> DataFrame:
    """(user_id, items array<int>): each user's items as indices of ``index`` (items outside it dropped)."""
    return (pairs.select("user_id", "item_id").distinct().join(index, "item_id")
            .groupBy("user_id").agg(F.sort_array(F.collect_list("item_idx")).alias("items")))


def _sparse_rows(lists: list, n: int):
    from scipy.sparse import csr_matrix

    lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    ptr = np.zeros(len(lists) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(lengths)
    cols = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if len(lists) else np.zeros(0, np.int64)
    return csr_matrix((np.ones(len(cols), dtype=np.float32), cols, ptr), shape=(len(lists), n))


def gram(rows: DataFrame, n: int) -> np.ndarray:
    """X^T X (n x n, float64) of (user_id, items array<int>) rows, computed in the executors."""

    def partial(it: Iterator) -> Iterator[np.ndarray]:
        g = np.zeros((n, n), dtype=np.float32)
        chunk: list = []
        for row in it:
            chunk.append(row["items"])
            if len(chunk) == CHUNK:
                x = _sparse_rows(chunk, n)
                g += (x.T @ x).toarray()
                chunk = []
        if chunk:
            x = _sparse_rows(chunk, n)
            g += (x.T @ x).toarray()
        yield g

    out = rows.select("items").rdd.mapPartitions(partial).treeReduce(np.add, depth=2)
    return np.asarray(out, dtype=np.float64)


def solve(g: np.ndarray, lam: float) -> np.ndarray:
    """B from the Gram matrix: zero diagonal, B_ij = -P_ij / P_jj with P = (G + lambda I)^-1."""
    p = np.linalg.inv(g + lam * np.eye(len(g)))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def fit(pairs: DataFrame, lam: float, max_items: int) -> tuple[EaseModel, DataFrame]:
    """EASE on (user_id, item_id) pairs; returns the model and the (user_id, items) rows it was fitted on.

    Refuses (InputError) a catalogue of more than ``max_items`` items: the solve is n x n on the driver.
    """
    if lam <= 0:
        raise InputError(f"ease.lambda must be positive, got {lam}")
    index = item_index(pairs).cache()
    n = index.count()
    if n == 0:
        raise InputError("EASE has no (user, item) pairs to learn from")
    if n > max_items:
        index.unpersist()
        raise InputError(f"EASE would solve a {n:,} x {n:,} system on the driver, more than ease.max_items "
                         f"({max_items:,}): raise ease.max_items (memory grows with its square) or set "
                         "ease.enabled=false")
    ids = index.orderBy("item_idx").select("item_id").toPandas()["item_id"].astype(str).tolist()
    rows = user_items(pairs, index).cache()
    users = rows.count()
    nnz = int(rows.agg(F.sum(F.size("items"))).collect()[0][0] or 0)
    b = solve(gram(rows, n), lam)
    index.unpersist()
    return EaseModel(ids, b, float(lam), users, nnz), rows


def top_of(lists: list[np.ndarray], b: np.ndarray, n_items: int, n: int, exclude: np.ndarray | None = None
           ) -> tuple[list[list[int]], list[list[float]], list[list[int]], np.ndarray, np.ndarray]:
    """For users' histories ``lists`` (model indices): their ``n`` best unseen items by EASE score (``vectors.best_of``
    over X B, the history masked), the scores, the history item that adds most to each (``via``; -1 without a
    history) and the mean / std of each user's scores over the unseen items. The scoring of ``scored_top`` and of
    the nightly job's per-user lists (``liverec.candidates``). ``exclude`` (model indices) are never picked either
    (the content policy's items)."""
    s = np.asarray(_sparse_rows(lists, n_items) @ b, dtype=np.float64)
    vectors.mask_seen(s, pd.Series(lists, dtype=object))
    if exclude is not None and len(exclude):
        s[:, exclude] = -np.inf
    top, top_scores, mean, std = vectors.best_of(s, n)
    via = []
    for hist, best in zip(lists, top, strict=True):
        if len(best) and len(hist):
            via.append(hist[np.argmax(b[np.ix_(hist, np.asarray(best))], axis=0)].astype(int).tolist())
        else:
            via.append([-1] * len(best))
    return top, top_scores, via, mean, std


def scored_top(spark: SparkSession, model: EaseModel, users: DataFrame, n: int, exclude: list[str] | None = None
               ) -> DataFrame:
    """TOP_SCHEMA rows for ``users`` (user_id, items array<int> = their history as model indices): the ``n``
    best unseen items by EASE score (model indices, best first), their scores, the history item that adds
    most to each (``via``, a model index), and the mean / std of the user's scores over the allowed unseen items;
    ``exclude``: item ids never picked (the content policy's)."""
    index = model.index
    banned = np.array(sorted({index[i] for i in exclude or () if i in index}), dtype=np.int64)
    shared = spark.sparkContext.broadcast(model.weights)
    n_items = len(model.item_ids)

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        b = shared.value
        for pdf in batches:
            for start in range(0, len(pdf), CHUNK):
                part = pdf.iloc[start:start + CHUNK]
                lists = [np.asarray(x if x is not None else [], dtype=np.int64) for x in part["items"]]
                top, top_scores, via, mean, std = top_of(lists, b, n_items, n, banned)
                yield pd.DataFrame({"user_id": part["user_id"].to_numpy(), "items": top, "scores": top_scores,
                                    "via": via, "score_mean": mean, "score_std": std})

    return users.select("user_id", "items").mapInPandas(score, TOP_SCHEMA)


def model_frame(spark: SparkSession, model: EaseModel) -> DataFrame:
    """(item_id, item_idx, weights array<float>): B as rows (row i = how much item i adds to every item)."""
    pdf = pd.DataFrame({"item_id": model.item_ids, "item_idx": np.arange(len(model.item_ids), dtype=np.int32),
                        "weights": list(model.weights)})
    key = "spark.sql.execution.arrow.pyspark.enabled"
    before = spark.conf.get(key, "false")
    spark.conf.set(key, "true")  # n rows of n floats go through Arrow, not one Python object per float
    try:
        return spark.createDataFrame(pdf, "item_id string, item_idx int, weights array<float>").localCheckpoint()
    finally:
        spark.conf.set(key, before)


def from_frame(rows: DataFrame, lam: float, users: int = 0, pairs: int = 0) -> EaseModel:
    """The model back from ``model_frame`` rows (a gold.ease_weights partition), through Arrow."""
    pdf = rows.select("item_id", "item_idx", "weights").toPandas().sort_values("item_idx")
    weights = np.stack(pdf["weights"].to_numpy()).astype(np.float32) if len(pdf) else np.zeros((0, 0), np.float32)
    return EaseModel(pdf["item_id"].astype(str).tolist(), weights, lam, users, pairs)
