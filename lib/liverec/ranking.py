"""Ranked nightly recommendations: candidates from five sources, the champion ranker, MMR, reasons.

Per active user:
1. candidates: ``liverec.candidates`` (EASE's and ALS's top unseen items, content neighbours of recent
   items, popular items of the favourite categories, friends' items), the union the ranker was trained on.
2. features: ``liverec.features`` over everything up to ds and that ds's gold tables, the same code
   that built the ranker's training examples (no training/serving skew).
3. scores: the ``@champion`` version of the registered ranker (an MLflow pyfunc), shipped to the
   executors as a file and loaded once per Python worker, applied in ``mapInPandas``.
4. diversity: maximal marginal relevance over the best ``mmr_pool`` candidates (``mmr_lambda`` 1 =
   by score alone), with the cosine of the items' text embeddings (ALS factors when there are none).
5. the top N, each with a reason naming what led to it (a history item, a friend, a category) and
   the ranker's version.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from liverec import candidates, features, recommend
from liverec.config import Settings
from liverec.ease import EaseModel


@dataclass(frozen=True)
class Champion:
    name: str
    version: str
    run_id: str
    uri: str

    @property
    def tag(self) -> str:
        """The model_version written on every row it ranked."""
        return f"ranker:{self.name}/{self.version}"


def champion(name: str, alias: str) -> Champion | None:
    """The registry's ``name@alias`` version, or None when there is none (or no such model)."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None
    return Champion(name, str(mv.version), mv.run_id, f"models:/{name}@{alias}")


def registered_tag(name: str, tag: str) -> str | None:
    """A tag of the registered model ``name`` (None when the model or the tag does not exist)."""
    import mlflow

    try:
        return mlflow.MlflowClient().get_registered_model(name).tags.get(tag)
    except mlflow.exceptions.MlflowException:
        return None


# --------------------------------------------------------------------------- scores

_SCORERS: dict[str, Any] = {}  # one loaded model per Python worker process, reused across tasks


def _scorer(archive: str) -> Any:
    """The pyfunc in ``archive`` (a zip shipped with SparkContext.addFile), unpacked and loaded once."""
    if archive not in _SCORERS:
        import mlflow.pyfunc
        from pyspark import SparkFiles

        path = archive if os.path.isabs(archive) else SparkFiles.get(archive)
        folder = tempfile.mkdtemp(prefix="liverec-champion-")
        with zipfile.ZipFile(path) as z:
            z.extractall(folder)
        _SCORERS[archive] = mlflow.pyfunc.load_model(folder)
    return _SCORERS[archive]


def ship_model(spark: SparkSession, model_uri: str, scratch: str) -> str:
    """Download ``model_uri`` on the driver, zip it and add it to the job's files; returns the file name
    the executors open with SparkFiles (the registry need not be reachable from them)."""
    import mlflow

    os.makedirs(scratch, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="champion-", dir=scratch)
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder)
    archive = shutil.make_archive(os.path.join(folder, "champion"), "zip", local)
    named = os.path.join(folder, f"liverec-champion-{os.path.basename(folder)}.zip")
    os.replace(archive, named)
    spark.sparkContext.addFile(named)
    return os.path.basename(named)


def score(rows: DataFrame, archive: str) -> DataFrame:
    """rows (item_id, recent_items, dense, ...) -> the same rows + ``score`` from the shipped model."""
    from liverec.ranker.registry import pyfunc_frame

    schema = T.StructType([*rows.schema.fields, T.StructField("score", T.DoubleType())])

    def apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = _scorer(archive)
        for pdf in batches:
            if len(pdf):
                out = model.predict(pyfunc_frame(pdf))
                pdf = pdf.assign(score=np.asarray(out["score"], dtype=np.float64))
            else:
                pdf = pdf.assign(score=pd.Series(dtype=np.float64))
            yield pdf

    return rows.mapInPandas(apply, schema)


# --------------------------------------------------------------------------- diversity

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


# --------------------------------------------------------------------------- reasons

def with_reasons(top: DataFrame, f: features.Features, user_profiles: DataFrame, items: DataFrame,
                 als_vectors: DataFrame, history: int) -> DataFrame:
    """+ reason: content -> the history item it is similar to; friends -> a friend who chose it (and how many
    more); ease -> the history item that adds most to its score; popular_category -> the category; als -> the
    recent item closest in ALS space (recommend's rule)."""
    titles = items.select(F.col("item_id").alias("via"), "title")
    content = (top.where(F.col("source") == "content").join(titles, "via", "left")
               .withColumn("reason", F.concat(F.lit("Similar to "), recommend.quoted_title("via"),
                                              F.lit(", which you chose"))))
    ease_rows = (top.where(F.col("source") == "ease").join(titles, "via", "left")
                 .withColumn("reason", F.concat(F.lit("Because you chose "), recommend.quoted_title("via"))))
    friends = (top.where(F.col("source") == "friends")
               .join(f.friends_on_item.select("user_id", "item_id", "n_friends"), ["user_id", "item_id"], "left")
               .withColumn("reason", F.concat(
                   F.lit("Your friend "), F.col("via"), F.lit(" chose it"),
                   F.when(F.col("n_friends") > 1, F.concat(F.lit(", and "), (F.col("n_friends") - 1).cast("string"),
                                                           F.lit(" more of your friends"))).otherwise(F.lit(""))))
               .drop("n_friends"))
    category = (top.where(F.col("source") == "popular_category")
                .withColumn("reason", F.concat(F.lit("Popular lately in "), F.col("via"),
                                               F.lit(", one of your favourite categories"))))
    als_rows = top.where(F.col("source") == "als")
    why = recommend.reasons_from_history(als_rows, user_profiles, als_vectors, items, history)
    als_rows = (als_rows.join(why, ["user_id", "item_id"], "left")
                .withColumn("reason", F.coalesce("reason", F.lit("People with tastes like yours chose it"))))
    cols = [*top.columns, "reason"]
    out = content.select(*cols)
    for part in (ease_rows, friends, category, als_rows):
        out = out.unionByName(part.select(*cols))
    return out


# --------------------------------------------------------------------------- the job

@dataclass
class Ranked:
    rows: DataFrame  # gold.recommendations rows of the users the ranker covered
    users: DataFrame  # user_id of those users
    candidates: dict[str, int]  # candidate rows per source (an item counts once per source that found it)


def ranked_nightly(spark: SparkSession, events: DataFrame, users: DataFrame, items: DataFrame,
                   user_profiles: DataFrame, user_factors: DataFrame, item_factors: DataFrame,
                   ease_model: EaseModel | None, item_embeddings: DataFrame | None, neighbors: DataFrame | None,
                   social: DataFrame | None, settings: Settings, key: bytes, model: Champion, ds: str) -> Ranked:
    """The ranked recommendations of ``users`` (active users) for ``ds``; see the module doc. ``model`` may be
    any logged ranker pyfunc (the evaluation ranks with one it has not registered)."""
    conf = settings.recommend
    f = features.features_from(spark, events, user_profiles, user_factors, item_factors, ease_model, items,
                               item_embeddings, social, settings, key)
    cands = candidates.generate(spark, f, users, neighbors, conf).localCheckpoint()
    counts = {r["s"]: r["count"] for r in cands.select(F.explode("sources").alias("s")).groupBy("s").count().collect()}
    rows = features.assemble(cands, f, settings.ranker.recent_items, conf.als_candidates, conf.ease_candidates)
    archive = ship_model(spark, model.uri, os.path.join(settings.scratch_dir, "champion"))
    scored = score(rows.select("user_id", "item_id", "sources", "source", "via", "dense", "recent_items"), archive)
    if item_embeddings is not None:
        div_vectors = item_embeddings.select("item_id", F.col("embedding").alias("features"))
    else:
        div_vectors = item_factors.select("item_id", "features")
    top = diversify(scored.drop("dense", "recent_items"), div_vectors, conf.top_n, conf.mmr_lambda,
                    conf.mmr_pool).localCheckpoint()
    out = with_reasons(top, f, user_profiles, items, item_factors, conf.reason_history_items)
    out = out.select("user_id", "rank", "item_id", "score", "reason", "source",
                     F.lit(model.run_id).cast("string").alias("model_run_id"),
                     F.lit(model.tag).alias("model_version"), F.lit(ds).alias("ds"))
    return Ranked(out, top.select("user_id").distinct(), counts)
