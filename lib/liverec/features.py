"""Every feature the ranker reads, defined once, in Spark: the training examples, the nightly job, the
evaluation and the online bundle all compute them through this module.

``history_features`` turns the events of a history (and the item catalogue, text embeddings and social
edges, which carry no event time) into user and item aggregates, ALS factors and an EASE model fitted on
that history alone, content vectors and the recent-item sequence; ``features_from`` does the same from
what was already fitted on it (the gold tables of a ds). ``assemble`` joins them onto the candidate rows of
``liverec.candidates`` and writes the dense vector in ``DENSE_FEATURES`` order.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from liverec import als, ease, profiles, vectors
from liverec.config import Settings

# the dense feature vector, in this order (the model standardises each with statistics from training)
DENSE_FEATURES = (
    "als_z",  # the item's ALS score as a z-score over the user's unseen items (the user's last listed ALS
    #           score for an item without a factor; 0 for a user without one)
    "log_als_rank",  # log1p of the item's rank in the user's ALS list (recommend.als_candidates + 1 beyond it)
    "ease_z",  # the item's EASE score as a z-score over the user's unseen items (the user's last listed EASE
    #            score beyond the list; 0 for a user without an EASE list)
    "log_ease_rank",  # log1p of the rank in the user's EASE list (recommend.ease_candidates + 1 beyond it)
    "content_cosine",  # cosine of the user's content vector and the item's text embedding (0 when missing)
    "neighbor_similarity",  # best cosine of the item to one of the user's recent items, among their content
    #                         neighbours (gold.item_neighbors, recommend.neighbors_per_item each); 0 otherwise
    "log_item_users",  # log1p distinct users of the item in the history
    "log_item_recent_users",  # log1p distinct users in the last ranker.trend_days of the history
    "log_item_age_days",  # log1p days from the item's first event to the history's newest (0 for unseen items)
    "item_unseen",  # 1 when the item has no event in the history
    "log_user_events",  # log1p events of the user
    "log_user_items",  # log1p distinct items of the user
    "log_days_since_last",  # log1p days from the user's last event to the history's newest
    "category_affinity",  # sum of the user's affinity over the item's categories
    "log_friend_count",  # log1p friends
    "log_friends_on_item",  # log1p friends who interacted with the item
)
# per-user statistics of a source's scores that the candidate rows carry (liverec.candidates fills them)
SCORE_STATS = ("als_mean", "als_std", "als_floor", "ease_mean", "ease_std", "ease_floor")


@dataclass
class Features:
    """Everything ``assemble`` and ``liverec.candidates`` need, computed from one history."""

    users: DataFrame  # user_id, log_user_events, log_user_items, log_days_since_last, log_friend_count,
    #                   category_affinity (map), recent_items (array<string>), content_vector, user_factor
    items: DataFrame  # item_id, categories, log_item_users, log_item_recent_users, log_item_age_days, item_unseen,
    #                   item_factor, embedding
    friends_on_item: DataFrame  # user_id, item_id, n_friends, a_friend (one of them, for reasons)
    item_factors: DataFrame  # item_id, item_idx, features (ALS on the history)
    user_factors: DataFrame  # user_id, user_idx, features
    seen: DataFrame  # user_id, item_id of the history
    ease: ease.EaseModel | None  # EASE on the history (None when ease.enabled is false or it could not be fitted)
    profiles: DataFrame  # gold.user_profiles rows of the history (top_categories feeds a candidate source)


def fit_ease(pairs: DataFrame, settings: Settings) -> ease.EaseModel | None:
    """EASE on the (user_id, item_id) pairs when ``ease.enabled``; None when it is off."""
    conf = settings.ease
    if not conf.enabled:
        return None
    model, rows = ease.fit(pairs, conf.reg_lambda, conf.max_items)
    rows.unpersist()
    return model


def history_features(spark: SparkSession, history: DataFrame, items: DataFrame, item_embeddings: DataFrame | None,
                     social: DataFrame | None, settings: Settings, key: bytes, checkpoint_dir: str) -> Features:
    """Profiles, an ALS fit and an EASE fit of ``history`` alone, then ``features_from`` them (the gold
    tables are fitted on everything, held-out pairs included)."""
    prof = profiles.build_profiles(history, items, social, settings.profiles, settings.clean.event_weights, key,
                                   item_embeddings)
    pairs = als.strengths(history, settings.als, settings.clean.event_weights).cache()
    uidx, iidx = als.index_ids(pairs)
    ratings = pairs.join(uidx, "user_id").join(iidx, "item_id").select("user_idx", "item_idx", "strength")
    model = als.fit(spark, ratings, settings.als, checkpoint_dir)
    uf, itf = (df.localCheckpoint() for df in als.factor_frames(model, uidx, iidx))
    ease_model = fit_ease(pairs.select("user_id", "item_id"), settings)
    pairs.unpersist()
    return features_from(spark, history, prof, uf, itf, ease_model, items, item_embeddings, social, settings, key)


def features_from(spark: SparkSession, history: DataFrame, prof: DataFrame, uf: DataFrame, itf: DataFrame,
                  ease_model: ease.EaseModel | None, items: DataFrame, item_embeddings: DataFrame | None,
                  social: DataFrame | None, settings: Settings, key: bytes) -> Features:
    """Features from a history and what was computed on it: ``prof`` (profiles of ``history``), ``uf`` /
    ``itf`` (ALS factors fitted on it: user_id/item_id, user_idx/item_idx, features), ``ease_model`` (EASE on
    it, or None). Training examples pass a history without the held-out pairs; the nightly job passes
    everything up to ds and the gold tables of that ds, so the ranker sees features computed the same way."""
    ref = history.agg(F.max("ts").alias("ref"))
    prof = prof.drop("ref").crossJoin(F.broadcast(ref))
    days = (F.col("ref").cast("double") - F.col("last_seen").cast("double")) / 86400.0
    users = (prof.select("user_id", F.log1p("n_events").alias("log_user_events"),
                         F.log1p("n_items").alias("log_user_items"),
                         F.log1p(F.greatest(days, F.lit(0.0))).alias("log_days_since_last"),
                         F.log1p("friend_count").alias("log_friend_count"), "category_affinity", "recent_items",
                         "content_vector")
             .join(uf.select("user_id", F.col("features").alias("user_factor")), "user_id", "left"))

    stats = history.crossJoin(F.broadcast(ref)).groupBy("item_id").agg(
        F.countDistinct("user_id").alias("n_users"),
        F.countDistinct(F.when(F.col("ts") > F.col("ref") - F.expr(f"INTERVAL {int(settings.ranker.trend_days)} DAYS"),
                               F.col("user_id"))).alias("n_recent"),
        F.min("ts").alias("first_ts"), F.first("ref").alias("ref"))
    catalogue = items.select("item_id", "categories").unionByName(
        history.select("item_id").distinct().withColumn("categories", F.lit(None).cast("array<string>"))) \
        .groupBy("item_id").agg(F.first("categories", ignorenulls=True).alias("categories"))
    age = (F.col("ref").cast("double") - F.col("first_ts").cast("double")) / 86400.0
    item_rows = (catalogue.join(stats, "item_id", "left")
                 .select("item_id", "categories",
                         F.log1p(F.coalesce("n_users", F.lit(0))).alias("log_item_users"),
                         F.log1p(F.coalesce("n_recent", F.lit(0))).alias("log_item_recent_users"),
                         F.coalesce(F.log1p(F.greatest(age, F.lit(0.0))), F.lit(0.0)).alias("log_item_age_days"),
                         F.when(F.col("n_users").isNull(), 1.0).otherwise(0.0).alias("item_unseen"))
                 .join(itf.select("item_id", F.col("features").alias("item_factor")), "item_id", "left"))
    if item_embeddings is not None:
        item_rows = item_rows.join(item_embeddings.select("item_id", "embedding"), "item_id", "left")
    else:
        item_rows = item_rows.withColumn("embedding", F.lit(None).cast("array<float>"))

    if social is not None:
        friends = profiles.friend_pairs(social, key)
        touched = history.select("user_id", "item_id").distinct()
        friends_on_item = (friends.join(touched.withColumnRenamed("user_id", "friend_id"), "friend_id")
                           .groupBy("user_id", "item_id").agg(F.count("*").alias("n_friends"),
                                                              F.min("friend_id").alias("a_friend")))
    else:
        friends_on_item = spark.createDataFrame([], "user_id string, item_id string, n_friends long, a_friend string")
    # materialised with their lineage cut: the plans behind them (profiles, an ALS fit, several joins) are
    # large, and every later join would otherwise carry (and print, in Spark's UI events) all of them
    return Features(users.localCheckpoint(), item_rows.localCheckpoint(), friends_on_item.localCheckpoint(),
                    itf, uf, history.select("user_id", "item_id").distinct().localCheckpoint(), ease_model,
                    prof.drop("ref"))


def _z(score: F.Column, mean: str, std: str) -> F.Column:
    return F.coalesce((score - F.col(mean)) / F.greatest(F.col(std), F.lit(1e-9)), F.lit(0.0))


def assemble(cands: DataFrame, f: Features, recent_items: int, als_candidates: int, ease_candidates: int
             ) -> DataFrame:
    """Candidate rows (``liverec.candidates.generate``: user_id, item_id, als_rank, ease_rank, ease_score,
    neighbor_similarity and SCORE_STATS, ...) -> the other columns + dense array<float> in DENSE_FEATURES
    order and recent_items (newest first, at most ``recent_items``). Rows whose user has no history get none."""
    cat_aff = F.aggregate(
        F.transform(F.coalesce("categories", F.array().cast("array<string>")),
                    lambda c: F.coalesce(F.col("category_affinity")[c], F.lit(0.0))), F.lit(0.0),
        lambda acc, x: acc + x)
    dot = F.when(F.col("user_factor").isNotNull() & F.col("item_factor").isNotNull(),
                 vectors.dot("user_factor", "item_factor")).otherwise(F.col("als_floor"))
    cos = F.when(F.col("content_vector").isNotNull() & F.col("embedding").isNotNull(),
                 vectors.cosine("content_vector", "embedding")).otherwise(F.lit(0.0))
    rows = (cands.join(f.users, "user_id").join(f.items, "item_id", "left")
            .join(f.friends_on_item.select("user_id", "item_id", "n_friends"), ["user_id", "item_id"], "left")
            .withColumn("als_z", _z(dot, "als_mean", "als_std"))
            .withColumn("log_als_rank", F.log1p(F.coalesce("als_rank", F.lit(als_candidates + 1)).cast("double")))
            .withColumn("ease_z", _z(F.coalesce("ease_score", "ease_floor"), "ease_mean", "ease_std"))
            .withColumn("log_ease_rank", F.log1p(F.coalesce("ease_rank", F.lit(ease_candidates + 1)).cast("double")))
            .withColumn("content_cosine", cos)
            .withColumn("neighbor_similarity", F.coalesce("neighbor_similarity", F.lit(0.0)))
            .withColumn("category_affinity", cat_aff)
            .withColumn("log_friends_on_item", F.log1p(F.coalesce("n_friends", F.lit(0)))))
    for c in ("log_item_users", "log_item_recent_users", "log_item_age_days"):
        rows = rows.withColumn(c, F.coalesce(F.col(c), F.lit(0.0)))
    rows = rows.withColumn("item_unseen", F.coalesce(F.col("item_unseen"), F.lit(1.0)))
    dense = F.array(*[F.col(c).cast("float") for c in DENSE_FEATURES])
    used = {"user_id", "item_id", "ease_score", "neighbor_similarity", *SCORE_STATS}
    keep = [c for c in cands.columns if c not in used]
    return rows.select("user_id", "item_id", *keep, dense.alias("dense"),
                       F.slice("recent_items", 1, recent_items).alias("recent_items"))
