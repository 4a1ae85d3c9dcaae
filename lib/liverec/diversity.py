"""Re-ranking each user's best candidates (``recommend.mmr_pool`` of them) into the top N, by the re-ranker
``recommend.reranker`` names:

- ``mmr``: maximal marginal relevance (``recommend.mmr_lambda``: 1 = by score alone), with the cosine of the items'
  vectors (text embeddings, ALS factors when there are none);
- ``calibrated``: calibrated recommendations (Steck, "Calibrated Recommendations", RecSys 2018): each pick
  maximises ``(1 - lambda) * sum of the list's relevance - lambda * KL(p || q~)`` (``recommend.calibration_lambda``),
  p the category mix of the user's history, q~ the list's mix smoothed towards p. The mix and the smoothing are
  the ones the evaluation's calibration_kl measures (``category_mix``, CALIBRATION_ALPHA; liverec.metrics).
"""

from __future__ import annotations

import numpy as np

RERANKERS = ("mmr", "calibrated")
CALIBRATION_ALPHA = 0.01  # the list's category mix smoothed towards the user's, so the KL is finite (Steck 2018)


def _category_weights(rows: np.ndarray, ptr: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, ...]:
    """(owner, category, weight): every category of every row (catalogue rows; the CSR ``ptr``/``idx`` of each
    item's categories), ``owner`` the position in ``rows``, ``weight`` 1 / that item's number of categories."""
    rows = np.asarray(rows, dtype=np.int64)
    n = (ptr[rows + 1] - ptr[rows]).astype(np.int64)
    owner = np.repeat(np.arange(len(rows)), n)
    within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    return owner, idx[np.repeat(ptr[rows], n) + within].astype(np.int64), 1.0 / np.repeat(np.maximum(n, 1), n)


def category_mix(rows: np.ndarray, ptr: np.ndarray, idx: np.ndarray, n_categories: int) -> np.ndarray:
    """The category mix of a set of items (catalogue rows; the CSR ``ptr``/``idx`` of each item's categories): an
    item with c categories adds 1 / c to each; normalised to sum 1 (all zeros when no item has a category)."""
    _, cats, w = _category_weights(rows, ptr, idx)
    mix = np.bincount(cats, weights=w, minlength=n_categories).astype(np.float64)
    total = mix.sum()
    return mix / total if total > 0 else mix


def calibration_inputs(histories: list[np.ndarray], pools: list[np.ndarray], size: int, ptr: np.ndarray,
                       idx: np.ndarray, n_categories: int) -> tuple[np.ndarray, np.ndarray]:
    """(cats (B, size, G + 1), target (B, G + 1)) for ``calibrated_batch`` from each user's history and candidate
    pool (catalogue rows; the categories' CSR ``ptr``/``idx``): only the G categories some user's history has get
    a column of their own (the KL sums over those), the last column holds the weight of every other category (it
    counts in the list's mix, not in the KL), so the arrays stay small for a large taxonomy. The whole batch in a
    few array operations (no loop over users or items)."""
    b = len(histories)
    hist_user = np.repeat(np.arange(b), [len(h) for h in histories])
    flat = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if b else np.zeros(0, np.int64)
    owner, c, w = _category_weights(flat, ptr, idx)
    mixes = np.zeros((b, n_categories))
    np.add.at(mixes, (hist_user[owner], c), w)
    totals = mixes.sum(axis=1, keepdims=True)
    mixes = np.divide(mixes, totals, out=np.zeros_like(mixes), where=totals > 0)
    support = np.flatnonzero(mixes.any(axis=0))
    column = np.full(n_categories, len(support), dtype=np.int64)
    column[support] = np.arange(len(support))
    target = np.zeros((b, len(support) + 1))
    target[:, :len(support)] = mixes[:, support]
    cats = np.zeros((b, size, len(support) + 1))
    lens = np.array([len(p) for p in pools], dtype=np.int64)
    pool_user = np.repeat(np.arange(b), lens)
    pool_pos = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    flat = np.concatenate([np.asarray(p, dtype=np.int64) for p in pools]) if b else np.zeros(0, np.int64)
    owner, c, w = _category_weights(flat, ptr, idx)
    np.add.at(cats, (pool_user[owner], pool_pos[owner], column[c]), w)
    return cats, target


def calibrated_batch(relevance: np.ndarray, cats: np.ndarray, target: np.ndarray, counts: np.ndarray, n: int,
                     lam: float, alpha: float = CALIBRATION_ALPHA) -> np.ndarray:
    """Calibrated re-ranking over a batch of lists at once: ``relevance`` (B, P) in [0, 1] (list b's rows are its
    first ``counts[b]``), ``cats`` (B, P, G) each row's category weights (``item_mixes``), ``target`` (B, G) the
    user's history mix p -> (B, min(n, P)) the rows picked, in pick order, -1 once a list has run out. Each step
    takes, per list, the row maximising ``(1 - lam) * (relevance picked + its own) - lam * KL(p || q~)`` with q the
    mix of the picked rows and it (weights summed, then normalised) and ``q~ = (1 - alpha) q + alpha p``; ties go
    to the earlier row. A user whose history has no category (p all zero) gets the list by relevance."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"recommend.calibration_lambda must be between 0 and 1, got {lam}")
    b, p = relevance.shape
    steps = min(n, p)
    picks = np.full((b, steps), -1, dtype=np.int64)
    free = np.arange(p)[None, :] < np.asarray(counts)[:, None]
    rows = np.arange(b)
    acc = np.zeros(target.shape)  # the picked rows' category weights, summed
    rel_sum = np.zeros(b)
    tgt = target[:, None, :]
    has = tgt > 0
    log_p = np.log(np.where(has, tgt, 1.0))
    for step in range(steps):
        mix = acc[:, None, :] + cats  # (B, P, G): the list with each candidate added
        total = mix.sum(axis=2, keepdims=True)
        q = np.where(total > 0, mix / np.maximum(total, 1e-300), 0.0)
        smooth = (1.0 - alpha) * q + alpha * tgt
        kl = np.where(has, tgt * (log_p - np.log(np.where(has, smooth, 1.0))), 0.0).sum(axis=2)
        value = (1.0 - lam) * (rel_sum[:, None] + relevance) - lam * kl
        best = np.argmax(np.where(free, value, -np.inf), axis=1)
        live = step < np.asarray(counts)
        picks[live, step] = best[live]
        free[rows[live], best[live]] = False
        acc[live] += cats[rows[live], best[live]]
        rel_sum[live] += relevance[rows[live], best[live]]
    return picks


def calibrated_order(relevance: np.ndarray, cats: np.ndarray, target: np.ndarray, n: int, lam: float) -> list[int]:
    """Indices of ``n`` rows of one list picked by ``calibrated_batch``."""
    m = len(relevance)
    if min(n, m) == 0:
        return []
    picked = calibrated_batch(np.asarray(relevance, dtype=np.float64)[None, :], np.asarray(cats)[None],
                              np.asarray(target, dtype=np.float64)[None, :], np.array([m]), n, lam)[0]
    return [int(x) for x in picked if x >= 0]


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
