"""Implicit-feedback ALS (``pyspark.ml``) and top-N scoring over its factors.

Strength of a (user, item) pair = sum over its events of weight(event_type) x time decay (x the
rating for ratings, when ``rating_as_strength``); ALS turns it into confidence 1 + alpha x strength.
"""

from __future__ import annotations

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from liverec.catalog import decay, event_weight
from liverec.config import AlsSettings


def strengths(events: DataFrame, conf: AlsSettings, weights: dict[str, float]) -> DataFrame:
    """(user_id, item_id, strength) with strength > 0."""
    reference = events.agg(F.max("ts").alias("ref"))
    w = event_weight(weights)
    if conf.rating_as_strength:
        w = F.when((F.col("event_type") == "rating") & F.col("value").isNotNull(), w * F.col("value")).otherwise(w)
    ev = events.crossJoin(F.broadcast(reference)).withColumn(
        "s", w * decay(F.col("ts"), F.col("ref"), conf.half_life_days))
    return ev.groupBy("user_id", "item_id").agg(F.sum("s").alias("strength")).where(F.col("strength") > 0)


def index_ids(pairs: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Dense integer ids ALS needs: (user_id, user_idx) and (item_id, item_idx), ordered by the string id."""
    users = pairs.select("user_id").distinct().withColumn(
        "user_idx", (F.row_number().over(Window.orderBy("user_id")) - 1).cast("int"))
    items = pairs.select("item_id").distinct().withColumn(
        "item_idx", (F.row_number().over(Window.orderBy("item_id")) - 1).cast("int"))
    return users, items


def fit(spark: SparkSession, ratings: DataFrame, conf: AlsSettings, checkpoint_dir: str) -> ALSModel:
    """Fit on (user_idx, item_idx, strength). Checkpointing cuts the lineage every few iterations."""
    spark.sparkContext.setCheckpointDir(checkpoint_dir)
    als = ALS(rank=conf.rank, maxIter=conf.max_iter, regParam=conf.reg_param, alpha=conf.alpha,
              implicitPrefs=True, userCol="user_idx", itemCol="item_idx", ratingCol="strength",
              coldStartStrategy="drop", checkpointInterval=conf.checkpoint_interval, seed=conf.seed,
              nonnegative=False)
    if conf.num_blocks > 0:
        als = als.setNumUserBlocks(conf.num_blocks).setNumItemBlocks(conf.num_blocks)
    return als.fit(ratings)


def factor_frames(model: ALSModel, users: DataFrame, items: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(user_id, user_idx, features) and (item_id, item_idx, features) from a fitted model."""
    uf = model.userFactors.select(F.col("id").alias("user_idx"), "features").join(users, "user_idx")
    itf = model.itemFactors.select(F.col("id").alias("item_idx"), "features").join(items, "item_idx")
    return uf, itf
