"""Profiles, top-K over vectors, ALS, metrics, splits and MMR on tiny frames (the published table on the demo chain:
tests/test_nightly.py)."""

import datetime as dt
import math

import numpy as np
import pytest
from pyspark.sql import functions as F

from liverec import als, metrics, profiles, splits, vectors
from liverec.cleaning import pseudonymise_value
from tests.conftest import T0, silver


def test_profiles_fuse_events_categories_and_friends(spark, settings):
    ev = silver(spark, [("a", "i1", "view", 0), ("a", "i2", "purchase", 9), ("a", "i1", "click", 10),
                        ("b", "i3", "rating", 5, 4.0), ("b", "i2", "view", 6), ("c", "i3", "view", 1)])
    items = spark.createDataFrame([("i1", ["kitchen"]), ("i2", ["garden"]), ("i3", ["garden", "books"])],
                                  "item_id string, categories array<string>")
    key = b"k"
    a, b, c = (pseudonymise_value(x, key) for x in "abc")
    ev = ev.withColumn("user_id", F.when(F.col("user_id") == "a", a).when(F.col("user_id") == "b", b).otherwise(c))
    social = spark.createDataFrame([("a", "b", "1"), ("b", "a", "1"), ("c", "a", "1"), ("c", None, None)],
                                   "src string, dst string, weight string")
    got = {r["user_id"]: r for r in profiles.build_profiles(ev, items, social, settings.profiles,
                                                            settings.clean.event_weights, key).collect()}
    pa = got[a]
    assert pa["n_events"] == 3 and pa["event_counts"] == {"view": 1, "purchase": 1, "click": 1}
    assert pa["recent_items"] == ["i1", "i2"]  # i1 touched last (day 10)
    assert pa["first_seen"] == T0 and pa["last_seen"] == T0 + dt.timedelta(days=10)
    # garden: purchase (8) at day 9; kitchen: view (1) at day 0 and click (2) at day 10, decayed from day 10
    hl = settings.profiles.half_life_days
    garden = 8 * 0.5 ** (1 / hl)
    kitchen = 1 * 0.5 ** (10 / hl) + 2
    assert pa["category_affinity"]["garden"] == pytest.approx(garden / (garden + kitchen))
    assert pa["top_categories"] == ["garden", "kitchen"]
    assert pa["friend_count"] == 2  # b both ways counts once, and c
    assert got[c]["friend_count"] == 1 and got[c]["friends_top_items"][0] == "i2"  # a's heaviest item
    assert sum(got[b]["category_affinity"].values()) == pytest.approx(1.0)


def test_top_n_matches_brute_force_and_skips_seen(spark):
    rng = np.random.default_rng(0)
    U, V = rng.normal(size=(30, 5)).astype(np.float32), rng.normal(size=(40, 5)).astype(np.float32)
    users = spark.createDataFrame([(i, U[i].tolist()) for i in range(30)], "user_idx int, features array<float>")
    items = spark.createDataFrame([(j, V[j].tolist()) for j in range(40)], "item_idx int, features array<float>")
    seen = spark.createDataFrame([(i, [int(x) for x in rng.choice(40, 10, replace=False)]) for i in range(30)],
                                 "user_idx int, seen array<int>")
    seen_map = {r["user_idx"]: set(r["seen"]) for r in seen.collect()}
    got = {r["user_idx"]: r for r in vectors.top_k(users, items, seen, 7).collect()}
    for i in range(30):
        scores = U[i] @ V.T
        expected = [j for j in np.argsort(-scores) if j not in seen_map[i]][:7]
        assert got[i]["items"] == expected
        assert got[i]["scores"] == pytest.approx([float(scores[j]) for j in expected], rel=1e-5)


def test_dense_index_numbers_ids_in_their_order_across_partitions(spark):
    rng = np.random.default_rng(3)
    ids = [f"u{n}" for n in rng.choice(100_000, 3_000, replace=False)]
    rows = [(i, float(k)) for k, i in enumerate(ids)] + [(ids[0], -1.0)]  # one id twice: numbered once
    frame = spark.createDataFrame(rows, "user_id string, w double").repartition(7)
    want = {i: n for n, i in enumerate(sorted(set(ids)))}  # Python's string order is Spark's for ASCII ids
    got = {r["user_id"]: r["user_idx"] for r in vectors.dense_index(frame.select("user_id"), "user_id",
                                                                    "user_idx").collect()}
    assert got == want
    # other columns ride along, joined back by key; numbering from a start
    once = frame.dropDuplicates(["user_id"])
    joined = vectors.dense_index(once, "user_id", "idx", start=1).collect()
    assert len(joined) == len(want) and all(r["idx"] == want[r["user_id"]] + 1 for r in joined)
    assert vectors.dense_index(frame.limit(0).select("user_id"), "user_id", "user_idx").count() == 0


def test_als_learns_groups_and_survives_long_runs(spark, settings_factory, tmp_path):
    s = settings_factory("als.max_iter=32", "als.checkpoint_interval=4", "als.rank=2", "als.reg_param=0.1")
    rows = []
    rng = np.random.default_rng(1)
    for u in range(60):
        group = u % 2
        for i in range(12):
            if rng.random() < 0.7:  # each user sees about 70% of their group's items, a different 70% each
                rows.append((f"u{u}", f"g{group}i{i}", "purchase", 1))
    pairs = als.strengths(silver(spark, rows), s.als, s.clean.event_weights)
    users, items = als.index_ids(pairs)
    ratings = pairs.join(users, "user_id").join(items, "item_id").select("user_idx", "item_idx", "strength")
    model = als.fit(spark, ratings, s.als, str(tmp_path / "ckpt"))  # 32 iterations: no StackOverflowError
    seen = ratings.groupBy("user_idx").agg(F.collect_list("item_idx").alias("seen"))
    recs = vectors.top_k(model.userFactors.withColumnRenamed("id", "user_idx"),
                     model.itemFactors.withColumnRenamed("id", "item_idx"), seen, 3)
    names = {r["item_idx"]: r["item_id"] for r in items.collect()}
    ids = {r["user_idx"]: r["user_id"] for r in users.collect()}
    seen_by = {}
    for user, item, *_ in rows:
        seen_by.setdefault(user, set()).add(item)
    right = 0
    got = recs.collect()
    for r in got:
        user = ids[r["user_idx"]]
        group = int(user[1:]) % 2
        unseen_in_group = 12 - sum(1 for i in seen_by[user] if i.startswith(f"g{group}"))
        in_group = sum(names[i].startswith(f"g{group}") for i in r["items"])
        right += in_group == min(3, unseen_in_group)  # every unseen item of the user's group comes first
    assert len(got) == 60 and right / len(got) >= 0.95


def test_ranking_metrics_follow_spark_definitions(spark):
    lists = spark.createDataFrame([(1, [1.0, 2.0, 3.0], [1.0, 3.0, 9.0]), (2, [4.0, 5.0, 6.0], [7.0])],
                                  "user int, prediction array<double>, label array<double>")
    got = metrics.accuracy(lists, 3)
    assert got["precision"] == pytest.approx((2 / 3 + 0) / 2)
    assert got["recall"] == pytest.approx((2 / 3 + 0) / 2)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert got["ndcg"] == pytest.approx(dcg / idcg / 2)
    assert got["map"] == pytest.approx(((1 + 2 / 3) / 3) / 2)
    assert metrics.hit_rate(lists, 3) == pytest.approx(0.5)
    assert metrics.coverage(lists, 3, 12) == pytest.approx(0.5)
    vecs = spark.createDataFrame([(i, [1.0, 0.0] if i % 2 else [0.0, 1.0]) for i in range(1, 7)],
                                 "item_idx int, features array<double>")
    # list 1: items 1,3 parallel, 2 orthogonal -> sims 0,1,0 -> 1 - 1/3; list 2: 4,6 parallel, 5 orthogonal
    assert metrics.diversity(lists, 3, vecs) == pytest.approx(2 / 3)
    pop = spark.createDataFrame([(i, 2) for i in range(1, 7)], "item_idx int, users int")
    assert metrics.novelty(lists, 3, pop, 8) == pytest.approx(2.0)


def test_splits(spark):
    pairs = spark.createDataFrame([(f"u{u}", f"i{i}", 1.0) for u in range(5) for i in range(8)],
                                  "user_id string, item_id string, strength double")
    train, test = splits.random_split(pairs, 0.25, 42)
    per_user = {r["user_id"]: r["count"] for r in test.groupBy("user_id").count().collect()}
    assert per_user == {f"u{u}": 2 for u in range(5)}
    assert train.join(test, ["user_id", "item_id"]).count() == 0
    again, _ = splits.random_split(pairs, 0.25, 42)
    assert sorted(map(tuple, again.collect())) == sorted(map(tuple, train.collect()))
    ev = silver(spark, [("a", f"i{d}", "view", d) for d in range(10)])
    before, after, cutoff = splits.temporal_split(ev, 0.3)
    assert before.count() + after.count() == 10 and after.count() in (3, 4)  # the 70% quantile, approximately
    assert before.agg(F.max("ts")).collect()[0][0] < after.agg(F.min("ts")).collect()[0][0]


def test_mmr_trades_relevance_for_diversity():
    from liverec import diversity

    # items a, b nearly parallel, c orthogonal; relevance a > b > c
    vecs = np.array([[1.0, 0.0], [0.995, 0.0998], [0.0, 1.0]])
    rel = np.array([1.0, 0.9, 0.5])
    assert diversity.mmr_order(rel, vecs, 3, 1.0) == [0, 1, 2]
    assert diversity.mmr_order(rel, vecs, 3, 0.5) == [0, 2, 1]  # c: 0.25 - 0 beats b: 0.45 - 0.4975
    assert diversity.mmr_order(rel, vecs, 5, 0.5) == [0, 2, 1] and diversity.mmr_order(rel, vecs, 0, 0.5) == []
    # a batch of lists at once, each as it would be alone: a shorter list runs out (-1), ties go to the earlier row
    unit = diversity.unit_rows(np.array([[1.0, 0.0], [0.995, 0.0998], [0.0, 2.0]]))
    np.testing.assert_allclose(unit[2], [0.0, 1.0])
    sims = np.stack([unit @ unit.T, np.zeros((3, 3))])
    picks = diversity.mmr_batch(np.array([rel, [0.5, 0.5, 0.0]]), sims, np.array([3, 2]), 3, 0.5)
    assert picks.tolist() == [[0, 2, 1], [0, 1, -1]]
    # pools: the best rows by score (ties: the earlier row), relevance min-max scaled within the pool
    chosen, relevance = diversity.pools([np.array([-9.0, 2.0, 3.0, 2.0]), np.array([1.0, 1.0])], 3)
    assert [c.tolist() for c in chosen] == [[2, 1, 3], [0, 1]]
    np.testing.assert_allclose(relevance, [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="mmr_lambda"):
        diversity.mmr_batch(relevance, np.zeros((2, 3, 3)), np.array([3, 2]), 2, 1.5)




def test_calibrated_reranking_by_hand():
    """History mix p = a .5, b .5; candidates (relevance) 0: a (1.0), 1: a (0.9), 2: b (0.8), 3: b (0.1); two picks.
    With lambda 0.5 the first pick is 0 (every single item has the same KL, 0.5 ln(.5/.995) + 0.5 ln(.5/.005));
    then adding 1 gives 0.5 * 1.9 - 0.5 * that KL < 0, adding 2 gives q = p, KL 0: 0.5 * 1.8."""
    from liverec import diversity

    ptr, idx = np.array([0, 1, 2, 3, 4, 5, 6]), np.array([0, 0, 1, 1, 0, 1])  # items 0-3 the pool, 4-5 the history
    cats, target = diversity.calibration_inputs([np.array([4, 5])], [np.array([0, 1, 2, 3])], 4, ptr, idx, 3)
    assert target.tolist() == [[0.5, 0.5, 0.0]] and cats[0].tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]]
    rel = np.array([1.0, 0.9, 0.8, 0.1])
    kl_one = 0.5 * math.log(0.5 / 0.995) + 0.5 * math.log(0.5 / 0.005)
    assert 0.5 * 1.9 - 0.5 * kl_one < 0.5 * 1.8
    assert diversity.calibrated_order(rel, cats[0], target[0], 2, 0.5) == [0, 2]
    assert diversity.calibrated_order(rel, cats[0], target[0], 2, 0.0) == [0, 1]  # by relevance alone
    assert diversity.calibrated_order(rel, cats[0], np.zeros(3), 3, 0.5) == [0, 1, 2]  # no history category
    # a category outside the history still counts in the list's mix (the last column): p = a 1; candidates 0: a (1.0),
    # 1: c (0.95), 2: a (0.5). After 0, adding 1 makes q~_a = .99 * .5 + .01 (KL ln(1 / .505)), adding 2 keeps KL 0:
    # 0.5 * 1.95 - 0.5 * ln(1 / .505) = 0.63 < 0.5 * 1.5
    ptr, idx = np.array([0, 1, 2, 3, 4]), np.array([0, 2, 0, 0])
    cats, target = diversity.calibration_inputs([np.array([3])], [np.array([0, 1, 2])], 3, ptr, idx, 3)
    assert target.tolist() == [[1.0, 0.0]] and cats[0].tolist() == [[1, 0], [0, 1], [1, 0]]
    assert diversity.calibrated_order(np.array([1.0, 0.95, 0.5]), cats[0], target[0], 2, 0.5) == [0, 2]
    with pytest.raises(ValueError, match="calibration_lambda"):
        diversity.calibrated_order(rel, cats[0], target[0], 2, 1.5)


def test_exposure_and_calibration_by_hand(spark):
    """Three users' top 2 over a catalogue of five items (popularity 4, 3, 2, 1 distinct users; item 5 only shown).
    Exposure: item 1 is shown first twice (1 + 1), item 2 second then first (1/log2(3) + 1), items 3 and 5 second
    once (1/log2(3) each), item 4 never (0)."""
    import math

    lists = spark.createDataFrame([(0, [1.0, 2.0], [1.0]), (1, [1.0, 3.0], [3.0]), (2, [2.0, 5.0], [5.0])],
                                  "user int, prediction array<double>, label array<double>")
    pop = spark.createDataFrame([(1, 4), (2, 3), (3, 2), (4, 1)], "item_idx int, users long")
    got = metrics.exposure(lists, 2, pop, 5)
    d = 1 / math.log2(3)
    x = sorted([2.0, 1 + d, d, 0.0, d])  # items 1, 2, 3, 4, 5
    assert got["exposure_gini"] == pytest.approx(sum((2 * i - 5 - 1) * v for i, v in enumerate(x, 1)) / (5 * sum(x)))
    # the head is the top 20% of the 4 catalogue items by popularity: item 1 (ceil(0.8) = 1)
    assert got["tail_exposure"] == pytest.approx((1 + d + d + 0 + d) / (2 + 1 + d + d + d))
    assert got["tail_interactions"] == pytest.approx((3 + 2 + 1) / (4 + 3 + 2 + 1))
    assert got["avg_popularity"] == pytest.approx(((4 + 3) / 2 / 5 + (4 + 2) / 2 / 5 + (3 + 0) / 2 / 5) / 3)
    assert metrics.gini([1.0, 1.0, 1.0]) == 0.0 and metrics.gini([0, 0, 0, 4]) == pytest.approx(0.75)

    # categories: 1 a, 2 b, 3 a+b, 4 c, 5 c; histories: user 0 items 1 and 4, user 1 item 3, user 2 item 2
    cats = spark.createDataFrame([(1, ["a"]), (2, ["b"]), (3, ["a", "b"]), (4, ["c"]), (5, ["c"])],
                                 "item_idx int, categories array<string>")
    history = spark.createDataFrame([(0, 1), (0, 4), (1, 3), (2, 2)], "user int, item_idx int")
    a = metrics.CALIBRATION_ALPHA
    kl0 = 0.5 * math.log(0.5 / ((1 - a) * 0.5 + a * 0.5)) + 0.5 * math.log(0.5 / (a * 0.5))  # p a .5 c .5; q a .5 b .5
    kl1 = 0.5 * math.log(0.5 / ((1 - a) * 0.75 + a * 0.5)) + 0.5 * math.log(0.5 / ((1 - a) * 0.25 + a * 0.5))
    kl2 = math.log(1.0 / ((1 - a) * 0.5 + a * 1.0))  # p b 1; q b .5 c .5
    assert metrics.calibration(lists, 2, history, cats) == pytest.approx((kl0 + kl1 + kl2) / 3)
    # exposure per category (an item's exposure split over its categories): a = 1 + 1 + d/2 (items 1, 1, 3),
    # b = d + d/2 + 1 (items 2, 3, 2), c = d (item 5); training pairs: a 1 + .5, b .5 + 1, c 1
    e = np.array([2 + d / 2, 1 + 1.5 * d, d])
    t = np.array([1.5, 1.5, 1.0])
    assert metrics.category_exposure(lists, 2, history, cats) == pytest.approx(
        0.5 * np.abs(e / e.sum() - t / t.sum()).sum())


def test_content_policy_rules_resolve_over_the_catalogue_and_refuse_bad_files(spark, tmp_path):
    from liverec import policy
    from liverec.config import PolicySettings
    from liverec.errors import InputError

    (tmp_path / "items.csv").write_text("item_id,reason\ni9,recall\ni1,legal hold\n\n")
    (tmp_path / "cats.csv").write_text("category,reason\nweapons,not sold here\n")
    conf = PolicySettings(str(tmp_path / "items.csv"), str(tmp_path / "cats.csv"))
    items = spark.createDataFrame([("i1", ["weapons"]), ("i2", ["garden", "weapons"]), ("i3", ["garden"]),
                                   ("i4", None)], "item_id string, categories array<string>")
    got = policy.load(conf, items)
    # i9 (named, outside the catalogue) and i1 (named: its own reason wins) and i2 (its category)
    assert got.reasons == {"i9": "recall", "i1": "legal hold", "i2": "category weapons: not sold here"}
    assert (got.by_item, got.by_category, len(got)) == (2, 1, 3)
    rows = spark.createDataFrame([("u", "i2"), ("u", "i3"), ("v", "i9")], "user_id string, item_id string")
    assert policy.leaks(rows, got) == 2
    assert len(policy.load(PolicySettings("", ""), items)) == 0
    (tmp_path / "bad.csv").write_text("item_id,reason\ni5,\n")
    with pytest.raises(InputError, match="line 2: every entry needs a item_id and a reason"):
        policy.rules(PolicySettings(str(tmp_path / "bad.csv"), ""))
    with pytest.raises(InputError, match="header with the columns category,reason"):
        policy.rules(PolicySettings("", str(tmp_path / "items.csv")))
    with pytest.raises(InputError, match="policy.blocked_items names"):
        policy.rules(PolicySettings(str(tmp_path / "missing.csv"), ""))
