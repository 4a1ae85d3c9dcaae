"""Real-time recommendations: the ``liverec-online`` MLflow pyfunc and its request-time scorer.

``publish_online`` (Spark, nightly after recommend_nightly) collects what is catalogue-sized into one bundle
(``liverec.online_bundle``: item ALS factors, text embeddings, content neighbours, item statistics, EASE's
weights), wraps it with the champion ranker in a pyfunc, registers it as ``online.registered_model`` and moves
``online.alias`` to it once it has answered a smoke request. What is per user (profile features, content vector,
category shares, seen items with ALS strengths, the ALS factor, friends' items, the nightly rows) it
materialises in the online store (``liverec.online_store``, SQLite or Redis), and ``stream_events`` writes each
user's recent events there per micro-batch; the scorer reads both per request, so the user id alone brings
what the user did seconds ago.

A request (one row of ``dataframe_records``) carries ``user_id`` (the raw id, pseudonymised here with
the same key as the batch; null for a visitor without history), ``session`` (recent events: item_id,
event_type, ts), ``viewing`` (the item on screen), ``k`` and ``exclude``. The scorer

1. reads the user's record and recent events from the store; the stream's events newer than the record join
   the request's session;
2. takes the nightly ALS factor, or with a session folds it into the factor: the implicit-ALS normal
   equations over the fixed item factors, ``(YtY + sum c y y^T + reg * n I) x = sum (1 + c) y`` with
   ``c = alpha * strength`` over the user's known strengths plus the session's (Spark's own update);
3. takes candidates from the user's nightly row, the content neighbours of the viewed item and of
   the session's newest items, the friends' items, EASE's best items over the history and the session,
   and the user vector's best items (filled up to ``online.candidates``), never a seen, session or
   excluded item;
4. computes the ranker's dense features the way ``liverec.features`` does, with the session added to
   the user's counts, category affinity and content vector, and scores with the champion ranker,
   the session (newest first) ahead of the known recent items as its recent-item sequence;
5. re-ranks the ``recommend.mmr_pool`` best by maximal marginal relevance (or, with ``recommend.reranker``
   calibrated, by the category mix of the user's history and session), keeps at least
   ``online.session_slots`` of the places for neighbours of the viewed and session items (so the live
   session always shows, even for a user with a long history), and returns ``k`` rows with score, rank,
   reason and source.

Bad requests raise ``RequestError`` (an MlflowException the servers answer with 400, or 404 for an unknown
user); the server keeps serving. An item id the bundle's catalogue does not hold (new since the nightly run) is
left out of the request, not refused: the answer's ``ignored_items`` names it. A store that cannot be read
gives a degraded answer (popular items and the request's own session) whose ``warnings`` say so, not an error;
the store is asked again after ``online.store_retry_s``. ``OnlineScorer.counters`` counts store reads, misses,
errors, degraded answers, streamed events and ignored items over the scorer's life (``liverec serve``'s
/metrics).

Request parsing lives in ``liverec.online_requests`` and the dense features in ``liverec.online_features``
(mixins of :class:`OnlineScorer`); ``liverec.online`` re-exports what callers use (``Event``, ``Request``,
``UserState``, ``build_bundle``).
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from liverec.features import DENSE_FEATURES
from liverec.online_bundle import build_bundle as build_bundle  # re-exported: stages.publish_online builds with it
from liverec.online_bundle import key_check, write_bundle
from liverec.online_features import NO_LIST, DenseFeatures, Ranked, catalogue_arrays
from liverec.online_requests import REQUEST_FIELDS, Request, RequestParsing, UserState, _missing, _request_error
from liverec.online_requests import Event as Event  # re-exported: the publish smoke request builds one

SOURCES = ("viewing", "session", "nightly", "friends", "ease", "als", "popular")  # the order they fill candidates
LIVE_SOURCES = ("viewing", "session")  # candidates the live session brought
# the answer: one row per recommended item; ignored_items repeats, on each row of a request, the item ids it left out,
# warnings why the answer is degraded (the online store unreachable), streamed how many of the session's events came
# from the stream (the store's recent list) rather than the request; request_id names the answer (its impressions,
# liverec.impressions), propensity the probability that the policy shows this list up to this rank
ANSWER_COLUMNS = ("request", "rank", "item_id", "title", "score", "source", "reason", "ignored_items", "warnings",
                  "streamed", "request_id", "propensity")
# what the scorer counts over its life (the server's /metrics): store reads, reads that found no profile, reads
# that failed, requests answered degraded, stream events added to sessions, request items the catalogue lacks
COUNTERS = ("store_lookups", "store_misses", "store_errors", "degraded", "streamed_events", "ignored_items")
STORE_DOWN = "online store unavailable: answered from popular items and the request's own session"
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the scorer

class OnlineScorer(RequestParsing, DenseFeatures):
    """The request path in numpy (the pyfunc's ``predict`` calls it; tests and benchmarks can too)."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], ranker: Any, key: bytes,
                 store: Any = None, impressions: Any = None):
        if not hmac.compare_digest(key_check(key), meta["key_check"]):
            raise RuntimeError(
                f"the id key in ${meta['key_env']} is not the key this model's user ids were pseudonymised with: "
                "serve it with the key the batch jobs used")
        self.key, self.meta, self.ranker, self.store = key, meta, ranker, store
        self.impressions = impressions  # liverec.impressions.ImpressionLog, or None: answers not logged
        self.policy = str(meta.get("ranker_version") or f"baseline:{meta.get('baseline')}")
        self.rng = np.random.default_rng()  # exploration's draws (feedback.exploration_*)
        self.counters = dict.fromkeys(COUNTERS, 0)  # since the scorer loaded
        self._store_down_until = 0.0  # monotonic time before which a failed store is not asked again
        for name, arr in arrays.items():
            setattr(self, name, arr)
        self.item_ids: list[str] = meta["item_ids"]
        if "blocked" not in arrays:  # a bundle from before the content policy: nothing blocked
            self.blocked = np.zeros(len(self.item_ids), dtype=bool)
        self.index = {i: n for n, i in enumerate(self.item_ids)}
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
        self.catalogue = catalogue_arrays(arrays, meta)  # what liverec.features.dense reads
        self.ease_pos = self.catalogue.ease_pos  # catalogue row -> row of EASE's B (-1 outside it)
        self.category_index = {c: n for n, c in enumerate(self.catalogue.categories)}
        # the ranker's vocabulary index of every catalogue row, once (not a dict lookup per candidate per request)
        vocab = getattr(ranker, "vocab", None)
        self.ranker_rows = None if vocab is None or not hasattr(ranker, "score_rows") else \
            np.array([vocab.get(i, 0) for i in self.item_ids], dtype=np.int64)

    @property
    def ignored_items(self) -> int:
        return self.counters["ignored_items"]

    # ----- the online store
    def lookup_user(self, pseudo: str) -> tuple[UserState | None, list[Event], str | None]:
        """(the user's profile or None, the stream's events since it, a warning when the store could not be read).
        A failed read makes the next ``online.store_retry_s`` seconds answer degraded without asking the store."""
        from liverec.online_store import StoreUnavailable

        if self.store is None:
            return None, [], STORE_DOWN
        now = time.monotonic()
        if now < self._store_down_until:
            return None, [], STORE_DOWN
        try:
            profile, recent = self.store.lookup(pseudo)
        except StoreUnavailable as err:
            self.counters["store_errors"] += 1
            self._store_down_until = now + float(self.meta["store_retry_s"])
            log.warning("%s (%s)", STORE_DOWN, err)
            return None, [], STORE_DOWN
        self.counters["store_lookups"] += 1
        user = UserState.decode(pseudo, profile, self.index, self.embeddings.shape[1]) if profile else None
        if user is None:
            self.counters["store_misses"] += 1
        events = self.recent_events(recent, user.as_of if user is not None else None)
        self.counters["streamed_events"] += len(events)
        return user, events, None

    def store_ds(self) -> str | None:
        try:
            return self.store.current() if self.store is not None else None
        except Exception:  # noqa: BLE001 (only an error message's detail)
            return None

    # ----- scoring
    def fold_in(self, req: Request) -> np.ndarray | None:
        """The user's ALS factor with the session added, by Spark's implicit-ALS update; None without any
        observation on items that have factors."""
        idx, val = [np.zeros(0, dtype=np.int64)], [np.zeros(0)]
        if req.user is not None:
            idx.append(req.user.seen_idx.astype(np.int64))
            val.append(req.user.seen_val.astype(np.float64))
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

    def user_vector(self, req: Request) -> np.ndarray | None:
        """The nightly ALS factor of a known user without new events; with a session (the request's or the
        stream's), the fold-in."""
        if req.user is not None and not req.session and req.user.factor is not None:
            return req.user.factor.astype(np.float64)
        return self.fold_in(req)

    def seen(self, req: Request) -> tuple[np.ndarray, np.ndarray]:
        """(items the user has from the history, items never to recommend: those + session, viewed, excluded and
        the content policy's) as boolean masks over the catalogue."""
        history = np.zeros(len(self.item_ids), dtype=bool)
        if req.user is not None:
            history[req.user.seen_idx] = True
        banned = history | self.blocked
        banned[[e.item for e in req.session] + list(req.exclude) +
               ([req.viewing] if req.viewing is not None else [])] = True
        return history, banned

    def als_top(self, x: np.ndarray | None, banned: np.ndarray) -> Ranked:
        """The allowed items with a factor ranked by the user vector ``x``'s score, as many as the candidates and
        the ALS rank feature need (``NO_LIST`` without a vector)."""
        if x is None:
            return NO_LIST
        row = np.where(self.has_factor & ~banned, self.factors @ x.astype(np.float32), -np.inf)
        return Ranked.of(row, max(self.meta["candidates"], self.meta["als_candidates"]))

    def ease_top(self, req: Request, history: np.ndarray, banned: np.ndarray) -> Ranked:
        """The allowed items ranked by EASE's score over the user's history and session items (``NO_LIST`` without
        EASE or without an item it knows)."""
        known = np.flatnonzero(history).tolist() + [e.item for e in req.session]
        rows = np.unique(self.ease_pos[np.asarray(known, dtype=np.int64)]) if known else np.zeros(0, dtype=np.int64)
        rows = rows[rows >= 0]
        if len(self.ease_items) == 0 or len(rows) == 0:
            return NO_LIST
        scores = np.full(len(self.item_ids), -np.inf)
        scores[self.ease_items] = self.ease_weights[rows].sum(axis=0, dtype=np.float64)
        scores[banned] = -np.inf
        return Ranked.of(scores, max(self.meta["candidates"], self.meta["ease_candidates"]))

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
            part(req.user.nightly_idx, 2)
            part(req.user.friend_idx[:self.meta.get("friend_candidates", len(req.user.friend_idx))], 3)
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
        picked = all_items[first].tolist()  # Python ints in one call, not one numpy scalar per candidate
        found = {i: (SOURCES[src], via if via >= 0 else None)
                 for i, src, via in zip(picked, all_src[first].tolist(), all_via[first].tolist(), strict=True)}
        return picked, found

    def recommend(self, req: Request) -> list[dict[str, Any]]:
        from liverec.diversity import calibrated_order, calibration_inputs, mmr_order

        history, banned = self.seen(req)
        x = self.user_vector(req)
        als = self.als_top(x, banned)
        ease = self.ease_top(req, history, banned)
        cands, found = self.candidates(req, als.top, banned, ease.top)
        if not cands:
            return []
        dense, recent = self.features(req, cands, x, als, ease)
        if self.ranker_rows is not None:
            scores = np.asarray(self.ranker.score_rows(self.ranker_rows[cands], recent, dense), dtype=np.float64)
        else:
            scores = np.asarray(self.ranker.score_ids([self.item_ids[i] for i in cands], recent, dense),
                                dtype=np.float64)
        pool = np.argsort(-scores, kind="stable")[:max(self.meta["mmr_pool"], req.k)]
        s = scores[pool]
        span = s.max() - s.min()
        rel = (s - s.min()) / span if span > 0 else np.ones(len(s))
        if self.meta.get("reranker", "mmr") == "calibrated":  # the user's history and session, as the batch's
            known = np.r_[np.flatnonzero(history), [e.item for e in req.session]].astype(np.int64)
            cats, target = calibration_inputs([known], [np.asarray(cands)[pool]], len(pool),
                                              self.catalogue.category_ptr, self.catalogue.category_idx,
                                              len(self.catalogue.categories))
            order = calibrated_order(rel, cats[0], target[0], req.k, self.meta["calibration_lambda"])
        else:
            order = mmr_order(rel, self.div[[cands[i] for i in pool]], req.k, self.meta["mmr_lambda"])
        picks = [int(pool[p]) for p in order]
        picks = self.session_slots(picks, cands, found, scores, req.k)
        picks, propensity = self.explore(req, picks, pool, scores, cands, dense, recent)
        out = []
        for r, p in enumerate(picks, start=1):
            i = cands[p]
            source, via = found[i]
            out.append({"rank": r, "item_id": self.item_ids[i], "title": self.meta["titles"][i],
                        "score": float(scores[p]), "source": source,
                        "reason": self.reason(req, i, source, via), "propensity": float(propensity[r - 1])})
        return out

    def explore(self, req: Request, picks: list[int], pool: np.ndarray, scores: np.ndarray, cands: list[int],
                dense: np.ndarray, recent: list[str]) -> tuple[list[int], np.ndarray]:
        """(the list to show, its prefix propensities). With ``feedback.exploration_share`` of the requests (and a
        positive ``feedback.exploration_temperature``) the list is drawn by Plackett-Luce over the served list and
        the ``recommend.mmr_pool`` best-scored candidates, their scores z-scored over that set
        (``liverec.offpolicy``); otherwise it is the served list. Either way the propensities are the mixture's:
        what the impressions log for off-policy evaluation (1.0 everywhere when exploration is off), with the pool's
        features (``dense`` rows of the candidates, the ``recent`` items) for a new ranker to re-score."""
        from liverec import offpolicy
        from liverec.impressions import Pool

        share, temperature = float(self.meta.get("exploration_share", 0.0)), \
            float(self.meta.get("exploration_temperature", 0.0))
        if share <= 0 or temperature <= 0 or not picks:
            return picks, np.ones(len(picks))
        arms = list(dict.fromkeys([*picks, *pool.tolist()]))  # the served list first: its positions are 0..k-1
        z = offpolicy.standardised(scores[arms][None, :])[0]  # the one z-score the gate's replay uses too
        greedy = np.arange(len(picks))
        shown = greedy
        req.pool = Pool([self.item_ids[cands[a]] for a in arms], z.tolist(), np.asarray(dense)[arms].tolist(),
                        list(recent))  # what the impressions log
        if self.rng.random() < share:
            shown, _ = offpolicy.sample_list(z, len(picks), temperature, self.rng)
            req.explored = True
        return [arms[i] for i in shown], offpolicy.mixture_propensities(z, shown, greedy, temperature, share)

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
        if source == "nightly":
            return req.user.nightly_reason.get(item, "In your recommendations today") if req.user else \
                "In your recommendations today"
        if source == "friends":
            friend = req.user.friend_of.get(item) if req.user else None
            return f"Your friend {friend} chose it" if friend else "Your friends chose it"
        if source == "ease":
            known = [e.item for e in req.session] + (req.user.recent if req.user is not None else [])
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

    def answer_rows(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Requests -> one row (ANSWER_COLUMNS) per recommended item (request = the request's position)."""
        if len(records) > self.meta["max_requests"]:
            raise _request_error(f"{len(records)} requests in one call; at most {self.meta['max_requests']}")
        reqs = [self.parse(r) for r in records]  # every request is checked before any is scored
        for req in reqs:
            if req.ignored:
                self.counters["ignored_items"] += len(req.ignored)
                log.info("left out item ids the catalogue of ds %s does not hold: %s", self.meta["ds"], req.ignored)
            if req.warnings:
                self.counters["degraded"] += 1
        out = []
        for n, req in enumerate(reqs):
            rows, request_id = self.recommend(req), uuid.uuid4().hex
            out += [{"request": n, **p, "ignored_items": list(req.ignored), "warnings": list(req.warnings),
                     "streamed": req.streamed, "request_id": request_id} for p in rows]
            if self.impressions is not None and rows:
                from liverec.impressions import rows_of

                self.impressions.add(rows_of(request_id, req.pseudo, rows, self.policy, "online", req.explored,
                                             time.time(), req.pool))
        return out

    def answer(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        """Requests -> one row per recommended item (request = the request's position)."""
        return pd.DataFrame(self.answer_rows(records), columns=list(ANSWER_COLUMNS))


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
    (``ANSWER_COLUMNS``)."""

    def load_context(self, context: Any) -> None:
        import torch

        from liverec.ranker import compiled

        threads = int(os.environ.get("LIVEREC_ONLINE_THREADS", "1"))  # torch's and ONNX Runtime's intra-op threads
        torch.set_num_threads(threads)
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        with np.load(context.artifacts["arrays"]) as z:
            arrays = {k: z[k] for k in z.files}
        ranker = load_ranker(Path(context.artifacts["ranker"]), meta.get("ranker_variant", compiled.AUTO), threads) \
            if "ranker" in context.artifacts else BaselineRanker(meta["baseline"])
        self.scorer = OnlineScorer(arrays, meta, ranker, _key(meta), open_online_store(meta), open_impression_log(meta))
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


def open_online_store(meta: dict[str, Any]) -> Any:
    """The online store a served model reads: $LIVEREC_ONLINE_STORE when set, else the one publish_online
    materialised (the model's ``store_url``)."""
    from liverec.online_store import open_store

    url = os.environ.get("LIVEREC_ONLINE_STORE") or meta["store_url"]
    return open_store(url, float(meta["store_timeout_s"]), meta["store_prefix"])


def open_impression_log(meta: dict[str, Any]) -> Any:
    """Where a served model logs its answers' impressions: $LIVEREC_IMPRESSIONS when set (``off``: not logged), else
    the folder publish_online named (conf feedback.landing); None for a model published before impressions."""
    from liverec.impressions import open_log

    folder = os.environ.get("LIVEREC_IMPRESSIONS") or meta.get("impressions_landing")
    return open_log(folder, float(meta.get("impressions_flush_seconds", 1.0)),
                    int(meta.get("impressions_flush_rows", 5000)))


class BaselineRanker:
    """The scorer of an online model published without a champion ranker: the baseline's own score, which the
    dense features carry as a per-user z-score (``ease_z`` or ``als_z``), so the online answer orders
    candidates as the nightly baseline does."""

    def __init__(self, baseline: str):
        self.column = DENSE_FEATURES.index("ease_z" if baseline == "ease" else "als_z")

    def score_ids(self, items: list[str], recent_items: list[str], dense: np.ndarray) -> np.ndarray:
        return np.asarray(dense, dtype=np.float64)[:, self.column]


def load_ranker(folder: Path, variant: str | None = None, threads: int = 1) -> Any:
    """The ranker from the files a ranker version logs, built with this package's code rather than the code
    pickled with the ranker version, scoring with ``variant`` (``ranker.scoring_variant``, kept in the bundle's
    meta as ``ranker_variant``)."""
    from liverec.ranker import compiled
    from liverec.ranker.pyfunc import RankerModel

    return compiled.choose(RankerModel.from_folder(folder), variant or compiled.AUTO, threads)


def log_online_model(arrays: dict[str, np.ndarray], meta: dict[str, Any], ranker_uri: str | None, scratch: str,
                     name: str = "online") -> Any:
    """Log the pyfunc (bundle + a copy of the ranker, none without one: ``meta["baseline"]`` then scores) to the
    active run; returns MLflow's ModelInfo."""
    from liverec.ranker import compiled
    from liverec.ranker.pyfunc import PACKAGE_DIR, PIP_REQUIREMENTS

    os.makedirs(scratch, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="online-", dir=scratch))
    try:
        paths = write_bundle(arrays, meta, folder / "bundle")
        if ranker_uri is not None:
            model = Path(mlflow.artifacts.download_artifacts(artifact_uri=ranker_uri, dst_path=str(folder / "model")))
            ranker = folder / "ranker"
            ranker.mkdir()
            for file in ("meta.json", "weights.npz", "vocab.json", *compiled.FILES.values()):
                found = list(model.rglob(file))
                if found:
                    shutil.copy(found[0], ranker / file)
                elif file not in compiled.FILES.values():  # the compiled variants: versions logged before them lack them
                    raise FileNotFoundError(f"{ranker_uri} has no {file}: not a liverec ranker version")
            paths["ranker"] = str(ranker)
        return mlflow.pyfunc.log_model(
            name=name, python_model=OnlineModel(), artifacts=paths,
            code_paths=[str(PACKAGE_DIR)], pip_requirements=list(PIP_REQUIREMENTS))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
