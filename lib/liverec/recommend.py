"""Nightly top-N per active user: ALS where the user has factors, popularity in the user's favourite
categories (or overall) where not; seen items never come back; every row says why."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from liverec import als
from liverec.config import RecommendSettings


def active_users(events: DataFrame, active_days: int) -> DataFrame:
    """Users with an event in the last ``active_days`` before the newest event (user_id)."""
    newest = events.agg(F.max("ts").alias("ref"))
    recent = events.crossJoin(F.broadcast(newest)).where(
        F.col("ts") > F.col("ref") - F.expr(f"INTERVAL {int(active_days)} DAYS"))
    return recent.select("user_id").distinct()


def seen_items(events: DataFrame) -> DataFrame:
    """(user_id, item_id) pairs the user already has."""
    return events.select("user_id", "item_id").distinct()


def als_recommendations(users: DataFrame, user_factors: DataFrame, item_factors: DataFrame, seen: DataFrame,
                        n: int) -> DataFrame:
    """(user_id, rank, item_id, score) for users that have factors."""
    uf = user_factors.join(users, "user_id")
    seen_idx = (seen.join(uf.select("user_id", "user_idx"), "user_id")
                .join(item_factors.select("item_id", "item_idx"), "item_id")
                .groupBy("user_idx").agg(F.collect_list("item_idx").alias("seen")))
    top = als.top_n(uf.select("user_idx", "features"), item_factors.select("item_idx", "features"), seen_idx, n)
    rows = top.select("user_idx", F.posexplode(F.arrays_zip("items", "scores")).alias("pos", "x"))
    return (rows.join(uf.select("user_id", "user_idx"), "user_idx")
            .join(item_factors.select(F.col("item_idx").alias("x_item"), "item_id"),
                  F.col("x.items") == F.col("x_item"))
            .select("user_id", (F.col("pos") + 1).alias("rank"), "item_id", F.col("x.scores").alias("score")))


def reasons_from_history(recs: DataFrame, profiles: DataFrame, item_factors: DataFrame, items: DataFrame,
                         history: int) -> DataFrame:
    """For each ALS row, the user's recent item (of the last ``history``) most similar to it (cosine of item
    factors), named by title."""
    recent = profiles.select("user_id", F.posexplode(F.slice("recent_items", 1, history)).alias("rp", "hist_id"))
    vec = item_factors.select("item_id", "features")
    cos = F.aggregate(F.zip_with("a", "b", lambda x, y: x * y), F.lit(0.0), lambda acc, x: acc + x) / F.greatest(
        F.sqrt(F.aggregate(F.transform("a", lambda x: x * x), F.lit(0.0), lambda acc, x: acc + x))
        * F.sqrt(F.aggregate(F.transform("b", lambda x: x * x), F.lit(0.0), lambda acc, x: acc + x)), F.lit(1e-12))
    pairs = (recs.select("user_id", "item_id").join(recent, "user_id")
             .join(vec.withColumnRenamed("features", "a"), "item_id")
             .join(vec.select(F.col("item_id").alias("hist_id"), F.col("features").alias("b")), "hist_id")
             .withColumn("sim", cos))
    best = Window.partitionBy("user_id", "item_id").orderBy(F.col("sim").desc(), "rp")
    top = pairs.withColumn("_r", F.row_number().over(best)).where(F.col("_r") == 1)
    titled = top.join(items.select(F.col("item_id").alias("hist_id"), "title"), "hist_id", "left")
    because = F.concat(F.lit("Because you showed interest in "),
                       F.coalesce(F.concat(F.lit('"'), F.col("title"), F.lit('"')), F.concat(F.lit("item "), "hist_id")))
    return titled.select("user_id", "item_id", because.alias("reason"))


def popular_recommendations(users: DataFrame, events: DataFrame, items: DataFrame, profiles: DataFrame,
                            seen: DataFrame, conf: RecommendSettings) -> DataFrame:
    """(user_id, rank, item_id, score, reason, source) from popularity, in the user's top categories first."""
    pop = events.groupBy("item_id").agg(F.countDistinct("user_id").alias("users"))
    top_pop = pop.orderBy(F.col("users").desc(), "item_id").limit(conf.popular_pool)
    n_max = pop.agg(F.max("users")).collect()[0][0] or 1
    item_cats = items.select("item_id", F.explode("categories").alias("category"))
    # per category: its popular items; per user: top categories weighted by affinity
    cat_items = top_pop.join(item_cats, "item_id")
    prefs = (profiles.join(users, "user_id")
             .select("user_id", "category_affinity",
                     F.posexplode(F.slice("top_categories", 1, conf.fallback_categories)).alias("cp", "category")))
    by_cat = (prefs.join(cat_items, "category")
              .withColumn("score", F.col("category_affinity")[F.col("category")] * F.col("users") / n_max)
              .withColumn("prio", F.lit(0))
              .withColumn("source", F.lit("popular_category"))
              .withColumn("reason", F.concat(F.lit("Popular in "), F.col("category"),
                                             F.lit(", one of your favourite categories"))))
    overall = (users.crossJoin(F.broadcast(top_pop.orderBy(F.col("users").desc()).limit(conf.top_n * 10)))
               .withColumn("score", F.col("users") / n_max)
               .withColumn("prio", F.lit(1))  # after every match in the user's categories
               .withColumn("source", F.lit("popular"))
               .withColumn("reason", F.lit("Popular with everyone right now")))
    cols = ["user_id", "item_id", "score", "prio", "source", "reason"]
    cands = by_cat.select(*cols).unionByName(overall.select(*cols)).join(seen, ["user_id", "item_id"], "left_anti")
    best_per_item = Window.partitionBy("user_id", "item_id").orderBy("prio", F.col("score").desc())
    cands = cands.withColumn("_r", F.row_number().over(best_per_item)).where(F.col("_r") == 1)
    ranked = cands.withColumn("rank", F.row_number().over(
        Window.partitionBy("user_id").orderBy("prio", F.col("score").desc(), "item_id")))
    return ranked.where(F.col("rank") <= conf.top_n).select("user_id", "rank", "item_id", "score", "source", "reason")


def nightly(events: DataFrame, items: DataFrame, profiles: DataFrame, user_factors: DataFrame | None,
            item_factors: DataFrame | None, model_run_id: str | None, conf: RecommendSettings, ds: str) -> DataFrame:
    """gold.recommendations rows for one ds."""
    users = active_users(events, conf.active_days).cache()
    seen = seen_items(events).join(users, "user_id").cache()
    parts = []
    covered = users.limit(0)
    if user_factors is not None and item_factors is not None:
        recs = als_recommendations(users, user_factors, item_factors, seen, conf.top_n).cache()
        why = reasons_from_history(recs, profiles, item_factors, items, conf.reason_history_items)
        als_rows = (recs.join(why, ["user_id", "item_id"], "left")
                    .withColumn("reason", F.coalesce("reason", F.lit("People with tastes like yours chose it")))
                    .withColumn("source", F.lit("als"))
                    .withColumn("model_run_id", F.lit(model_run_id))
                    .withColumn("model_version", F.lit(f"als:{model_run_id}")))
        parts.append(als_rows)
        covered = recs.select("user_id").distinct()
    rest = users.join(covered, "user_id", "left_anti")
    pop_rows = (popular_recommendations(rest, events, items, profiles, seen, conf)
                .withColumn("model_run_id", F.lit(None).cast("string"))
                .withColumn("model_version", F.lit(f"popularity:{ds}")))
    parts.append(pop_rows)
    cols = ["user_id", "rank", "item_id", "score", "reason", "source", "model_run_id", "model_version"]
    out = parts[0].select(*cols)
    for p in parts[1:]:
        out = out.unionByName(p.select(*cols))
    return out.withColumn("ds", F.lit(ds))
