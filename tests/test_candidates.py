"""The candidate union and its features (liverec.candidates, liverec.features.dense) on a hand-built feature set,
against the rules written out here in plain Python (per source, then the merge, then each feature's formula)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from liverec import candidates
from liverec.ease import EaseModel
from liverec.features import DENSE_FEATURES, FRIEND_ENTRY, Features, friend_lists

ITEMS = [f"i{k}" for k in range(8)]
CATS = {"i0": ["a"], "i1": ["a", "b"], "i2": ["b"], "i3": ["b", "b"], "i4": ["a"], "i5": [], "i6": ["b"],
        "i7": ["a"]}
# log_item_users, log_item_recent_users, log_item_age_days, item_unseen (i7 has no event in the history)
STATS = {"i0": (2.0, 1.0, 3.0, 0.0), "i1": (1.5, 1.0, 2.0, 0.0), "i2": (1.0, 2.0, 1.0, 0.0), "i3": (1.0, 0.5, 1.0, 0.0),
         "i4": (2.5, 0.5, 4.0, 0.0), "i5": (0.7, 0.7, 0.5, 0.0), "i6": (0.7, 0.7, 0.2, 0.0), "i7": (0.0, 0.0, 0.0, 1.0)}
RNG = np.random.default_rng(11)
ITEM_FACTOR = {i: RNG.normal(size=3).astype(np.float32) for i in ITEMS[:7]}  # i7: no ALS factor
EMBEDDING = {i: RNG.normal(size=4).astype(np.float32) for i in ITEMS if i != "i6"}  # i6: no text embedding
USERS = {
    # user: stats, affinity, recent (newest first), content vector, factor, top categories, seen
    "u1": ((3.0, 2.0, 0.5, 1.0), {"a": 0.7, "b": 0.3}, ["i1", "i0"], RNG.normal(size=4).astype(np.float32),
           RNG.normal(size=3).astype(np.float32), ["a", "b"], {"i0", "i1"}),
    "u2": ((1.0, 1.0, 0.1, 0.0), {"b": 1.0}, ["i3"], None, None, ["b", "zz"], {"i3"}),
}
FRIENDS = [("u1", "i2", 2, "f1"), ("u1", "i5", 2, "f0"), ("u1", "i0", 3, "f2"), ("u1", "i7", 5, "f1"),
           ("u2", "i4", 1, "f3")]
NEIGHBORS = [("i0", 1, "i2", 0.9), ("i0", 2, "i4", 0.8), ("i0", 3, "i1", 0.7), ("i1", 1, "i4", 0.8),
             ("i1", 2, "i6", 0.5), ("i3", 1, "i4", 0.6), ("i3", 2, "i5", 0.6)]
EASE_ITEMS = ["i0", "i1", "i2", "i3", "i4", "i5"]
EASE_B = RNG.normal(size=(6, 6)).astype(np.float32)
np.fill_diagonal(EASE_B, 0.0)
CONF = {"als_candidates": 3, "ease_candidates": 2, "neighbor_history": 2, "neighbors_per_item": 2,
        "category_candidates": 3, "fallback_categories": 2, "friend_candidates": 2}


def _features(spark) -> Features:
    users = spark.createDataFrame(
        [(u, *s, aff, rec, None if cv is None else cv.tolist(), None if fa is None else fa.tolist())
         for u, (s, aff, rec, cv, fa, _, _) in USERS.items()],
        "user_id string, log_user_events double, log_user_items double, log_days_since_last double, "
        "log_friend_count double, category_affinity map<string,double>, recent_items array<string>, "
        "content_vector array<float>, user_factor array<float>")
    items = spark.createDataFrame(
        [(i, CATS[i], *STATS[i], ITEM_FACTOR[i].tolist() if i in ITEM_FACTOR else None,
          EMBEDDING[i].tolist() if i in EMBEDDING else None) for i in ITEMS],
        "item_id string, categories array<string>, log_item_users double, log_item_recent_users double, "
        "log_item_age_days double, item_unseen double, item_factor array<float>, embedding array<float>")
    lists = {u: sorted((-n, i, f) for v, i, n, f in FRIENDS if v == u) for u in {f[0] for f in FRIENDS}}
    friends = spark.createDataFrame(sorted(lists.items()), f"user_id string, fr array<{FRIEND_ENTRY}>")
    itf = spark.createDataFrame([(i, k, v.tolist()) for k, (i, v) in enumerate(ITEM_FACTOR.items())],
                                "item_id string, item_idx int, features array<float>")
    uf = spark.createDataFrame([("u1", 0, USERS["u1"][4].tolist())],
                               "user_id string, user_idx int, features array<float>")
    seen = spark.createDataFrame([(u, i) for u, v in USERS.items() for i in sorted(v[6])],
                                 "user_id string, item_id string")
    profiles = spark.createDataFrame([(u, v[5]) for u, v in USERS.items()],
                                     "user_id string, top_categories array<string>")
    return Features(users, items, friends, itf, uf, seen, EaseModel(EASE_ITEMS, EASE_B, 1.0, 2, 3), profiles)


def _expected() -> dict[tuple[str, str], dict]:
    """Every candidate row by the rules of liverec.candidates' module doc, one source at a time."""
    found: dict[tuple[str, str], list[tuple]] = {}  # (user, item) -> [(prio, order, source, via, extra)]

    def add(u, i, prio, order, source, via, **extra):
        found.setdefault((u, i), []).append((prio, order, via or "", source, via, extra))

    stats = {}
    for u, (_, _, recent, _, factor, top_cats, seen) in USERS.items():
        hist = sorted(EASE_ITEMS.index(i) for i in seen if i in EASE_ITEMS)
        s = EASE_B[hist].astype(np.float64).sum(axis=0)
        free = [j for j in range(len(EASE_ITEMS)) if j not in hist]
        listed = sorted(free, key=lambda j: (-s[j], j))[:CONF["ease_candidates"]]
        for r, j in enumerate(listed, 1):
            via = EASE_ITEMS[hist[int(np.argmax(EASE_B[hist, j]))]]
            add(u, EASE_ITEMS[j], 2, r, "ease", via, ease_rank=r, ease_score=s[j])
        stats[u] = {"ease": (s[free].mean(), s[free].std(), s[listed[-1]])}
        if factor is not None:
            scores = {i: float(factor.astype(np.float64) @ v.astype(np.float64))
                      for i, v in ITEM_FACTOR.items() if i not in seen}
            listed = sorted(scores, key=lambda i: (-scores[i], i))[:CONF["als_candidates"]]
            for r, i in enumerate(listed, 1):
                add(u, i, 4, r, "als", None, als_rank=r)
            vals = np.array(list(scores.values()))
            stats[u]["als"] = (vals.mean(), vals.std(), scores[listed[-1]])
        for h in recent[:CONF["neighbor_history"]]:
            for item, rank, nb, sim in NEIGHBORS:
                if item == h and rank <= CONF["neighbors_per_item"]:
                    add(u, nb, 0, -sim, "content", h, neighbor_similarity=sim)
        for cp, c in enumerate(top_cats[:CONF["fallback_categories"]]):
            pop = [(i, k) for i in ITEMS if STATS[i][3] == 0 for k, x in enumerate(CATS[i]) if x == c]
            pop.sort(key=lambda t: (-STATS[t[0]][1], -STATS[t[0]][0], t[0]))
            for cr, (i, _) in enumerate(pop[:CONF["category_candidates"]], 1):
                add(u, i, 3, cp * 1000 + cr, "popular_category", c)
        mine = sorted([f for f in FRIENDS if f[0] == u], key=lambda f: (-f[2], f[1]))[:CONF["friend_candidates"]]
        for fr, (_, i, _, via) in enumerate(mine, 1):
            add(u, i, 1, fr, "friends", via)
    out = {}
    for (u, i), rows in found.items():
        if i in USERS[u][6]:
            continue
        best = min(rows, key=lambda r: r[:3])
        extra = {k: v for r in rows for k, v in r[5].items()}
        out[(u, i)] = {"source": best[3], "via": best[4], "sources": sorted({r[3] for r in rows}),
                       "als_rank": extra.get("als_rank"), "ease_rank": extra.get("ease_rank"),
                       "ease_score": extra.get("ease_score"), "similarity": max(
                           [r[5]["neighbor_similarity"] for r in rows if "neighbor_similarity" in r[5]], default=0.0)}
    for (u, i), row in out.items():
        s, aff, _, cv, factor, _, _ = USERS[u]

        def z(score, st):
            return 0.0 if st is None else (score - st[0]) / max(st[1], 1e-9)

        als = stats[u].get("als")
        if factor is not None and i in ITEM_FACTOR:
            dot = float(factor.astype(np.float64) @ ITEM_FACTOR[i].astype(np.float64))
        else:
            dot = als[2] if als else None
        ease_st = stats[u]["ease"]
        cos = 0.0
        if cv is not None and i in EMBEDDING:
            a, b = cv.astype(np.float64), EMBEDDING[i].astype(np.float64)
            cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        feats = {
            "als_z": z(dot, als) if dot is not None else 0.0,
            "log_als_rank": math.log1p(row["als_rank"] or CONF["als_candidates"] + 1),
            "ease_z": z(row["ease_score"] if row["ease_score"] is not None else ease_st[2], ease_st),
            "log_ease_rank": math.log1p(row["ease_rank"] or CONF["ease_candidates"] + 1),
            "content_cosine": cos, "neighbor_similarity": row["similarity"],
            **dict(zip(("log_item_users", "log_item_recent_users", "log_item_age_days", "item_unseen"), STATS[i],
                       strict=True)),
            **dict(zip(("log_user_events", "log_user_items", "log_days_since_last", "log_friend_count"), s,
                       strict=True)),
            "category_affinity": sum(aff.get(c, 0.0) for c in CATS[i]),
            "log_friends_on_item": math.log1p(next((f[2] for f in FRIENDS if f[:2] == (u, i)), 0)),
        }
        row["dense"] = [feats[n] for n in DENSE_FEATURES]
    return out


@pytest.mark.parametrize("batch_users", [1, 256])
def test_candidate_union_and_features_follow_the_rules(spark, settings_factory, batch_users):
    settings = settings_factory(*[f"recommend.{k}={v}" for k, v in CONF.items()], "ranker.recent_items=1",
                                f"recommend.list_batch_users={batch_users}")
    nb = spark.createDataFrame(NEIGHBORS, "item_id string, rank int, neighbor_id string, similarity double")
    users = spark.createDataFrame([("u1",), ("u2",), ("nobody",)], "user_id string")
    got = {(r["user_id"], r["item_id"]): r for r in
           candidates.candidate_rows(_features(spark), users, nb, settings).collect()}
    want = _expected()
    assert set(got) == set(want)
    # every source contributed, and some items were found by several
    assert {w["source"] for w in want.values()} == set(candidates.SOURCES)
    assert any(len(w["sources"]) > 1 for w in want.values())
    for key, w in want.items():
        g = got[key]
        assert (g["source"], g["via"], g["sources"], g["als_rank"], g["ease_rank"]) == \
            (w["source"], w["via"], w["sources"], w["als_rank"], w["ease_rank"]), key
        np.testing.assert_allclose(g["dense"], w["dense"], rtol=1e-5, atol=1e-6, err_msg=str(key))
        assert g["recent_items"] == USERS[key[0]][2][:1]


def test_friend_lists_count_each_item_over_the_friends_who_chose_it(spark):
    rng = np.random.default_rng(5)
    users = [f"u{n}" for n in range(40)]
    pairs = {(str(a), str(b)) for a, b in rng.choice(users, size=(120, 2)) if a != b}
    pairs |= {(b, a) for a, b in pairs}
    seen = {(u, f"i{k}") for u in users for k in rng.choice(30, size=int(rng.integers(0, 9)), replace=False)}
    got = {r["user_id"]: [tuple(e) for e in r["fr"]] for r in friend_lists(
        spark.createDataFrame(sorted(pairs), "user_id string, friend_id string").repartition(3),
        spark.createDataFrame(sorted(seen), "user_id string, item_id string").repartition(4)).collect()}
    want = {}
    for u in users:  # by hand: each item a friend chose, how many friends, the smallest friend id
        chose: dict[str, list[str]] = {}
        for a, f in pairs:
            if a == u:
                for v, i in seen:
                    if v == f:
                        chose.setdefault(i, []).append(f)
        if chose:
            want[u] = sorted((-len(fs), i, min(fs)) for i, fs in chose.items())
    assert got == want and sum(len(v) for v in want.values()) > 100


def test_every_source_off_is_one_clear_error():
    from liverec.config import load_settings

    conf = load_settings(overrides=["recommend.als_candidates=0", "recommend.ease_candidates=0",
                                    "recommend.neighbor_history=0", "recommend.category_candidates=0",
                                    "recommend.friend_candidates=0"]).recommend
    with pytest.raises(ValueError, match="every candidate source is turned off"):
        candidates.check(conf)
