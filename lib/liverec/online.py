"""Real-time recommendations: the ``liverec-online`` MLflow pyfunc and the stage that publishes it.

``publish_online`` (Spark, nightly after recommend_nightly) collects what a request needs into one
bundle: item ALS factors, text embeddings, content neighbours, item statistics, each known user's
profile features, seen items with their ALS strengths, the user's friends' items and the latest
nightly rows; it wraps them with the champion ranker in a pyfunc, registers it as
``online.registered_model`` and moves ``online.alias`` to it once it has answered a smoke request.

A request (one row of ``dataframe_records``) carries ``user_id`` (the raw id, pseudonymised here with
the same key as the batch; null for a visitor without history), ``session`` (recent events: item_id,
event_type, ts), ``viewing`` (the item on screen), ``k`` and ``exclude``. The scorer

1. folds the session into the user's ALS factor: the implicit-ALS normal equations over the fixed item
   factors, ``(YtY + sum c y y^T + reg * n I) x = sum (1 + c) y`` with ``c = alpha * strength`` over the
   user's known strengths plus the session's (Spark's own update, so without a session it gives back
   the nightly factor);
2. takes candidates from the user's nightly row, the content neighbours of the viewed item and of
   the session's newest items, the friends' items, EASE's best items over the history and the session,
   and the folded vector's best items (filled up to ``online.candidates``), never a seen, session or
   excluded item;
3. computes the ranker's dense features the way ``liverec.features`` does, with the session added to
   the user's counts, category affinity and content vector, and scores with the champion ranker,
   the session (newest first) ahead of the known recent items as its recent-item sequence;
4. re-ranks the ``recommend.mmr_pool`` best by maximal marginal relevance, keeps at least
   ``online.session_slots`` of the places for neighbours of the viewed and session items (so the live
   session always shows, even for a user with a long history), and returns ``k`` rows with score, rank,
   reason and source.

Bad requests raise ``RequestError`` (an MlflowException the scoring server answers with 400, or 404
for an unknown user); the server keeps serving.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import hashlib
import hmac
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from liverec.als import event_strength_value
from liverec.features import DENSE_FEATURES

KEY_CHECK_TEXT = "liverec-online-key-check"
REQUEST_FIELDS = ("user_id", "session", "viewing", "k", "exclude")
SESSION_FIELDS = ("item_id", "event_type", "ts", "value")
SOURCES = ("viewing", "session", "nightly", "friends", "ease", "als", "popular")  # the order they fill candidates
LIVE_SOURCES = ("viewing", "session")  # candidates the live session brought


def _request_error(message: str, not_found: bool = False) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

    return MlflowException(message, error_code=RESOURCE_DOES_NOT_EXIST if not_found else INVALID_PARAMETER_VALUE)


def key_check(key: bytes) -> str:
    return hmac.new(key, KEY_CHECK_TEXT.encode(), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- the bundle (built in Spark)

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


# --------------------------------------------------------------------------- requests

@dataclass
class Event:
    item: int
    event_type: str
    ts: float  # epoch seconds (request order when absent)
    strength: float


@dataclass
class Request:
    user: int | None  # row of the bundle's users, None for a visitor without history
    session: list[Event]  # newest first
    viewing: int | None
    k: int
    exclude: set[int] = field(default_factory=set)


def _plain(v: Any) -> Any:
    """numpy scalars (pandas hands them over) as Python ones; integral floats as ints."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return False


def _ts(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value) / 1000.0 if abs(value) > 1e11 else float(value)
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    raise _request_error(f"{where}.ts must be epoch seconds or an ISO-8601 time, got {value!r}")


# --------------------------------------------------------------------------- the scorer

class OnlineScorer:
    """The request path in numpy (the pyfunc's ``predict`` calls it; tests and benchmarks can too)."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], ranker: Any, key: bytes):
        if not hmac.compare_digest(key_check(key), meta["key_check"]):
            raise RuntimeError(
                f"the id key in ${meta['key_env']} is not the key this model's user ids were pseudonymised with: "
                "serve it with the key the batch jobs used")
        self.key, self.meta, self.ranker = key, meta, ranker
        for name, arr in arrays.items():
            setattr(self, name, arr)
        self.item_ids: list[str] = meta["item_ids"]
        self.index = {i: n for n, i in enumerate(self.item_ids)}
        self.uindex = {u: n for n, u in enumerate(meta["user_ids"])}
        self.weights: dict[str, float] = meta["event_weights"]
        from liverec.config import AlsSettings

        self.als_conf = AlsSettings(**meta["als"])
        f = self.factors.astype(np.float64)
        self.gram = f.T @ f  # Y^T Y, the implicit-ALS term every user shares
        norms = np.linalg.norm(self.embeddings, axis=1, keepdims=True)
        self.unit = self.embeddings / np.maximum(norms, 1e-12)
        fn = np.linalg.norm(self.factors, axis=1, keepdims=True)
        self.unit_factors = self.factors / np.maximum(fn, 1e-12)
        self.div = self.unit if self.embeddings.shape[1] > 1 and norms.max() > 0 else self.unit_factors
        self.ease_pos = np.full(len(self.item_ids), -1, dtype=np.int64)  # catalogue row -> row of EASE's B
        self.ease_pos[self.ease_items] = np.arange(len(self.ease_items))
        self.columns = {name: j for j, name in enumerate(DENSE_FEATURES)}
        self.item_stat_columns = [self.columns[c] for c in
                                  ("log_item_users", "log_item_recent_users", "log_item_age_days", "item_unseen")]
        names = sorted({c for cats in meta["categories"] for c in cats})
        self.category_index = {c: n for n, c in enumerate(names)}
        rows = [n for n, cats in enumerate(meta["categories"]) for _ in cats]
        cols = [self.category_index[c] for cats in meta["categories"] for c in cats]
        from scipy.sparse import csr_matrix

        self.item_categories = csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                                          shape=(len(self.item_ids), max(len(names), 1)))

    # ----- parsing
    def parse(self, record: dict[str, Any]) -> Request:
        m = self.meta
        unknown = sorted(set(record) - set(REQUEST_FIELDS))
        if unknown:
            raise _request_error(f"unknown request field(s) {unknown}; a request has {list(REQUEST_FIELDS)}")
        user = None
        raw_user = _plain(record.get("user_id"))
        if not _missing(raw_user):
            pseudo = hmac.new(self.key, str(raw_user).strip().encode(), hashlib.sha256).hexdigest()
            user = self.uindex.get(pseudo)
            if user is None:
                raise _request_error(
                    f"unknown user_id {raw_user!r}: no profile in the model built for ds {m['ds']}; send "
                    "user_id null with the session for a visitor without history", not_found=True)
        raw_k = _plain(record.get("k"))
        k = m["default_k"] if _missing(raw_k) else raw_k
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= m["max_k"]:
            raise _request_error(f"k must be an integer from 1 to {m['max_k']}, got {raw_k!r}")
        session = self._session(record.get("session"))
        viewing = None if _missing(record.get("viewing")) else self._item(record["viewing"], "viewing")
        raw_ex = record.get("exclude")
        raw_ex = [] if _missing(raw_ex) else raw_ex
        if not isinstance(raw_ex, (list, tuple, np.ndarray)):
            raise _request_error(f"exclude must be a list of item ids, got {type(raw_ex).__name__}")
        if len(raw_ex) > m["max_exclude"]:
            raise _request_error(f"exclude has {len(raw_ex)} items; at most {m['max_exclude']} are accepted")
        exclude = {self._item(i, "exclude") for i in raw_ex}
        if user is None and not session and viewing is None:
            raise _request_error("a request needs a known user_id, a session or a viewed item")
        return Request(user, session, viewing, int(k), exclude)

    def _item(self, raw: Any, where: str) -> int:
        raw = _plain(raw)
        at = self.index.get(str(raw).strip()) if isinstance(raw, (str, int)) and not isinstance(raw, bool) else None
        if at is None:
            raise _request_error(f"unknown item id {raw!r} in {where}: not in the catalogue of ds {self.meta['ds']}")
        return at

    def _session(self, raw: Any) -> list[Event]:
        if _missing(raw):
            return []
        if not isinstance(raw, (list, tuple, np.ndarray)):
            raise _request_error(f"session must be a list of events, got {type(raw).__name__}")
        if len(raw) > self.meta["max_session"]:
            raise _request_error(f"session has {len(raw)} events; at most {self.meta['max_session']} are accepted "
                                 "(online.max_session): send the newest")
        out = []
        for n, e in enumerate(raw):
            where = f"session[{n}]"
            if not isinstance(e, dict):
                raise _request_error(f"{where} must be an object with item_id, event_type and ts")
            extra = sorted(set(e) - set(SESSION_FIELDS))
            if extra:
                raise _request_error(f"{where} has unknown field(s) {extra}; an event has {list(SESSION_FIELDS)}")
            if _missing(e.get("item_id")):
                raise _request_error(f"{where} lacks item_id")
            item = self._item(e["item_id"], where)
            etype = str(e.get("event_type") or "").strip().lower()
            if etype not in self.weights:
                raise _request_error(f"{where}.event_type {e.get('event_type')!r} is not one of "
                                     f"{sorted(self.weights)}")
            value = _plain(e.get("value"))
            if not _missing(value) and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                        or not math.isfinite(value)):
                raise _request_error(f"{where}.value must be a number, got {value!r}")
            # the batch's own strength rule (ALS's event_strength), for the fold-in
            w = event_strength_value(self.als_conf, self.weights, etype, None if _missing(value) else float(value))
            ts = float(n) if _missing(e.get("ts")) else _ts(_plain(e["ts"]), where)
            out.append(Event(item, etype, ts, w))
        # newest first; equal times keep the later position as the newer
        order = sorted(range(len(out)), key=lambda i: (out[i].ts, i), reverse=True)
        return [out[i] for i in order]

    # ----- scoring
    def fold_in(self, req: Request) -> np.ndarray | None:
        """The user's ALS factor with the session added, by Spark's implicit-ALS update; None without any
        observation on items that have factors."""
        idx, val = [np.zeros(0, dtype=np.int64)], [np.zeros(0)]
        if req.user is not None:
            a, b = self.seen_ptr[req.user], self.seen_ptr[req.user + 1]
            idx.append(self.seen_idx[a:b].astype(np.int64))
            val.append(self.seen_val[a:b].astype(np.float64))
        if req.session:
            idx.append(np.array([e.item for e in req.session], dtype=np.int64))
            val.append(np.array([e.strength for e in req.session]))
        items, inverse = np.unique(np.concatenate(idx), return_inverse=True)
        total = np.bincount(inverse, weights=np.concatenate(val), minlength=len(items))
        keep = (total > 0) & self.has_factor[items]
        if not keep.any():
            return None
        y = self.factors[items[keep]].astype(np.float64)
        c = self.meta["alpha"] * total[keep]
        a = self.gram + (y.T * c) @ y + self.meta["reg_param"] * len(y) * np.eye(y.shape[1])
        return np.linalg.solve(a, ((1.0 + c)[:, None] * y).sum(axis=0))

    def seen(self, req: Request) -> tuple[np.ndarray, np.ndarray]:
        """(items the user has from the history, items never to recommend: those + session, viewed, excluded)
        as boolean masks over the catalogue."""
        history = np.zeros(len(self.item_ids), dtype=bool)
        if req.user is not None:
            history[self.seen_idx[self.seen_ptr[req.user]:self.seen_ptr[req.user + 1]]] = True
        banned = history.copy()
        banned[[e.item for e in req.session] + list(req.exclude) +
               ([req.viewing] if req.viewing is not None else [])] = True
        return history, banned

    def als_top(self, x: np.ndarray | None, banned: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(the folded vector's score of every item or None, the best allowed items by it, best first: as many
        as the candidates and the ALS rank feature need)."""
        if x is None:
            return None, np.zeros(0, dtype=np.int64)
        als = self.factors @ x.astype(np.float32)
        masked = np.where(self.has_factor & ~banned, als, -np.inf)
        n = min(max(self.meta["candidates"], self.meta["als_candidates"]), int(np.isfinite(masked).sum()))
        if n == 0:
            return als, np.zeros(0, dtype=np.int64)
        top = np.argpartition(-masked, n - 1)[:n]
        return als, top[np.argsort(-masked[top], kind="stable")]

    def ease_top(self, req: Request, history: np.ndarray, banned: np.ndarray
                 ) -> tuple[np.ndarray | None, np.ndarray]:
        """(EASE's score of every catalogue item over the user's history and session items, -inf where it has
        none or the item is not allowed; the best allowed items by it, best first), (None, []) without EASE."""
        known = np.flatnonzero(history).tolist() + [e.item for e in req.session]
        rows = np.unique(self.ease_pos[np.asarray(known, dtype=np.int64)]) if known else np.zeros(0, dtype=np.int64)
        rows = rows[rows >= 0]
        if len(self.ease_items) == 0 or len(rows) == 0:
            return None, np.zeros(0, dtype=np.int64)
        scores = np.full(len(self.item_ids), -np.inf)
        scores[self.ease_items] = self.ease_weights[rows].sum(axis=0, dtype=np.float64)
        scores[banned] = -np.inf
        n = min(max(self.meta["candidates"], self.meta["ease_candidates"]), int(np.isfinite(scores).sum()))
        if n == 0:
            return scores, np.zeros(0, dtype=np.int64)
        top = np.argpartition(-scores, n - 1)[:n]
        return scores, top[np.lexsort((top, -scores[top]))]

    def candidates(self, req: Request, top: np.ndarray, banned: np.ndarray, ease_top: np.ndarray | None = None
                   ) -> tuple[list[int], dict[int, tuple[str, int | None]]]:
        """(candidate items in source order, item -> (source, via item)): the first source that names an item
        keeps it; at most ``online.candidates``."""
        items, sources, vias = [], [], []

        def part(found: np.ndarray, source: int, via: int = -1) -> None:
            items.append(np.asarray(found, dtype=np.int64))
            sources.append(np.full(len(found), source))
            vias.append(np.full(len(found), via))

        if req.viewing is not None:
            part(self.neighbors[req.viewing], 0, req.viewing)
        for e in req.session[:self.meta["neighbor_history"]]:
            part(self.neighbors[e.item], 1, e.item)
        if req.user is not None:
            part(self.nightly_idx[self.nightly_ptr[req.user]:self.nightly_ptr[req.user + 1]], 2)
            part(self.friend_idx[self.friend_ptr[req.user]:self.friend_ptr[req.user + 1]], 3)
        if ease_top is not None:
            part(ease_top[:self.meta["ease_candidates"]], 4)
        part(top[:self.meta["candidates"]], 5)
        part(self.popular, 6)
        all_items, all_src, all_via = np.concatenate(items), np.concatenate(sources), np.concatenate(vias)
        ok = all_items >= 0
        ok[ok] = ~banned[all_items[ok]]
        all_items, all_src, all_via = all_items[ok], all_src[ok], all_via[ok]
        _, first = np.unique(all_items, return_index=True)
        first = np.sort(first)[:self.meta["candidates"]]
        found = {int(all_items[f]): (SOURCES[int(all_src[f])], int(all_via[f]) if all_via[f] >= 0 else None)
                 for f in first}
        return [int(all_items[f]) for f in first], found

    @staticmethod
    def _rank_and_z(scores: np.ndarray | None, top: np.ndarray, allowed: np.ndarray, idx: np.ndarray, limit: int,
                    listed_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(rank in the source's list of ``limit`` or limit + 1, z-score over the allowed items) of the candidates
        ``idx``, as features.assemble computes them: an item without a score, or beyond the list when
        ``listed_only`` (EASE: the batch knows a user's EASE scores only for the listed items), counts with the
        list's last score."""
        ranks = np.full(len(idx), limit + 1, dtype=np.float64)
        z = np.zeros(len(idx), dtype=np.float64)
        if scores is None or len(top) == 0:
            return ranks, z
        listed = top[:limit]
        position = np.full(len(scores), limit + 1, dtype=np.float64)
        position[listed] = np.arange(1, len(listed) + 1)
        ranks = position[idx]
        values = scores[allowed & np.isfinite(scores)]
        if values.size == 0:
            return ranks, z
        mean, std = values.mean(), values.std()
        std = std if std > 0 else 1.0
        floor = scores[listed[-1]]
        known = np.isfinite(scores[idx]) & ((ranks <= limit) if listed_only else True)
        own = np.where(known, scores[idx], floor)
        return ranks, (own - mean) / std

    def features(self, req: Request, cands: list[int], als: np.ndarray | None, top: np.ndarray,
                 history: np.ndarray, banned: np.ndarray | None = None, ease: np.ndarray | None = None,
                 ease_top: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
        """The dense features of ``cands`` (DENSE_FEATURES order) and the recent-item sequence."""
        n = len(cands)
        idx = np.asarray(cands, dtype=np.int64)
        dense = np.zeros((n, len(DENSE_FEATURES)), dtype=np.float32)
        col = self.columns
        allowed = ~banned if banned is not None else ~history
        als_scores = None if als is None else np.where(self.has_factor, als, -np.inf)
        ranks, z = self._rank_and_z(als_scores, top, allowed & self.has_factor, idx, self.meta["als_candidates"])
        dense[:, col["log_als_rank"]] = np.log1p(ranks)
        dense[:, col["als_z"]] = z
        ranks, z = self._rank_and_z(ease, ease_top if ease_top is not None else np.zeros(0, dtype=np.int64), allowed,
                                    idx, self.meta["ease_candidates"], listed_only=True)
        dense[:, col["log_ease_rank"]] = np.log1p(ranks)
        dense[:, col["ease_z"]] = z
        recent_all = [e.item for e in req.session] + (self.meta["recent"][req.user] if req.user is not None else [])
        sources = list(dict.fromkeys(recent_all))[:self.meta["neighbor_history"]]
        if sources:
            best = np.zeros(len(self.item_ids), dtype=np.float32)
            for r in sources:
                ok = self.neighbors[r] >= 0
                np.maximum.at(best, self.neighbors[r][ok], self.neighbor_sim[r][ok])
            dense[:, col["neighbor_similarity"]] = best[idx]
        cv = self.user_content(req)
        if cv is not None:
            dense[:, col["content_cosine"]] = self.unit[idx] @ cv
        dense[:, self.item_stat_columns] = self.item_stats[idx]
        if req.user is not None:
            events, items_, days, friends = (float(v) for v in self.user_stats[req.user])
        else:
            events = items_ = days = friends = 0.0
        new_items = {e.item for e in req.session if not history[e.item]}
        dense[:, col["log_user_events"]] = np.log1p(np.expm1(events) + len(req.session))
        dense[:, col["log_user_items"]] = np.log1p(np.expm1(items_) + len(new_items))
        dense[:, col["log_days_since_last"]] = 0.0 if req.session else days
        dense[:, col["log_friend_count"]] = friends
        aff = self.affinity(req)
        if aff:
            weights = np.zeros(len(self.category_index), dtype=np.float32)
            for c, v in aff.items():
                if c in self.category_index:
                    weights[self.category_index[c]] = v
            dense[:, col["category_affinity"]] = self.item_categories[idx] @ weights
        if req.user is not None:
            a, b = self.friend_ptr[req.user], self.friend_ptr[req.user + 1]
            if b > a:
                per_item = np.zeros(len(self.item_ids), dtype=np.float32)
                per_item[self.friend_idx[a:b]] = self.friend_n[a:b]
                dense[:, col["log_friends_on_item"]] = np.log1p(per_item[idx])
        recent = [e.item for e in req.session]
        if req.user is not None:
            recent += self.meta["recent"][req.user]
        return dense, [self.item_ids[i] for i in dict.fromkeys(recent)]

    def user_content(self, req: Request) -> np.ndarray | None:
        """Unit content vector: the profile's and the session's weighted mean embedding, half and half."""
        parts = []
        if req.user is not None and self.content[req.user].any():
            parts.append(self.content[req.user].astype(np.float64))
        if req.session:
            w = np.array([max(e.strength, 0.0) for e in req.session]) + 1e-9
            v = (self.unit[[e.item for e in req.session]] * w[:, None]).sum(axis=0)
            if np.linalg.norm(v) > 0:
                parts.append(v / np.linalg.norm(v))
        if not parts:
            return None
        v = np.sum(parts, axis=0)
        norm = np.linalg.norm(v)
        return (v / norm).astype(np.float32) if norm > 0 else None

    def affinity(self, req: Request) -> dict[str, float]:
        """Category shares: the profile's and the session's (by event weight), half and half."""
        shares: list[dict[str, float]] = []
        if req.user is not None and self.meta["affinity"][req.user]:
            shares.append(self.meta["affinity"][req.user])
        if req.session:
            w: dict[str, float] = {}
            for e in req.session:
                for c in self.meta["categories"][e.item]:
                    w[c] = w.get(c, 0.0) + max(e.strength, 0.0)
            total = sum(w.values())
            if total > 0:
                shares.append({c: v / total for c, v in w.items()})
        out: dict[str, float] = {}
        for s in shares:
            for c, v in s.items():
                out[c] = out.get(c, 0.0) + v / len(shares)
        return out

    def recommend(self, req: Request) -> list[dict[str, Any]]:
        from liverec.ranking import mmr_order

        history, banned = self.seen(req)
        als, top = self.als_top(self.fold_in(req), banned)
        ease, ease_top = self.ease_top(req, history, banned)
        cands, found = self.candidates(req, top, banned, ease_top)
        if not cands:
            return []
        dense, recent = self.features(req, cands, als, top, history, banned, ease, ease_top)
        scores = np.asarray(self.ranker.score_ids([self.item_ids[i] for i in cands], recent, dense),
                            dtype=np.float64)
        pool = np.argsort(-scores, kind="stable")[:max(self.meta["mmr_pool"], req.k)]
        s = scores[pool]
        span = s.max() - s.min()
        rel = (s - s.min()) / span if span > 0 else np.ones(len(s))
        picks = [int(pool[p]) for p in mmr_order(rel, self.div[[cands[i] for i in pool]], req.k,
                                                   self.meta["mmr_lambda"])]
        picks = self.session_slots(picks, cands, found, scores, req.k)
        out = []
        for r, p in enumerate(picks, start=1):
            i = cands[p]
            source, via = found[i]
            out.append({"rank": r, "item_id": self.item_ids[i], "title": self.meta["titles"][i],
                        "score": float(scores[p]), "source": source,
                        "reason": self.reason(req, i, source, via)})
        return out

    def session_slots(self, picks: list[int], cands: list[int], found: dict[int, tuple[str, int | None]],
                      scores: np.ndarray, k: int) -> list[int]:
        """Make sure the live session shows: the best-scored neighbours of the viewed and session items take
        at least ``online.session_slots`` of the k places (the weakest other picks give way), placed among
        the picks by score."""
        want = min(self.meta["session_slots"], k)
        live = [c for c in np.argsort(-scores, kind="stable").tolist() if found[cands[c]][0] in LIVE_SOURCES]
        have = [p for p in picks if found[cands[p]][0] in LIVE_SOURCES]
        missing = [c for c in live if c not in picks][:max(want - len(have), 0)]
        if not missing:
            return picks
        others = [p for p in picks if found[cands[p]][0] not in LIVE_SOURCES]
        drop = set(sorted(others, key=lambda p: scores[p])[:len(missing)])
        kept = [p for p in picks if p not in drop]
        for c in missing:  # before the first kept pick it outscores
            at = next((n for n, p in enumerate(kept) if scores[c] > scores[p]), len(kept))
            kept.insert(at, c)
        return kept

    def reason(self, req: Request, item: int, source: str, via: int | None) -> str:
        titles = self.meta["titles"]

        def name(i: int) -> str:
            return f'"{titles[i]}"' if titles[i] else f"item {self.item_ids[i]}"

        if source == "viewing" and via is not None:
            return f"Similar to {name(via)}, which you are viewing"
        if source == "session" and via is not None:
            return f"Similar to {name(via)}, from your current session"
        user = self.meta["user_ids"][req.user] if req.user is not None else ""
        if source == "nightly":
            return self.meta["nightly_reason"].get(f"{user} {self.item_ids[item]}", "In your recommendations today")
        if source == "friends":
            friend = self.meta["friend_of"].get(f"{user} {self.item_ids[item]}")
            return f"Your friend {friend} chose it" if friend else "Your friends chose it"
        if source == "ease":
            known = [e.item for e in req.session] + (self.meta["recent"][req.user] if req.user is not None else [])
            rows = [(self.ease_pos[i], i) for i in known if self.ease_pos[i] >= 0]
            if rows and self.ease_pos[item] >= 0:
                weights = self.ease_weights[[r for r, _ in rows], self.ease_pos[item]]
                return f"Because you chose {name(rows[int(np.argmax(weights))][1])}"
            return "Often chosen with what you chose"
        if source == "als":
            items = [e.item for e in req.session if self.has_factor[e.item]]
            if items:
                sims = self.unit_factors[items] @ self.unit_factors[item]
                return f"Because you just showed interest in {name(items[int(np.argmax(sims))])}"
            return "People with tastes like yours chose it"
        return "Popular lately"

    def answer(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        """Requests -> one row per recommended item (request = the request's position)."""
        if len(records) > self.meta["max_requests"]:
            raise _request_error(f"{len(records)} requests in one call; at most {self.meta['max_requests']}")
        reqs = [self.parse(r) for r in records]  # every request is checked before any is scored
        rows = [{"request": n, **p} for n, req in enumerate(reqs) for p in self.recommend(req)]
        return pd.DataFrame(rows, columns=["request", "rank", "item_id", "title", "score", "source", "reason"])


# --------------------------------------------------------------------------- the pyfunc

def _key(meta: dict[str, Any]) -> bytes:
    key = os.environ.get(meta["key_env"], "")
    if key:
        return key.encode("utf-8")
    if meta.get("demo_key"):
        return str(meta["demo_key"]).encode("utf-8")
    raise RuntimeError(f"environment variable {meta['key_env']} is not set: the server needs the key that "
                       "pseudonymised the user ids")


class OnlineModel(mlflow.pyfunc.PythonModel):
    """``liverec-online``: input ``dataframe_records`` of requests, output one row per recommended item
    (request, rank, item_id, title, score, source, reason)."""

    def load_context(self, context: Any) -> None:
        import torch

        torch.set_num_threads(int(os.environ.get("LIVEREC_ONLINE_THREADS", "1")))
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        with np.load(context.artifacts["arrays"]) as z:
            arrays = {k: z[k] for k in z.files}
        ranker = load_ranker(Path(context.artifacts["ranker"])) if "ranker" in context.artifacts else \
            BaselineRanker(meta["baseline"])
        self.scorer = OnlineScorer(arrays, meta, ranker, _key(meta))
        # the bundle's many long-lived Python objects (ids, titles, reasons) would otherwise be traversed by
        # every full garbage collection, a latency spike of milliseconds in the middle of a request
        gc.collect()
        gc.freeze()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            raise _request_error("send requests as dataframe_records: [{\"user_id\": ..., \"session\": [...], "
                                 "\"k\": 10}]")
        records = [{k: v for k, v in r.items() if not (k not in REQUEST_FIELDS and _missing(v))}
                   for r in model_input.to_dict(orient="records")]
        return self.scorer.answer(records)


class BaselineRanker:
    """The scorer of an online model published without a champion ranker: the baseline's own score, which the
    dense features carry as a per-user z-score (``ease_z`` or ``als_z``), so the online answer orders
    candidates as the nightly baseline does."""

    def __init__(self, baseline: str):
        self.column = DENSE_FEATURES.index("ease_z" if baseline == "ease" else "als_z")

    def score_ids(self, items: list[str], recent_items: list[str], dense: np.ndarray) -> np.ndarray:
        return np.asarray(dense, dtype=np.float64)[:, self.column]


def load_ranker(folder: Path) -> Any:
    """The ranker from its weights, shape and vocabulary (the files a ranker version logs), built with this
    package's code rather than the code pickled with the ranker version."""
    from liverec.ranker.model import RankerShape
    from liverec.ranker.registry import RankerModel

    meta = json.loads((folder / "meta.json").read_text())
    with np.load(folder / "weights.npz") as z:
        state = {k: z[k] for k in z.files}
    vocab = json.loads((folder / "vocab.json").read_text())
    return RankerModel.from_parts(RankerShape.from_dict(meta["shape"]), state, vocab, int(meta["recent_items"]))


def log_online_model(arrays: dict[str, np.ndarray], meta: dict[str, Any], ranker_uri: str | None, scratch: str,
                     name: str = "online") -> Any:
    """Log the pyfunc (bundle + a copy of the ranker, none without one: ``meta["baseline"]`` then scores) to the
    active run; returns MLflow's ModelInfo."""
    from liverec.ranker.registry import PACKAGE_DIR

    os.makedirs(scratch, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="online-", dir=scratch))
    try:
        paths = write_bundle(arrays, meta, folder / "bundle")
        if ranker_uri is not None:
            model = Path(mlflow.artifacts.download_artifacts(artifact_uri=ranker_uri, dst_path=str(folder / "model")))
            ranker = folder / "ranker"
            ranker.mkdir()
            for file in ("meta.json", "weights.npz", "vocab.json"):
                found = list(model.rglob(file))
                if not found:
                    raise FileNotFoundError(f"{ranker_uri} has no {file}: not a liverec ranker version")
                shutil.copy(found[0], ranker / file)
            paths["ranker"] = str(ranker)
        return mlflow.pyfunc.log_model(
            name=name, python_model=OnlineModel(), artifacts=paths,
            code_paths=[str(PACKAGE_DIR)], pip_requirements=["torch", "numpy", "pandas"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
