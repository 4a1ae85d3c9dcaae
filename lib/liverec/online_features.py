"""The online scorer's inputs to the features: a request as the one-user ``Batch`` and candidate ``Lists`` that
``liverec.features.dense`` reads, so the server computes ``DENSE_FEATURES`` with the very function the training
examples and the nightly job call (inside their Arrow batches); only what the live session changes is here.

The session (the request's events and the stream's since the nightly record) is added to the user's event and
item counts, resets the days since the last event, and is mixed half and half with the profile into the content
vector and the category affinity. The source lists (ALS over the folded-in factor, EASE over the history and the
session) are ranked by ``liverec.vectors.best_of`` as the batch ranks them, with their mean and standard deviation
over the allowed items. :class:`DenseFeatures` is a mixin of ``liverec.online.OnlineScorer`` and reads the bundle's
arrays the scorer holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from liverec import features, vectors
from liverec.candidates import Batch, Lists
from liverec.features import SCORE_STATS, ItemArrays
from liverec.online_requests import Request


@dataclass
class Ranked:
    """A source's list for one request (``vectors.best_of`` over the allowed catalogue items): the best items, best
    first, their scores, and the mean / standard deviation of the score over every allowed item."""

    top: np.ndarray  # catalogue rows (int64)
    scores: np.ndarray  # float64
    mean: float
    std: float

    @classmethod
    def of(cls, row: np.ndarray, n: int) -> Ranked:
        """The ``n`` best of one score row over the catalogue (-inf = not allowed)."""
        top, scores, mean, std = vectors.best_of(row[None, :], n)
        return cls(np.asarray(top[0], dtype=np.int64), np.asarray(scores[0], dtype=np.float64), float(mean[0]),
                   float(std[0]))

    def ranks(self, idx: np.ndarray, limit: int, n_items: int) -> np.ndarray:
        """Each of ``idx``'s rank (from 1) in the first ``limit`` of the list, 0 when not there."""
        position = np.zeros(n_items, dtype=np.int32)
        listed = self.top[:limit]
        position[listed] = np.arange(1, len(listed) + 1, dtype=np.int32)
        return position[idx]

    def stats(self, limit: int) -> tuple[float, float, float]:
        """(mean, std, floor: the last score of the first ``limit``), NaN when the list is empty (as the batch's
        users without such a list)."""
        if len(self.top) == 0 or limit <= 0:
            return np.nan, np.nan, np.nan
        return self.mean, self.std, float(self.scores[:limit][-1])


NO_LIST = Ranked(np.zeros(0, dtype=np.int64), np.zeros(0), np.nan, np.nan)


def catalogue_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> ItemArrays:
    """The bundle's catalogue (its rows in ``meta["item_ids"]`` order) as the ``ItemArrays`` that
    ``features.dense`` reads: ALS factors, embeddings, item statistics, categories, neighbours and EASE. The
    candidate sources the batch takes from it (popular items per category) are not served: empty."""
    names, ptr, flat = features.category_csr(meta["categories"])
    n = len(meta["item_ids"])
    emb = arrays["embeddings"]
    ease_pos = np.full(n, -1, dtype=np.int32)  # catalogue row -> row of EASE's B
    ease_pos[arrays["ease_items"]] = np.arange(len(arrays["ease_items"]), dtype=np.int32)
    return ItemArrays(
        ids=np.asarray(meta["item_ids"], dtype=object), factors=arrays["factors"], has_factor=arrays["has_factor"],
        embeddings=emb, embedding_norm=np.sqrt((emb.astype(np.float64) ** 2).sum(axis=1)),
        stats=arrays["item_stats"].astype(np.float64), categories=names, category_ptr=ptr, category_idx=flat,
        popular_ptr=np.zeros(len(names) + 1, dtype=np.int64), popular_items=np.zeros(0, dtype=np.int32),
        neighbors=arrays["neighbors"], neighbor_sim=arrays["neighbor_sim"].astype(np.float64),
        ease_items=arrays["ease_items"], ease_pos=ease_pos, ease_weights=arrays["ease_weights"])


class DenseFeatures:
    """``OnlineScorer.features``: a request's user and candidates as ``features.dense`` reads them."""

    meta: dict[str, Any]
    item_ids: list[str]
    catalogue: ItemArrays  # catalogue_arrays of the bundle
    category_index: dict[str, int]  # category -> column of the affinity row
    unit: np.ndarray  # the embeddings scaled to unit length

    def features(self, req: Request, cands: list[int], x: np.ndarray | None, als: Ranked, ease: Ranked
                 ) -> tuple[np.ndarray, list[str]]:
        """The dense features of ``cands`` (DENSE_FEATURES order) for the user vector ``x`` (the ALS factor the
        request's ``als`` list was ranked by, None without one), and the recent-item sequence."""
        idx = np.asarray(cands, dtype=np.int64)
        n, n_items = len(idx), len(self.item_ids)
        m = self.meta
        recent_all = list(dict.fromkeys([e.item for e in req.session] + (req.user.recent if req.user else [])))
        ease_rank = ease.ranks(idx, m["ease_candidates"], n_items)
        listed_ease = np.full(n_items, np.nan)
        listed = ease.top[:m["ease_candidates"]]
        listed_ease[listed] = ease.scores[:len(listed)]
        stats = dict(zip(SCORE_STATS, (np.array([v]) for v in (*als.stats(m["als_candidates"]),
                                                                *ease.stats(m["ease_candidates"]))), strict=True))
        lists = Lists(user=np.zeros(n, dtype=np.int64), item=idx, als_rank=als.ranks(idx, m["als_candidates"], n_items),
                      ease_rank=ease_rank, ease_score=listed_ease[idx],
                      neighbor_similarity=self.neighbor_similarity(recent_all)[idx],
                      sources=np.zeros(n, dtype=np.int64), source=np.zeros(n, dtype=np.int64),
                      via=np.full(n, None, dtype=object), offsets=np.array([0, n]), stats=stats)
        dense = features.dense(lists, self.user_batch(req, x), self.catalogue, m["als_candidates"],
                               m["ease_candidates"])
        return dense, [self.item_ids[i] for i in recent_all]

    def neighbor_similarity(self, recent: list[int]) -> np.ndarray:
        """Per catalogue item, its best cosine to one of the ``neighbor_history`` most recent items among their
        content neighbours (NaN for none): what the batch's content source finds."""
        best = np.full(len(self.item_ids), np.nan)
        for r in recent[:self.meta["neighbor_history"]]:
            nb = self.catalogue.neighbors[r]
            ok = nb >= 0
            np.fmax.at(best, nb[ok], self.catalogue.neighbor_sim[r][ok])
        return best

    def user_batch(self, req: Request, x: np.ndarray | None) -> Batch:
        """The request's user as a one-row ``Batch``: the profile's USER_STATS with the session's events and new
        items added (and no days since the last event while there is a session), the session-mixed category
        affinity and content vector, the user vector ``x`` and the friends' items."""
        if req.user is not None:
            events, items_, days, friends = (float(v) for v in req.user.stats)
            history = set(req.user.seen_idx.tolist())
        else:
            events = items_ = days = friends = 0.0
            history = set()
        new_items = {e.item for e in req.session if e.item not in history}
        stats = np.array([[np.log1p(np.expm1(events) + len(req.session)), np.log1p(np.expm1(items_) + len(new_items)),
                           0.0 if req.session else days, friends]])
        affinity = np.zeros((1, max(len(self.category_index), 1)))
        for c, v in self.affinity(req).items():
            if c in self.category_index:
                affinity[0, self.category_index[c]] = v
        cv = self.user_content(req)
        content = np.zeros((1, self.catalogue.embeddings.shape[1]))
        if cv is not None:
            content[0] = cv
        factor = np.zeros((1, self.catalogue.factors.shape[1]), dtype=np.float32)
        if x is not None:
            factor[0] = x
        empty = np.zeros(0, dtype=np.int64)
        friend_items = req.user.friend_idx.astype(np.int64) if req.user is not None else empty
        friend_n = req.user.friend_n.astype(np.float64) if req.user is not None else np.zeros(0)
        return Batch(user_ids=np.array([req.user.user_id if req.user else ""], dtype=object), stats=stats,
                     affinity=affinity, recent_ids=None, recent=[np.asarray(req.user.recent if req.user else [],
                                                                            dtype=np.int64)],
                     content=content, content_norm=np.sqrt((content ** 2).sum(axis=1)), factor=factor,
                     has_factor=np.array([x is not None]), top_categories=[empty], seen=[np.array(sorted(history),
                                                                                                   dtype=np.int64)],
                     friend_items=friend_items, friend_n=friend_n, friend_offsets=np.array([0, len(friend_items)]),
                     friend_via=np.zeros(0, dtype=object), via_offsets=np.array([0, 0]))

    def user_content(self, req: Request) -> np.ndarray | None:
        """Unit content vector: the profile's and the session's weighted mean embedding, half and half."""
        parts = []
        if req.user is not None and req.user.content is not None and req.user.content.any():
            parts.append(req.user.content.astype(np.float64))
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
        if req.user is not None and req.user.affinity:
            shares.append(req.user.affinity)
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
