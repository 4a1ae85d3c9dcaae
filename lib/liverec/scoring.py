"""Scoring: the ranked nightly path (candidates from five sources, the champion ranker, MMR, reasons) and the
champion pyfunc shipped to the executors.

Per active user:
1. candidates: ``liverec.candidates`` (EASE's and ALS's top unseen items, content neighbours of recent
   items, popular items of the favourite categories, friends' items), the union the ranker was trained on.
2. features: ``liverec.features`` over everything up to ds and that ds's gold tables, the same code
   that built the ranker's training examples (no training/serving skew).
3. scores: the ``@champion`` version of the registered ranker (an MLflow pyfunc), shipped to the
   executors as a file and loaded once per Python worker, applied to one row per user (its candidates
   as arrays) in ``mapInArrow``, one list per model call.
4. re-ranking, in the same pass (``liverec.diversity``, ``recommend.reranker``): maximal marginal relevance over
   the best ``mmr_pool`` candidates (``mmr_lambda`` 1 = by score alone), with the cosine of the items' text
   embeddings (ALS factors when there are none), or the calibrated re-ranker (the category mix of the user's
   history, ``calibration_lambda``).
5. the top N, each with a reason naming what led to it (a history item, a friend, a category) and
   the ranker's version.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from liverec import candidates, features
from liverec.config import Settings
from liverec.ease import EaseModel
from liverec.progress import Progress
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



# what ``ranked_lists`` writes: each user's top N in rank order, with how many of the user's friends chose the item (for
# the reasons); the rank-1 row also says how many candidates the user had, and how many each source found (SOURCES
# order; an item counts once per source that found it)
LISTS_SCHEMA = ("user_id string, rank int, item_id string, score double, sources array<string>, source string, "
                "via string, n_friends int, n_candidates int, by_source array<int>")


def _list_scores(model: Any, inner: Any, vocab_idx: np.ndarray | None, items: np.ndarray, recent: list[str],
                 dense: np.ndarray) -> np.ndarray:
    """One user's candidate scores: a liverec ranker's ``score_rows`` (vocabulary indices, one list), any other
    pyfunc through ``score_examples``."""
    if vocab_idx is not None:
        return inner.score_rows(vocab_idx, recent, dense)
    from liverec.ranker.pyfunc import score_examples

    frame = pd.DataFrame({"item_id": items, "recent_items": [recent] * len(items), "dense": list(dense)})
    return score_examples(model, frame)


def ranked_lists(f: features.Features, users: DataFrame, neighbors: DataFrame | None, settings: Settings,
                 archive: str, by_embedding: bool, blocked: Any = None) -> DataFrame:
    """LISTS_SCHEMA rows of ``users``: their candidates and features (``candidates.per_user``), scored by the
    shipped model one user's list per call (``ranker.score_threads`` torch / ONNX Runtime threads per Python
    worker, ``ranker.scoring_variant``), then the ``recommend.top_n`` that the re-ranker (``recommend.reranker``:
    maximal marginal relevance by the cosine of the items' text embeddings (``by_embedding``) or ALS factors, or
    the calibrated one) picks from the ``recommend.mmr_pool`` best, for the whole batch of users at once. Only those
    rows leave the executor. ``blocked``: the content policy's ``liverec.policy.Blocked``, never a candidate."""
    from liverec import diversity
    from liverec.ranker import compiled

    conf, threads, variant = settings.recommend, settings.ranker.score_threads, settings.ranker.scoring_variant
    if not 0.0 <= conf.mmr_lambda <= 1.0:
        raise ValueError(f"recommend.mmr_lambda must be between 0 and 1, got {conf.mmr_lambda}")
    n, size = conf.top_n, max(conf.mmr_pool, conf.top_n)

    def setup(items: features.ItemArrays) -> tuple[Any, Any, np.ndarray | None, np.ndarray]:
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        model = _scorer(archive)
        inner = model.unwrap_python_model()
        compiled.choose(inner, variant, threads)
        vocab = getattr(inner, "vocab", None) if hasattr(inner, "score_rows") else None
        vocab_idx = None if vocab is None else np.array([vocab.get(i, 0) for i in items.ids], dtype=np.int64)
        return model, inner, vocab_idx, diversity.unit_rows(items.embeddings if by_embedding else items.factors)

    def emit(batch: candidates.Batch, lists: candidates.Lists, dense: np.ndarray, items: features.ItemArrays,
             state: Any) -> Any:
        import pyarrow as pa

        model, inner, vocab_idx, unit = state
        recent = batch.recent_ids.to_pylist()
        users = [b for b in range(len(batch.user_ids)) if lists.offsets[b + 1] > lists.offsets[b]]
        scores = []
        for b in users:
            a, e = lists.offsets[b], lists.offsets[b + 1]
            scores.append(np.asarray(_list_scores(model, inner, None if vocab_idx is None else vocab_idx[lists.item[a:e]],
                                                  items.ids[lists.item[a:e]], recent[b] or [], dense[a:e]),
                                     dtype=np.float64))
        chosen, rel = diversity.pools(scores, size)
        counts = np.array([len(c) for c in chosen], dtype=np.int64)
        if conf.reranker == "calibrated":
            cats, target = diversity.calibration_inputs(
                [batch.seen[b] for b in users], [lists.item[lists.offsets[b] + c] for b, c in zip(users, chosen,
                                                                                                   strict=True)],
                size, items.category_ptr, items.category_idx, len(items.categories))
            picks = diversity.calibrated_batch(rel, cats, target, counts, n, conf.calibration_lambda)
        else:
            vecs = np.zeros((len(users), size, unit.shape[1]), dtype=np.float32)
            for j, (b, c) in enumerate(zip(users, chosen, strict=True)):
                vecs[j, :len(c)] = unit[lists.item[lists.offsets[b] + c]]
            picks = diversity.mmr_batch(rel, vecs @ vecs.transpose(0, 2, 1), counts, n, conf.mmr_lambda)
        row, rank, score = [], [], []
        for j, b in enumerate(users):
            picked = chosen[j][picks[j][picks[j] >= 0]]
            row.append(lists.offsets[b] + picked)
            rank.append(np.arange(1, len(picked) + 1, dtype=np.int32))
            score.append(scores[j][picked])
        cat = (lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dtype=dt))  # noqa: E731
        take, ranks = cat(row, np.int64), cat(rank, np.int32)
        names, off = candidates.source_lists(lists.sources[take])
        by_source = np.stack([np.bincount(lists.user, weights=(lists.sources >> p) & 1, minlength=len(batch.user_ids))
                              for p in range(len(candidates.SOURCES))], axis=1).astype(np.int32)
        per_user = np.diff(lists.offsets).astype(np.int32)
        top = ranks == 1
        owner = lists.user[take]
        return pa.RecordBatch.from_arrays([
            pa.array(batch.user_ids[owner], type=pa.string()), pa.array(ranks, type=pa.int32()),
            pa.array(items.ids[lists.item[take]], type=pa.string()), pa.array(cat(score, np.float64)),
            pa.ListArray.from_arrays(pa.array(off, type=pa.int32()), pa.array(names, type=pa.string())),
            pa.array(lists.source_names()[take], type=pa.string()), pa.array(lists.via[take], type=pa.string()),
            pa.array(batch.friends_on(owner, lists.item[take], len(items.ids)).astype(np.int32)),
            pa.array(per_user[owner], type=pa.int32(), mask=~top),
            pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(np.where(top, len(candidates.SOURCES), 0))],
                                              type=pa.int32()),
                                     pa.array(by_source[owner[top]].reshape(-1), type=pa.int32()),
                                     mask=pa.array(~top))],
            names=[c.split(" ")[0] for c in LISTS_SCHEMA.split(", ")])

    return candidates.per_user(f, users, neighbors, settings, emit, LISTS_SCHEMA, setup, blocked)


@dataclass
class Ranked:
    rows: DataFrame  # gold.recommendations rows of the users the ranker covered
    users: DataFrame  # user_id of those users
    candidates: dict[str, int]  # candidate rows per source (an item counts once per source that found it)


def ranked_nightly(spark: SparkSession, events: DataFrame, users: DataFrame, items: DataFrame,
                   user_profiles: DataFrame, user_factors: DataFrame, item_factors: DataFrame,
                   ease_model: EaseModel | None, item_embeddings: DataFrame | None, neighbors: DataFrame | None,
                   social: DataFrame | None, settings: Settings, key: bytes, model: Champion, ds: str,
                   progress: Progress | None = None, blocked: Any = None) -> Ranked:
    """The ranked recommendations of ``users`` (active users) for ``ds``; see the module doc. ``model`` may be
    any logged ranker pyfunc (the evaluation ranks with one it has not registered). With ``progress``, one
    line per step (features, candidates, ranked lists) with its seconds: where the job's time goes. ``blocked``:
    the items no list may hold (``liverec.policy.Blocked``)."""
    conf = settings.recommend
    f = features.features_from(spark, events, user_profiles, user_factors, item_factors, ease_model, items,
                               item_embeddings, social, settings, key)
    if progress:
        progress.step("features")
    archive = ship_model(spark, model.uri, os.path.join(settings.scratch_dir, "champion"),
                         settings.ranker.scoring_variant)
    lists = ranked_lists(f, users, neighbors, settings, archive, item_embeddings is not None,
                         blocked).localCheckpoint()
    firsts = lists.where(F.col("rank") == 1).agg(
        F.count("*").alias("users"), F.sum("n_candidates").alias("rows"),
        *[F.sum(F.col("by_source")[j]).alias(s) for j, s in enumerate(candidates.SOURCES)]).first()
    counts = {s: int(firsts[s]) for s in candidates.SOURCES if firsts[s]}
    if progress:  # rows: distinct (user, item) candidates; from_<source>: what each source found
        progress.step("ranked lists", firsts["users"], candidates=int(firsts["rows"] or 0),
                      **{f"from_{k}": v for k, v in sorted(counts.items())})
    # a user with fewer than top_n candidates left (the content policy may take some) gets the baseline chain's list
    full = lists.where(F.col("rank") == conf.top_n).select("user_id")
    top = lists.drop("n_candidates", "by_source").join(full, "user_id", "left_semi")
    out = with_reasons(top, user_profiles, items, item_factors, conf.reason_history_items)
    out = out.select("user_id", "rank", "item_id", "score", "reason", "source",
                     F.lit(model.run_id).cast("string").alias("model_run_id"),
                     F.lit(model.tag).alias("model_version"), F.lit(ds).alias("ds"))
    return Ranked(out, full, counts)
