"""Hold-out protocols, defined once: the evaluation's splits and the ranker's label splits use them.

- ``random``: per-user stratified random split of the (user, item) pairs: each user keeps
  round(n x (1 - fraction)) of their items (the protocol of the published MovieLens tables); deterministic
  for a seed (a hash of the seed, the user and the item orders each user's pairs).
- ``temporal``: a global cut-off at the (1 - fraction) quantile of event time; what comes after it is
  held out.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

PROTOCOLS = ("random", "temporal")


def random_split(pairs: DataFrame, test_fraction: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """Per-user stratified split of (user_id, item_id, ...) pairs; deterministic for a seed."""
    order = Window.partitionBy("user_id").orderBy(F.xxhash64(F.lit(seed), "user_id", "item_id"), "item_id")
    ranked = pairs.withColumn("_r", F.row_number().over(order)).withColumn(
        "_n", F.count("*").over(Window.partitionBy("user_id")))
    keep = F.col("_r") <= F.round(F.col("_n") * (1.0 - test_fraction))
    return ranked.where(keep).drop("_r", "_n"), ranked.where(~keep).drop("_r", "_n")


def timestamp(seconds: float) -> F.Column:
    """A timestamp literal from epoch seconds (no local-time conversion on the way to Spark)."""
    return F.timestamp_micros(F.lit(int(round(seconds * 1e6))))


def temporal_cutoff(events: DataFrame, test_fraction: float) -> float | None:
    """The (1 - test_fraction) quantile of event time, epoch seconds (None without events)."""
    seconds = events.select(F.col("ts").cast("double").alias("t"))
    got = seconds.approxQuantile("t", [1.0 - test_fraction], 0.001)
    return float(got[0]) if got else None


def temporal_split(events: DataFrame, test_fraction: float) -> tuple[DataFrame, DataFrame, float | None]:
    """Events before / from the cut-off; returns (train events, test events, cut-off in epoch seconds)."""
    cutoff = temporal_cutoff(events, test_fraction)
    if cutoff is None:
        return events, events.limit(0), None
    cut = timestamp(cutoff)
    return events.where(F.col("ts") < cut), events.where(F.col("ts") >= cut), cutoff


def holdout(events: DataFrame, protocol: str, fraction: float, seed: int
            ) -> tuple[DataFrame, DataFrame, float | None]:
    """(history events, held-out (user_id, item_id) pairs new to their user, cut-off): the events of the
    protocol's training side and the pairs of its held-out side. For ``random`` the held-out pairs' events are
    all left out of the history; for ``temporal`` only pairs of users with a history that they had not had
    before the cut-off are held out. The cut-off (epoch seconds) is the newest history event (random) or the
    cut (temporal)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown hold-out protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if protocol == "random":
        pairs = events.select("user_id", "item_id").distinct()
        kept, held = random_split(pairs, fraction, seed)
        history = events.join(kept, ["user_id", "item_id"], "left_semi")
        newest = history.agg(F.max(F.col("ts").cast("double"))).collect()[0][0]
        return history, held, newest
    history, after, cutoff = temporal_split(events, fraction)
    held = (after.select("user_id", "item_id").distinct()
            .join(history.select("user_id").distinct(), "user_id", "left_semi")
            .join(history.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti"))
    return history, held, cutoff
