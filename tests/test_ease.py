"""EASE against its closed form in numpy, the candidate union's bookkeeping, and the gate's list metric."""

import numpy as np
import pandas as pd
import pytest

from liverec import ease
from liverec.errors import InputError
from liverec.metrics import list_quality, top_n_ndcg


def _pairs(spark, seed=0, users=40, items=25):
    rng = np.random.default_rng(seed)
    x = (rng.random((users, items)) < 0.25).astype(np.float64)
    x[:, 0] = 0  # an item nobody has: not in the model at all
    x[0, :] = 0
    x[0, 3] = 1  # a user with a single item
    rows = [(f"u{u:02d}", f"i{i:02d}") for u, i in zip(*np.nonzero(x), strict=True)]
    return x, spark.createDataFrame(rows, "user_id string, item_id string")


def _numpy_ease(x: np.ndarray, lam: float) -> np.ndarray:
    """B by solving (X^T X + lambda I) B = X^T X - diag(gamma) for the zero-diagonal constraint, column by column
    (the Lagrangian form of Steck 2019, not the inverse trick the library uses)."""
    g = x.T @ x
    n = len(g)
    a = g + lam * np.eye(n)
    b = np.zeros((n, n))
    for j in range(n):
        # minimise ||x_j - X b||^2 + lam ||b||^2 with b_j = 0: solve on the other columns only
        others = [i for i in range(n) if i != j]
        b[others, j] = np.linalg.solve(a[np.ix_(others, others)], g[others, j])
    return b


def test_ease_weights_match_the_closed_form(spark):
    x, pairs = _pairs(spark)
    model, rows = ease.fit(pairs, 7.0, 1000)
    kept = np.flatnonzero(x.sum(axis=0) > 0)
    assert model.item_ids == [f"i{i:02d}" for i in kept]  # only items someone has, in id order
    expected = _numpy_ease(x[:, kept], 7.0)
    np.testing.assert_allclose(model.weights, expected, rtol=1e-4, atol=1e-5)
    assert np.all(np.diag(model.weights) == 0)
    assert (model.users, model.pairs) == (int((x.sum(axis=1) > 0).sum()), int(x.sum()))
    assert rows.count() == model.users


def test_ease_top_items_scores_and_reasons(spark):
    x, pairs = _pairs(spark, seed=1)
    model, rows = ease.fit(pairs, 3.0, 1000)
    kept = np.flatnonzero(x.sum(axis=0) > 0)
    b = model.weights.astype(np.float64)
    got = {r["user_id"]: r for r in ease.scored_top(spark, model, rows, 5).collect()}
    for user in ("u00", "u05", "u17"):
        u = int(user[1:])
        hist = np.flatnonzero(x[u, kept] > 0)
        scores = x[u, kept] @ b
        scores[hist] = -np.inf
        order = [int(i) for i in np.argsort(-scores, kind="stable")[:5] if np.isfinite(scores[i])]
        assert got[user]["items"] == order
        np.testing.assert_allclose(got[user]["scores"], scores[order], rtol=1e-5, atol=1e-6)
        # the reason: the history item whose weight adds most to the item's score
        assert got[user]["via"] == [int(hist[np.argmax(b[hist, i])]) for i in order]
        free = np.isfinite(scores)
        assert got[user]["score_mean"] == pytest.approx(scores[free].mean(), rel=1e-5, abs=1e-6)
        assert got[user]["score_std"] == pytest.approx(scores[free].std(), rel=1e-4, abs=1e-6)


def test_ease_refuses_a_catalogue_above_the_cap(spark):
    _, pairs = _pairs(spark)
    with pytest.raises(InputError, match="ease.max_items"):
        ease.fit(pairs, 1.0, 5)
    with pytest.raises(InputError, match="lambda"):
        ease.fit(pairs, 0.0, 1000)


def test_gate_list_metric_by_hand():
    # user a: 3 held-out pairs, 2 among the candidates; user b: 1 held out, found
    rows = pd.DataFrame({
        "user_id": ["a", "a", "a", "a", "b", "b"],
        "item_id": ["1", "2", "3", "4", "5", "6"],
        "label": [0.0, 1.0, 1.0, 0.0, 0.0, 1.0],
        "n_labels": [3, 3, 3, 3, 1, 1],
        "ease_rank": [1, 2, np.nan, 3, 1, 2],
        "als_rank": [np.nan, 1, 2, 3, np.nan, np.nan],
    })
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.5, 0.6])
    d = 1 / np.log2(np.arange(2, 5))
    # top 2 by score: a -> 2, 3 (both relevant) of an ideal 2 (min(3, 2)); b -> 6 (relevant) first
    assert top_n_ndcg(rows, scores, 2) == pytest.approx(((d[0] + d[1]) / (d[0] + d[1]) + 1.0) / 2)
    got = list_quality(rows, scores, 2)
    # EASE's own top 2: a -> 1, 2 (2 in second place); b -> 5, 6
    assert got["ease"] == pytest.approx((d[1] / (d[0] + d[1]) + d[1] / d[0]) / 2)
    # ALS: a -> 2, 3; b has no ALS list: 0
    assert got["als"] == pytest.approx((1.0 + 0.0) / 2)
    assert set(got) == {"ranker", "ease", "als"}
