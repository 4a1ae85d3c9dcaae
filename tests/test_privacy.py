"""Differentially private popularity (liverec.privacy): the per-user contribution bound in Spark, OpenDP's discrete
Laplace noise (its spread against the distribution's own variance, computed here), the release over the public
catalogue, and the nightly table's popularity rows ranked by it and naming its epsilon."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import functions as F

from liverec import fallback, privacy, profiles
from tests.conftest import silver

KEY = b"test-key"


def test_each_user_counts_for_at_most_max_items_chosen_without_looking_at_anyone_else(spark):
    rows = [("u1", f"i{i}", "click", i) for i in range(10)] + [("u2", "i1", "click", 1), ("u2", "i2", "view", 2)]
    kept = privacy.bounded_pairs(silver(spark, rows), 3, KEY).collect()
    per_user: dict[str, set[str]] = {}
    for r in kept:
        per_user.setdefault(r["user_id"], set()).add(r["item_id"])
    assert len(per_user["u1"]) == 3 and per_user["u2"] == {"i1", "i2"}  # a user under the bound keeps everything
    # the same user among other people: the same items kept
    others = rows[:10] + [(f"v{n}", f"i{n % 10}", "click", n) for n in range(50)]
    again = {r["item_id"] for r in privacy.bounded_pairs(silver(spark, others), 3, KEY).where(
        F.col("user_id") == "u1").collect()}
    assert again == per_user["u1"]


def test_the_noise_is_opendps_discrete_laplace_at_the_scale_the_bound_and_epsilon_give():
    noisy, scale = privacy.laplace([100] * 40_000, epsilon=0.5, max_items=2)
    assert scale == 4.0
    noise = np.array(noisy) - 100
    # discrete Laplace with scale b: P(k) proportional to exp(-|k| / b), variance 2 q / (1 - q)^2 with q = exp(-1 / b)
    q = math.exp(-1 / scale)
    variance = 2 * q / (1 - q) ** 2
    assert noise.dtype.kind == "i" and abs(noise.mean()) < 0.15
    assert noise.var() == pytest.approx(variance, rel=0.05)


def test_the_release_covers_the_catalogue_and_a_huge_epsilon_gives_the_bounded_counts(spark):
    rows = [("u1", "a", "click", 1), ("u1", "b", "click", 2), ("u2", "a", "click", 3), ("u3", "a", "view", 4),
            ("u3", "zz", "click", 5)]  # zz is not in the catalogue
    catalogue = spark.createDataFrame([("a",), ("b",), ("c",)], "item_id string")
    release = privacy.item_popularity(silver(spark, rows), catalogue, epsilon=1e6, max_items=5, key=KEY)
    assert {r["item_id"]: r["users"] for r in release.counts.collect()} == {"a": 3, "b": 1, "c": 0}
    assert (release.items, release.label) == (3, "dp-eps=1e+06")
    meta = release.metadata()
    assert meta["privacy.popularity_scale"] == pytest.approx(5e-6) and meta["privacy.popularity_mechanism"] == (
        "discrete_laplace")
    with pytest.raises(Exception, match="popularity_epsilon"):
        privacy.item_popularity(silver(spark, rows), catalogue, epsilon=0, max_items=5, key=KEY)


def test_the_nightly_popularity_rows_rank_by_the_release_and_name_its_epsilon(spark, settings):
    rows = [(f"u{n}", "p1", "click", 1) for n in range(5)] + [("u9", "p2", "click", 2), ("new", "p3", "click", 3)]
    events = silver(spark, rows)
    items = spark.createDataFrame([(i, f"Item {i}", ["c"]) for i in ("p1", "p2", "p3", "p4")],
                                  "item_id string, title string, categories array<string>")
    prof = profiles.build_profiles(events, items, None, settings.profiles, settings.clean.event_weights, KEY, None)
    # a release that (by its noise) puts p4, which nobody chose, first and p1 last
    counts = spark.createDataFrame([("p1", 1), ("p2", 3), ("p3", 2), ("p4", 9)], "item_id string, users long")
    release = privacy.Release(counts, 1.0, 50, 50.0, 4)
    recs = fallback.nightly(events, items, prof, None, None, None, settings.recommend, "2024-03-10",
                            users=spark.createDataFrame([("new",)], "user_id string"), popularity=release).collect()
    ranked = [r["item_id"] for r in sorted(recs, key=lambda r: r["rank"])]
    assert ranked == ["p4", "p2", "p1"]  # by the released counts, never the user's own p3
    assert {r["model_version"] for r in recs} == {"popularity:2024-03-10:dp-eps=1"}
