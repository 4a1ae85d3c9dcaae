"""What liverec publishes, as library calls: the stages (build_ranker_examples, train_ranker,
recommend_nightly) call these over the tables of a ds, and the evaluation calls the same functions over
the training part of a hold-out split, so the number it reports is the number of the published table.

- ``make_examples``: labels held out of the events (``ranker.label_split``), features and the candidate
  union of the remaining history, labelled candidate rows with vocabulary indices.
- ``publish``: the nightly rows of a set of users: the ranked path when a ranker is given (candidates,
  features, scores, MMR, reasons), the baseline chain (the chosen baseline, ALS, content, popularity) for
  everyone else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from liverec import candidates, fallback, features, scoring, splits
from liverec.config import Settings
from liverec.ease import EaseModel
from liverec.errors import InputError
from liverec.progress import Progress
from liverec.ranker import examples as ex
from liverec.registry import BASELINES, Champion


@dataclass
class ExampleSet:
    rows: DataFrame  # gold.ranker_examples rows without ds (labelled candidates with item_idx / recent_idx)
    vocab: DataFrame  # gold.ranker_items rows without ds
    history_events: int
    held_pairs: int  # held-out (user, item) pairs new to a user with a history
    cutoff: float | None  # epoch seconds
    recall: dict[str, float]  # share of the held-out pairs the candidate union (and each source) found
    ease_fitted: bool


def make_examples(spark: SparkSession, events: DataFrame, items: DataFrame, item_embeddings: DataFrame | None,
                  neighbors: DataFrame | None, social: DataFrame | None, settings: Settings, key: bytes,
                  checkpoint_dir: str, shown: DataFrame | None = None) -> ExampleSet:
    """The ranker's training and validation examples from ``events`` (see the module doc); ``shown``: weighted
    negatives from the logged impressions (``examples.impression_negatives``), or None. Raises InputError,
    with the counts and the conf keys to change, when the split leaves no history, no held-out pair, or no
    held-out pair among the candidates."""
    conf = settings.ranker
    history, held, cutoff = ex.label_split(events, settings)
    history, held = history.cache(), held.cache()
    n_hist, n_held = history.count(), held.count()
    where = f"ranker.label_split={conf.label_split}, ranker.label_fraction={conf.label_fraction}"
    if n_hist == 0 or n_held == 0:
        raise InputError(f"holding labels out of {n_hist + n_held:,} events ({where}) leaves {n_hist:,} history events "
                         f"and {n_held:,} held-out pairs new to a user with a history: the ranker needs both (change "
                         "ranker.label_fraction or ranker.label_split)")
    f = features.history_features(spark, history, items, item_embeddings, social, settings, key, checkpoint_dir)
    users = held.select("user_id").distinct().join(f.users.select("user_id"), "user_id", "left_semi")
    cands = candidates.candidate_rows(f, users, neighbors, settings).localCheckpoint()
    found = candidates.recall(cands, held)
    rows = ex.build_examples(cands, held, settings, shown)
    vocab = ex.vocabulary(f).localCheckpoint()
    rows = ex.with_indices(rows, vocab).withColumn("cutoff_ts", splits.timestamp(cutoff or 0.0)).localCheckpoint()
    per_split = {r["split"]: r["n"] for r in rows.where(F.col("label") > 0).groupBy("split")
                 .agg(F.count("*").alias("n")).collect()}
    if not per_split.get("train") or not per_split.get("valid"):
        raise InputError(
            f"of {n_held:,} held-out pairs ({where}), {int(found['union'] * n_held):,} are among their users' "
            f"candidates, {per_split.get('train', 0):,} of them for training users and {per_split.get('valid', 0):,} "
            "for validation users: the ranker needs positives in both (more data, a larger ranker.label_fraction, "
            "another ranker.validation_fraction, or more recommend.*_candidates)")
    history.unpersist()
    held.unpersist()
    return ExampleSet(rows, vocab, n_hist, n_held, cutoff, found, f.ease is not None)


def choose_baseline(conf_baseline: str, measured: str | None, ease_model: EaseModel | None) -> str:
    """The baseline the nightly job publishes without a winning ranker: ``recommend.baseline`` (``auto`` = the
    one the promotion gate measured best, else EASE when there is a model, else ALS)."""
    if conf_baseline not in ("auto", *BASELINES):
        raise InputError(f"recommend.baseline must be auto, ease or als, got {conf_baseline!r}")
    wanted = conf_baseline if conf_baseline != "auto" else (measured or "ease")
    return "ease" if wanted == "ease" and ease_model is not None else "als"


@dataclass
class Published:
    rows: DataFrame  # gold.recommendations rows (with ds)
    ranked_users: int | None  # users the ranker ranked (None without a ranker)
    candidates: dict[str, int]  # candidate rows per source (ranked path only)
    popularity: Any = None  # the differentially private popularity release the baseline chain ranked by, if any


def publish(spark: SparkSession, events: DataFrame, users: DataFrame, items: DataFrame, user_profiles: DataFrame,
            user_factors: DataFrame | None, item_factors: DataFrame | None, als_run_id: str | None,
            ease_model: EaseModel | None, ease_run_id: str | None, item_embeddings: DataFrame | None,
            neighbors: DataFrame | None, social: DataFrame | None, settings: Settings, key: bytes,
            ranker: Champion | None, baseline: str, ds: str, note: str = "",
            content_version: str = "content", progress: Progress | None = None, blocked: Any = None) -> Published:
    """gold.recommendations rows of ``users`` for ``ds``: ranked by ``ranker`` where it can (it needs ALS
    factors and top_n candidates), the baseline chain for everyone else (``note`` is appended to its EASE / ALS
    model_version). ``blocked`` (``liverec.policy.Blocked``): items no path may publish, removed before each
    top N is cut."""
    conf = settings.recommend
    parts: list[DataFrame] = []
    rest, ranked_users, counts = users, None, {}
    if ranker is not None and user_factors is not None and item_factors is not None:
        ranked = scoring.ranked_nightly(spark, events, users, items, user_profiles, user_factors, item_factors,
                                        ease_model, item_embeddings, neighbors, social, settings, key, ranker, ds,
                                        progress, blocked)
        parts.append(ranked.rows)
        rest = users.join(ranked.users, "user_id", "left_anti").localCheckpoint()
        ranked_users, counts = ranked.users.count(), ranked.candidates
    release = None
    if ranked_users is None or not rest.isEmpty():  # the baseline chain's jobs cost seconds even for no one
        if settings.privacy.popularity_epsilon > 0:
            from liverec import privacy

            release = privacy.item_popularity(events, items, settings.privacy.popularity_epsilon,
                                              settings.privacy.popularity_max_items, key)
        parts.append(fallback.nightly(events, items, user_profiles, user_factors, item_factors, als_run_id, conf, ds,
                                       item_embeddings, content_version, users=rest, als_version_note=note,
                                       ease_model=ease_model, ease_run_id=ease_run_id, baseline=baseline,
                                       popularity=release, blocked=blocked))
    rows = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    return Published(rows, ranked_users, counts, release)
