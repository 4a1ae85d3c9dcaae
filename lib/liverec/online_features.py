"""The online scorer's dense features: ``DENSE_FEATURES`` for a request's candidates as ``liverec.features``
computes them in the batch, with the live session added to the user's counts, category affinity and content
vector; :class:`DenseFeatures` is a mixin of ``liverec.online.OnlineScorer`` and reads the bundle's arrays the
scorer holds (factors, neighbours, item and user statistics, friends' items, the category matrix).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from liverec.features import DENSE_FEATURES
from liverec.online_requests import Request


class DenseFeatures:
    """``OnlineScorer.features`` and the session-aware user content vector and category affinity it uses."""

    meta: dict[str, Any]
    item_ids: list[str]
    columns: dict[str, int]  # DENSE_FEATURES name -> column

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
        recent_all = [e.item for e in req.session] + (req.user.recent if req.user is not None else [])
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
            events, items_, days, friends = (float(v) for v in req.user.stats)
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
        if req.user is not None and len(req.user.friend_idx):
            per_item = np.zeros(len(self.item_ids), dtype=np.float32)
            per_item[req.user.friend_idx] = req.user.friend_n
            dense[:, col["log_friends_on_item"]] = np.log1p(per_item[idx])
        recent = [e.item for e in req.session]
        if req.user is not None:
            recent += req.user.recent
        return dense, [self.item_ids[i] for i in dict.fromkeys(recent)]

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
