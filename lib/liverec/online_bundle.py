"""The online model's bundle: the arrays and metadata a request needs, collected in Spark.

``publish_online`` (Spark, nightly after recommend_nightly) calls :func:`build_bundle` to gather from the gold
tables of one ds item ALS factors, text embeddings, content neighbours, item statistics, each known user's
profile features, seen items with their ALS strengths, the user's friends' items, the latest nightly rows and
EASE's weights, packed as numpy arrays (per-user lists as CSR: an indptr over users, item indices, values) and
a JSON-able ``meta``; :func:`write_bundle` saves them as the pyfunc's artifacts, which
``liverec.online.OnlineScorer`` loads at serving time. :func:`key_check` lets the server tell that it holds
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

KEY_CHECK_TEXT = "liverec-online-key-check"


def key_check(key: bytes) -> str:
    return pseudonymise_value(KEY_CHECK_TEXT, key)  # the key's fingerprint: the pseudonym of a fixed text


def build_bundle(spark: Any, events: Any, items: Any, user_profiles: Any, user_factors: Any, item_factors: Any,
                 ease_model: Any, item_embeddings: Any, neighbors: Any, social: Any, nightly: Any, settings: Any,
                 key: bytes, ds: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta): everything a request needs, collected from the gold tables of ``ds`` (model-sized:
    one row per item and per known user, plus each user's seen items; EASE's weights are n x n over its items,
    which ``ease.max_items`` bounds)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from liverec import als, catalog, features

    conf, oconf = settings.recommend, settings.online
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
    item_stats = item_rows[["log_item_users", "log_item_recent_users", "log_item_age_days", "item_unseen"]] \
        .to_numpy(dtype=np.float32)
    popular = np.lexsort((np.arange(n_items), -item_stats[:, 0], -item_stats[:, 1]))[:oconf.candidates]

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

    # users: profile features (ranker.examples' user columns)
    users = f.users.orderBy("user_id").toPandas()
    user_ids = [str(u) for u in users["user_id"]]
    uindex = {u: n for n, u in enumerate(user_ids)}
    user_stats = users[["log_user_events", "log_user_items", "log_days_since_last", "log_friend_count"]] \
        .to_numpy(dtype=np.float32)
    content = np.zeros((len(user_ids), emb.shape[1]), dtype=np.float32)
    for n, v in enumerate(users["content_vector"]):
        if v is not None:
            content[n] = np.asarray(v, dtype=np.float32)
    affinity = [dict(a) if a is not None else {} for a in users["category_affinity"]]
    recent = [[index[i] for i in (r if r is not None else []) if i in index] for r in users["recent_items"]]

    # seen items with the ALS strength (0 outside ALS's window): the fold-in's observations
    strengths = als.strengths(catalog.within_days(events, settings.als.window_days), settings.als,
                              settings.clean.event_weights)
    seen = (f.seen.join(strengths, ["user_id", "item_id"], "left")
            .select("user_id", "item_id", F.coalesce("strength", F.lit(0.0)).alias("strength")).toPandas())
    seen_ptr, seen_idx, seen_val = _csr(seen, uindex, index, "strength")

    # friends' items (the friend candidate source, its best friend_candidates per user)
    best = Window.partitionBy("user_id").orderBy(F.col("n_friends").desc(), "item_id")
    fr = (f.friends_on_item.withColumn("fr", F.row_number().over(best))
          .where(F.col("fr") <= max(conf.friend_candidates, 0)).toPandas())
    fr_ptr, fr_idx, fr_n = _csr(fr, uindex, index, "n_friends")
    friend_of = {}
    for u, i, a in zip(fr["user_id"], fr["item_id"], fr["a_friend"], strict=True):
        friend_of[f"{u} {i}"] = str(a)

    # the latest nightly rows
    rows = nightly.select("user_id", "rank", "item_id", "score", "reason").toPandas() \
        .sort_values(["user_id", "rank"], kind="stable")
    nt_ptr, nt_idx, _ = _csr(rows.assign(one=1.0), uindex, index, "one")
    nightly_reason = {f"{u} {i}": str(r) for u, i, r in zip(rows["user_id"], rows["item_id"], rows["reason"],
                                                            strict=True)}

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
        "popular": popular.astype(np.int32), "neighbors": nb, "neighbor_sim": nb_sim, "user_stats": user_stats,
        "content": content, "seen_ptr": seen_ptr, "seen_idx": seen_idx, "seen_val": seen_val,
        "friend_ptr": fr_ptr, "friend_idx": fr_idx, "friend_n": fr_n, "nightly_ptr": nt_ptr, "nightly_idx": nt_idx,
    }
    meta = {
        "ds": ds, "item_ids": item_ids, "titles": [None if t is None or (isinstance(t, float) and math.isnan(t))
                                                   else str(t) for t in item_rows["title"]],
        "categories": [list(c) if c is not None else [] for c in item_rows["categories"]],
        "user_ids": user_ids, "affinity": affinity, "recent": recent, "friend_of": friend_of,
        "nightly_reason": nightly_reason,
        "event_weights": dict(settings.clean.event_weights), "als": dataclasses.asdict(settings.als),
        "alpha": settings.als.alpha, "reg_param": settings.als.reg_param,
        "als_candidates": conf.als_candidates, "ease_candidates": conf.ease_candidates,
        "neighbor_history": conf.neighbor_history,
        "mmr_lambda": conf.mmr_lambda, "mmr_pool": conf.mmr_pool,
        "candidates": oconf.candidates, "session_slots": oconf.session_slots, "default_k": oconf.default_k,
        "max_k": oconf.max_k,
        "max_session": oconf.max_session, "max_exclude": oconf.max_exclude, "max_requests": oconf.max_requests,
        "key_env": settings.ids.key_env, "demo_key": settings.ids.demo_key if settings.demo_mode else None,
        "key_check": key_check(key),
    }
    return arrays, meta


def _positions(ids: pd.Series, index: dict[str, int]) -> np.ndarray:
    """Each id's position in ``index`` (-1 when absent), vectorised."""
    return ids.astype(str).map(index).fillna(-1).to_numpy(dtype=np.int64)


def _csr(rows: pd.DataFrame, uindex: dict[str, int], index: dict[str, int], value: str
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (user_id, item_id, value) in their order -> (indptr over users, item indices, values); rows of
    unknown users or items are dropped, each user's rows keep their order."""
    u, i = _positions(rows["user_id"], uindex), _positions(rows["item_id"], index)
    keep = (u >= 0) & (i >= 0)
    u, i, v = u[keep], i[keep], rows[value].to_numpy(dtype=np.float64)[keep]
    order = np.argsort(u, kind="stable")
    ptr = np.zeros(len(uindex) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(u, minlength=len(uindex)))
    return ptr, i[order].astype(np.int32), v[order].astype(np.float32)


def write_bundle(arrays: dict[str, np.ndarray], meta: dict[str, Any], folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "bundle.npz", **arrays)
    (folder / "bundle.json").write_text(json.dumps(meta))
    return {"arrays": str(folder / "bundle.npz"), "meta": str(folder / "bundle.json")}
