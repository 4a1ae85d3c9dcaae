"""Scoring: the ranked nightly path (candidates from five sources, the champion ranker, MMR, reasons) and the
champion pyfunc shipped to the executors.

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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from liverec import candidates, features
from liverec.config import Settings
from liverec.diversity import diversify
from liverec.ease import EaseModel
from liverec.reasons import with_reasons
from liverec.registry import Champion

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



def ship_model(spark: SparkSession, model_uri: str, scratch: str, variant: str = "auto") -> str:
    """Download ``model_uri`` on the driver, zip it and add it to the job's files; returns the file name
    the executors open with SparkFiles (the registry need not be reachable from them). ``variant``
    (``ranker.scoring_variant``) must be one the version holds: checked here, not in an executor."""
    import mlflow

    from liverec.ranker import compiled

    os.makedirs(scratch, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="champion-", dir=scratch)
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder)
    compiled.require(Path(local), variant, model_uri)
    archive = shutil.make_archive(os.path.join(folder, "champion"), "zip", local)
    named = os.path.join(folder, f"liverec-champion-{os.path.basename(folder)}.zip")
    os.replace(archive, named)
    spark.sparkContext.addFile(named)
    return os.path.basename(named)



def score(rows: DataFrame, archive: str, threads: int, variant: str) -> DataFrame:
    """rows (item_id, recent_items, dense, ...) -> the same rows + ``score`` from the shipped model, with
    ``threads`` torch / ONNX Runtime threads per Python worker (``ranker.score_threads``; 0 = their default)
    and its ``variant`` (``ranker.scoring_variant``)."""
    from liverec.ranker import compiled
    from liverec.ranker.pyfunc import score_examples

    schema = T.StructType([*rows.schema.fields, T.StructField("score", T.DoubleType())])

    def apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        model = _scorer(archive)
        compiled.choose(model.unwrap_python_model(), variant, threads)
        for pdf in batches:
            if len(pdf):
                pdf = pdf.assign(score=score_examples(model, pdf))
            else:
                pdf = pdf.assign(score=pd.Series(dtype=np.float64))
            yield pdf

    return rows.mapInPandas(apply, schema)


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
    archive = ship_model(spark, model.uri, os.path.join(settings.scratch_dir, "champion"),
                         settings.ranker.scoring_variant)
    scored = score(rows.select("user_id", "item_id", "sources", "source", "via", "dense", "recent_items"), archive,
                   settings.ranker.score_threads, settings.ranker.scoring_variant)
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
