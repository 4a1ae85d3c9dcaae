"""Diversity: maximal marginal relevance over each user's best candidates (``recommend.mmr_lambda``: 1 = by
score alone, ``recommend.mmr_pool`` candidates considered), with the cosine of the items' vectors (text
embeddings, ALS factors when there are none)."""

from __future__ import annotations

import numpy as np


def mmr_batch(relevance: np.ndarray, sims: np.ndarray, counts: np.ndarray, n: int, lam: float) -> np.ndarray:
    """Maximal marginal relevance over a batch of lists at once: ``relevance`` (B, P) in [0, 1] (list b's rows are
    its first ``counts[b]``), ``sims`` (B, P, P) the cosine between two rows of a list -> (B, min(n, P)) the rows
    picked, in pick order, -1 once a list has run out. Each step takes, per list, the row maximising
    ``lam * relevance - (1 - lam) * max cosine to the rows already picked`` (the first step: relevance alone);
    ties go to the earlier row."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"recommend.mmr_lambda must be between 0 and 1, got {lam}")
    b, p = relevance.shape
    steps = min(n, p)
    picks = np.full((b, steps), -1, dtype=np.int64)
    closest = np.zeros((b, p))
    free = np.arange(p)[None, :] < np.asarray(counts)[:, None]
    rows = np.arange(b)
    for step in range(steps):
        value = lam * relevance - (1.0 - lam) * closest if step else relevance.astype(np.float64)
        best = np.argmax(np.where(free, value, -np.inf), axis=1)
        live = step < np.asarray(counts)
        picks[live, step] = best[live]
        free[rows[live], best[live]] = False
        closest = np.maximum(closest, sims[rows, best])
    return picks


def mmr_order(relevance: np.ndarray, vectors: np.ndarray, n: int, lam: float) -> list[int]:
    """Indices of ``n`` rows of one list picked by ``mmr_batch``: relevance in [0, 1]; vectors unit length (a zero
    row is similar to nothing)."""
    m = len(relevance)
    if min(n, m) == 0:
        return []
    sims = vectors @ vectors.T if len(vectors) else np.zeros((m, m))
    picked = mmr_batch(np.asarray(relevance, dtype=np.float64)[None, :], sims[None], np.array([m]), n, lam)[0]
    return [int(x) for x in picked if x >= 0]


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length in float32 (a zero row stays zero): the vectors MMR compares."""
    mat = np.asarray(matrix, dtype=np.float32)
    return mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)


def pools(scores: list[np.ndarray], size: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Per list, the positions of its ``size`` best rows by score (ties: the earlier row, i.e. the smaller item id
    when the rows are in id order), best first; and their relevance, the score min-max scaled within the pool
    (1 when all are equal), as a (lists, size) matrix padded with 0."""
    chosen, rel = [], np.zeros((len(scores), max(size, 0)))
    for j, s in enumerate(scores):
        s = np.asarray(s, dtype=np.float64)
        best = np.lexsort((np.arange(len(s)), -s))[:size]
        chosen.append(best)
        top = s[best]
        span = top.max() - top.min() if len(top) else 0.0
        rel[j, :len(best)] = (top - top.min()) / span if span > 0 else 1.0
    return chosen, rel
