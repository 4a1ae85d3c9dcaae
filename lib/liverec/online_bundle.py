"""The online model's bundle: the arrays and metadata a request needs, collected in Spark.

``publish_online`` (Spark, nightly after recommend_nightly) calls :func:`build_bundle` to gather from the gold
tables of one ds what is catalogue-sized (item ALS factors, text embeddings, content neighbours, item
statistics, EASE's weights), packed as numpy arrays and a JSON-able ``meta``; :func:`write_bundle` saves them
as the pyfunc's artifacts, which ``liverec.online.OnlineScorer`` loads at serving time. What is per user
(profile features, content vector, seen items with their ALS strengths, friends' items, the nightly rows, the
ALS factor) is one JSON record per user (:func:`user_records`), which publish_online materialises in the
online store (``liverec.online_store``); the served artifact's size does not depend on the number of users.
:func:`key_check` lets the server tell that it holds
the key the user ids were pseudonymised with.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liverec.cleaning import pseudonymise_value
from liverec.features import ITEM_STATS, USER_STATS, friend_counts

KEY_CHECK_TEXT = "liverec-online-key-check"


def key_check(key: bytes) -> str:
    return pseudonymise_value(KEY_CHECK_TEXT, key)  # the key's fingerprint: the pseudonym of a fixed text


def build_bundle(spark: Any, events: Any, items: Any, user_profiles: Any, user_factors: Any, item_factors: Any,
                 ease_model: Any, item_embeddings: Any, neighbors: Any, social: Any, nightly: Any, settings: Any,
                 key: bytes, ds: str) -> tuple[dict[str, np.ndarray], dict[str, Any], Any]:
    """(arrays, meta, records): what the served model holds, collected from the gold tables of ``ds``
    (catalogue-sized: one row per item, EASE's weights n x n over its items, which ``ease.max_items`` bounds),
    and the user records for the online store as a Spark DataFrame (:func:`user_records`)."""
    from pyspark.sql import functions as F

    from liverec import features, policy, tables

    conf, oconf = settings.recommend, settings.online
    policy_blocked = policy.load(settings.policy, items)  # checked before the work: a bad policy file stops here
    f = features.features_from(spark, events, user_profiles, user_factors, item_factors, ease_model, items,
                               item_embeddings, social, settings, key)
    item_rows = (f.items.join(items.select("item_id", "title"), "item_id", "left")
                 .orderBy("item_id").toPandas())
    if item_rows.empty:
        raise ValueError("no items: nothing to publish")
    item_ids = [str(i) for i in item_rows["item_id"]]
    index = {i: n for n, i in enumerate(item_ids)}
    n_items = len(item_ids)
    rank = int(item_factors.select(F.size("features")).first()[0])
    factors = np.zeros((n_items, rank), dtype=np.float32)
    has_factor = np.zeros(n_items, dtype=bool)
    for n, v in enumerate(item_rows["item_factor"]):
        if v is not None:
            factors[n], has_factor[n] = np.asarray(v, dtype=np.float32), True
    dim = next((len(v) for v in item_rows["embedding"] if v is not None), 0)
    emb = np.zeros((n_items, max(dim, 1)), dtype=np.float32)
    for n, v in enumerate(item_rows["embedding"]):
        if v is not None:
            emb[n] = np.asarray(v, dtype=np.float32)
    item_stats = item_rows[list(ITEM_STATS)].to_numpy(dtype=np.float64)  # as features.item_arrays holds them
    # the content policy's items: banned from every answer; the popular list (a degraded answer's) is cut without them
    blocked = policy_blocked.mask(item_ids)
    popular = np.lexsort((np.arange(n_items), -item_stats[:, 0], -item_stats[:, 1]))
    popular = popular[~blocked[popular]][:oconf.candidates]

    # neighbours: the best neighbors_per_item of each item (-1 = none)
    nb = np.full((n_items, max(conf.neighbors_per_item, 1)), -1, dtype=np.int32)
    nb_sim = np.zeros(nb.shape, dtype=np.float32)
    if neighbors is not None and conf.neighbors_per_item > 0:
        rows = neighbors.where(F.col("rank") <= conf.neighbors_per_item).select(
            "item_id", "rank", "neighbor_id", "similarity").toPandas()
        a, b = _positions(rows["item_id"], index), _positions(rows["neighbor_id"], index)
        ok = (a >= 0) & (b >= 0)
        at = rows["rank"].to_numpy(dtype=np.int64)[ok] - 1
        nb[a[ok], at] = b[ok]
        nb_sim[a[ok], at] = rows["similarity"].to_numpy(dtype=np.float32)[ok]

    # users: one JSON record each for the online store (liverec.online_store), built in Spark; the bundle keeps
    # only catalogue-sized arrays
    records = user_records(f, events, nightly, settings)

    # EASE: B over its own items, and where each of them sits in the catalogue
    if ease_model is not None:
        ease_items = _positions(pd.Series(ease_model.item_ids), index)
        keep = ease_items >= 0
        ease_weights = ease_model.weights[np.ix_(keep, keep)].astype(np.float32)
        ease_items = ease_items[keep].astype(np.int32)
    else:
        ease_items, ease_weights = np.zeros(0, dtype=np.int32), np.zeros((0, 0), dtype=np.float32)

    arrays = {
        "ease_items": ease_items, "ease_weights": ease_weights,
        "factors": factors, "has_factor": has_factor, "embeddings": emb, "item_stats": item_stats,
        "popular": popular.astype(np.int32), "neighbors": nb, "neighbor_sim": nb_sim, "blocked": blocked,
    }
    meta = {
        "ds": ds, "item_ids": item_ids, "titles": [None if t is None or (isinstance(t, float) and math.isnan(t))
                                                   else str(t) for t in item_rows["title"]],
        "categories": [list(c) if c is not None else [] for c in item_rows["categories"]],
        "event_weights": dict(settings.clean.event_weights), "als": dataclasses.asdict(settings.als),
        "alpha": settings.als.alpha, "reg_param": settings.als.reg_param,
        "als_candidates": conf.als_candidates, "ease_candidates": conf.ease_candidates,
        "friend_candidates": conf.friend_candidates,
        "neighbor_history": conf.neighbor_history,
        "mmr_lambda": conf.mmr_lambda, "mmr_pool": conf.mmr_pool, "reranker": conf.reranker,
        "calibration_lambda": conf.calibration_lambda,
        "candidates": oconf.candidates, "session_slots": oconf.session_slots, "default_k": oconf.default_k,
        "max_k": oconf.max_k,
        "max_session": oconf.max_session, "max_exclude": oconf.max_exclude, "max_requests": oconf.max_requests,
        "store_url": tables.online_store_url(settings), "store_prefix": oconf.store_prefix,
        "store_timeout_s": oconf.store_timeout_s, "store_retry_s": oconf.store_retry_s,
        "exploration_share": settings.feedback.exploration_share,
        "exploration_temperature": settings.feedback.exploration_temperature,
        "impressions_landing": tables.impressions_landing(settings),
        "impressions_flush_seconds": settings.feedback.flush_seconds,
        "impressions_flush_rows": settings.feedback.flush_rows,
        "key_env": settings.ids.key_env, "demo_key": settings.ids.demo_key if settings.demo_mode else None,
        "key_check": key_check(key),
    }
    return arrays, meta, records


# the fields of a user's record in the online store (JSON, built by user_records, read by
# liverec.online_requests.UserState.decode): profile features, content vector, category shares, recent items,
# seen items with their ALS strengths, friends' items, the nightly rows, the ALS factor and the newest event time
USER_RECORD_FIELDS = ("stats", "content", "affinity", "recent", "seen", "strength", "friend_items", "friend_n",
                      "friend_of", "nightly", "nightly_reason", "factor", "as_of")


def user_records(f: Any, events: Any, nightly: Any, settings: Any) -> Any:
    """One row per known user (``user_id``, ``value``: the JSON record of USER_RECORD_FIELDS), every part computed
    by Spark from the features of ds: ``f.users`` (profile features, recent items, content vector, ALS factor),
    the seen items with ALS's strength (0 outside ALS's window), every friends' item with how many friends chose it
    (best first; one friend each for the first ``recommend.friend_candidates``), the nightly rows in rank order and
    the user's newest event time (stream events after it are new)."""
    from pyspark.sql import functions as F

    from liverec import als, catalog

    conf = settings.recommend
    strengths = als.strengths(catalog.within_days(events, settings.als.window_days), settings.als,
                              settings.clean.event_weights)
    seen = (f.seen.join(strengths, ["user_id", "item_id"], "left")
            .groupBy("user_id").agg(F.sort_array(F.collect_list(F.struct(
                "item_id", F.coalesce("strength", F.lit(0.0)).alias("strength")))).alias("_seen")))
    # every item a friend chose (log_friends_on_item counts them all, as the batch does), best first in the friends
    # source's own order; one friend (for reasons) for the first friend_candidates, the source's own
    friends = f.friends.select("user_id", F.col("fr").alias("_friends"))
    rows = (nightly.groupBy("user_id").agg(F.sort_array(F.collect_list(F.struct("rank", "item_id", "reason")))
                                           .alias("_nightly")))
    last = events.groupBy("user_id").agg(F.max("ts").cast("double").alias("as_of"))
    empty = F.array().cast("array<string>")
    users = (f.users.join(seen, "user_id", "left").join(friends, "user_id", "left").join(rows, "user_id", "left")
             .join(last, "user_id", "left"))
    record = F.struct(
        # JSON has no NaN: a stat that is NaN or missing is written as 0
        F.array(*[F.coalesce(F.nanvl(F.col(c).cast("double"), F.lit(0.0)), F.lit(0.0)) for c in USER_STATS])
        .alias("stats"),
        F.col("content_vector").alias("content"), F.col("category_affinity").alias("affinity"),
        F.coalesce("recent_items", empty).alias("recent"),
        F.coalesce(F.col("_seen.item_id"), empty).alias("seen"),
        F.coalesce(F.col("_seen.strength"), F.array().cast("array<double>")).alias("strength"),
        F.coalesce(F.col("_friends.item_id"), empty).alias("friend_items"),
        F.coalesce(friend_counts("_friends"), F.array().cast("array<long>")).alias("friend_n"),
        F.coalesce(F.slice(F.col("_friends.a_friend"), 1, max(conf.friend_candidates, 1)), empty).alias("friend_of"),
        F.coalesce(F.col("_nightly.item_id"), empty).alias("nightly"),
        F.coalesce(F.col("_nightly.reason"), empty).alias("nightly_reason"),
        F.col("user_factor").alias("factor"), F.col("as_of"))
    return users.select("user_id", F.to_json(record, {"ignoreNullFields": "false"}).alias("value"))


def _positions(ids: pd.Series, index: dict[str, int]) -> np.ndarray:
    """Each id's position in ``index`` (-1 when absent), vectorised."""
    return ids.astype(str).map(index).fillna(-1).to_numpy(dtype=np.int64)


def write_bundle(arrays: dict[str, np.ndarray], meta: dict[str, Any], folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "bundle.npz", **arrays)
    (folder / "bundle.json").write_text(json.dumps(meta))
    return {"arrays": str(folder / "bundle.npz"), "meta": str(folder / "bundle.json")}
