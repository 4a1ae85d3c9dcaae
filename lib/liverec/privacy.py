"""Differentially private counts where liverec publishes them: item popularity (distinct users per item), what the
popularity source of the nightly table ranks by.

A release is epsilon-differentially private with respect to one person's whole history (user-level, not
event-level): each user contributes at most ``privacy.popularity_max_items`` distinct items (which ones is decided
by a keyed hash of the user and the item, not by the data of anyone else: ``bounded_pairs``, in Spark), so adding or
removing a person changes the vector of per-item counts by at most that many in L1. OpenDP's discrete Laplace
mechanism (``make_laplace`` over integer vectors with the L1 distance, scale ``max_items / epsilon``) adds integer
noise to the count of every item of the public catalogue (the item table, zeros included: an item's presence in the
events is not revealed), and OpenDP's own privacy map checks that the scale gives at most ``epsilon`` for that
sensitivity. Noisy counts below zero are published as zero (post-processing: still epsilon-DP). Items that appear in
events but not in the catalogue are left out of the release.

What it does not protect: the other outputs of the same night (the ranker, ALS and EASE are trained on the exact
data); the budget is per release, so N nightly releases over the same people compose to N x epsilon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MECHANISM = "discrete_laplace"
BOUND_SALT_TEXT = "liverec-dp-contribution-bound"  # its pseudonym under the id key orders each user's items


@dataclass(frozen=True)
class Release:
    """One DP release: ``counts`` (item_id, users: the noisy count), and what it cost and how it was made."""

    counts: Any  # Spark DataFrame (item_id string, users long)
    epsilon: float
    max_items: int  # per-user contribution bound (the L1 sensitivity of the count vector)
    scale: float  # the discrete Laplace scale, max_items / epsilon
    items: int  # catalogue items released

    @property
    def label(self) -> str:
        """What the published rows' model_version carries."""
        return f"dp-eps={self.epsilon:g}"

    def metadata(self) -> dict[str, Any]:
        return {"privacy.popularity_epsilon": self.epsilon, "privacy.popularity_max_items": self.max_items,
                "privacy.popularity_scale": self.scale, "privacy.popularity_mechanism": MECHANISM,
                "privacy.popularity_items": self.items}


def bounded_pairs(events: Any, max_items: int, key: bytes) -> Any:
    """(user_id, item_id): each user's distinct items, at most ``max_items`` of them, the ones with the smallest keyed
    hash of (user, item): a choice that does not depend on anyone else's data."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from liverec.cleaning import pseudonymise_value

    # a value derived from the key (never the key itself, which must not show in a query plan or the Spark UI)
    salt = pseudonymise_value(BOUND_SALT_TEXT, key)
    pairs = events.select("user_id", "item_id").distinct()
    order = F.sha2(F.concat_ws("\u0001", F.lit(salt), "user_id", "item_id"), 256)
    ranked = pairs.withColumn("_n", F.row_number().over(Window.partitionBy("user_id").orderBy(order)))
    return ranked.where(F.col("_n") <= max_items).drop("_n")


def laplace(counts: list[int], epsilon: float, max_items: int) -> tuple[list[int], float]:
    """OpenDP's discrete Laplace noise on a count vector whose L1 sensitivity is ``max_items``: (noisy counts, the
    scale). Raises when OpenDP's privacy map says the release would cost more than ``epsilon``."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    scale = max_items / epsilon
    space = dp.vector_domain(dp.atom_domain(T=int), size=len(counts)), dp.l1_distance(T=int)
    measurement = space >> dp.m.then_laplace(scale=scale)
    spent = measurement.map(d_in=max_items)
    if spent > epsilon * (1 + 1e-9):
        raise ValueError(f"the release would spend epsilon {spent}, more than {epsilon}")
    return [int(x) for x in measurement([int(c) for c in counts])], scale


def item_popularity(events: Any, catalogue: Any, epsilon: float, max_items: int, key: bytes) -> Release:
    """The distinct users per catalogue item, released with epsilon-DP (see the module doc). ``catalogue``: the
    public item table (item_id). The count vector, one number per catalogue item, is gathered on the driver (the
    catalogue's size) for OpenDP."""
    from pyspark.sql import functions as F

    from liverec.errors import InputError

    if not epsilon > 0 or max_items < 1:
        raise InputError(f"privacy.popularity_epsilon must be > 0 and privacy.popularity_max_items >= 1 (got "
                         f"{epsilon}, {max_items})")
    spark = events.sparkSession
    exact = bounded_pairs(events, max_items, key).groupBy("item_id").agg(F.count("*").alias("users"))
    rows = (catalogue.select("item_id").distinct().join(exact, "item_id", "left")
            .select("item_id", F.coalesce("users", F.lit(0)).alias("users")).orderBy("item_id").collect())
    noisy, scale = laplace([r["users"] for r in rows], epsilon, max_items)
    counts = spark.createDataFrame([(r["item_id"], max(n, 0)) for r, n in zip(rows, noisy, strict=True)],
                                   "item_id string, users long")
    return Release(counts, float(epsilon), int(max_items), scale, len(rows))
