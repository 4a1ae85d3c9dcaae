"""Reasons: every published row says what led to it (a history item, a friend, a category), by source; the
ranked path (``with_reasons``) and the fallback chain (``labelled``) share the rules here."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from liverec import vectors


def quoted_title(id_col: str) -> Column:
    """The ``title`` column in double quotes, or "item <id>" when the item has no title."""
    return F.coalesce(F.concat(F.lit('"'), F.col("title"), F.lit('"')), F.concat(F.lit("item "), F.col(id_col)))



def reasons_from_history(recs: DataFrame, profiles: DataFrame, item_vectors: DataFrame, items: DataFrame,
                         history: int, prefix: str = "Because you showed interest in ") -> DataFrame:
    """For each row, the user's recent item (of the last ``history``) most similar to it (cosine of
    ``item_vectors``: item_id, features), named by title after ``prefix``."""
    recent = profiles.select("user_id", F.posexplode(F.slice("recent_items", 1, history)).alias("rp", "hist_id"))
    vec = item_vectors.select("item_id", "features")
    pairs = (recs.select("user_id", "item_id").join(recent, "user_id")
             .join(vec.withColumnRenamed("features", "a"), "item_id")
             .join(vec.select(F.col("item_id").alias("hist_id"), F.col("features").alias("b")), "hist_id")
             .withColumn("sim", vectors.cosine("a", "b")))
    best = Window.partitionBy("user_id", "item_id").orderBy(F.col("sim").desc(), "rp")
    top = pairs.withColumn("_r", F.row_number().over(best)).where(F.col("_r") == 1)
    titled = top.join(items.select(F.col("item_id").alias("hist_id"), "title"), "hist_id", "left")
    because = F.concat(F.lit(prefix), quoted_title("hist_id"))
    return titled.select("user_id", "item_id", because.alias("reason"))


def labelled(recs: DataFrame, profiles: DataFrame, vecs: DataFrame, items: DataFrame, history: int,
                  prefix: str, fallback: str, source: str, run_id: str | None, version: str) -> DataFrame:
    why = reasons_from_history(recs, profiles, vecs, items, history, prefix)
    return (recs.join(why, ["user_id", "item_id"], "left")
            .withColumn("reason", F.coalesce("reason", F.lit(fallback)))
            .withColumn("source", F.lit(source))
            .withColumn("model_run_id", F.lit(run_id).cast("string"))
            .withColumn("model_version", F.lit(version)))


def with_reasons(top: DataFrame, user_profiles: DataFrame, items: DataFrame, als_vectors: DataFrame,
                 history: int) -> DataFrame:
    """+ reason: content -> the history item it is similar to; friends -> a friend who chose it (``via``) and how many
    more (``n_friends`` of ``top``); ease -> the history item that adds most to its score; popular_category -> the
    category; als -> the recent item closest in ALS space (the fallback chain's rule)."""
    titles = items.select(F.col("item_id").alias("via"), "title")
    content = (top.where(F.col("source") == "content").join(titles, "via", "left")
               .withColumn("reason", F.concat(F.lit("Similar to "), quoted_title("via"),
                                              F.lit(", which you chose"))))
    ease_rows = (top.where(F.col("source") == "ease").join(titles, "via", "left")
                 .withColumn("reason", F.concat(F.lit("Because you chose "), quoted_title("via"))))
    friends = (top.where(F.col("source") == "friends")
               .withColumn("reason", F.concat(
                   F.lit("Your friend "), F.col("via"), F.lit(" chose it"),
                   F.when(F.col("n_friends") > 1, F.concat(F.lit(", and "), (F.col("n_friends") - 1).cast("string"),
                                                           F.lit(" more of your friends"))).otherwise(F.lit("")))))
    category = (top.where(F.col("source") == "popular_category")
                .withColumn("reason", F.concat(F.lit("Popular lately in "), F.col("via"),
                                               F.lit(", one of your favourite categories"))))
    als_rows = top.where(F.col("source") == "als")
    why = reasons_from_history(als_rows, user_profiles, als_vectors, items, history)
    als_rows = (als_rows.join(why, ["user_id", "item_id"], "left")
                .withColumn("reason", F.coalesce("reason", F.lit("People with tastes like yours chose it"))))
    cols = [*top.columns, "reason"]
    out = content.select(*cols)
    for part in (ease_rows, friends, category, als_rows):
        out = out.unionByName(part.select(*cols))
    return out
