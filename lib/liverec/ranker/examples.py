"""Ranker features and training examples, in Spark.

``history_features`` turns the events *before* a cut-off (and the item catalogue, text embeddings and
social edges, which carry no event time) into everything the ranker reads: user and item aggregates,
ALS factors fitted on that history alone, content vectors and the recent-item sequence.
``assemble`` joins them onto (user, item) pairs; ``build_examples`` labels pairs with the events
after the cut-off. Because every feature is computed from ``history`` only, a label can never leak
into a feature (tests/test_ranker.py checks it by changing the label window and comparing features).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from liverec import als, profiles, recommend, vectors
from liverec.config import Settings

# the dense feature vector, in this order (the model normalises each with statistics from training)
DENSE_FEATURES = (
    "als_score",  # dot product of the history ALS factors (0 when the user or item has none)
    "log_als_rank",  # log1p of the item's rank in the user's ALS candidates (candidates + 1 when not among them)
    "content_cosine",  # cosine of the user's content vector and the item's text embedding (0 when missing)
    "log_item_users",  # log1p distinct users of the item in the history
    "log_item_recent_users",  # log1p distinct users in the last ranker.trend_days of the history
    "log_item_age_days",  # log1p days from the item's first event to the cut-off (0 for unseen items)
    "item_unseen",  # 1 when the item has no event in the history
    "log_user_events",  # log1p events of the user
    "log_user_items",  # log1p distinct items of the user
    "log_days_since_last",  # log1p days from the user's last event to the cut-off
    "category_affinity",  # sum of the user's affinity over the item's categories
    "log_friend_count",  # log1p friends
    "log_friends_on_item",  # log1p friends who interacted with the item
)


@dataclass
class Features:
    """Everything ``assemble`` needs, computed from one history."""

    users: DataFrame  # user_id, log_user_events, log_user_items, log_days_since_last, log_friend_count,
    #                   category_affinity (map), recent_items (array<string>), content_vector, user_factor
    items: DataFrame  # item_id, categories, log_item_users, log_item_recent_users, log_item_age_days, item_unseen,
    #                   item_factor, embedding
    friends_on_item: DataFrame  # user_id, item_id, n_friends, a_friend (one of them, for reasons)
    item_factors: DataFrame  # item_id, item_idx, features (ALS on the history)
    user_factors: DataFrame  # user_id, user_idx, features
    seen: DataFrame  # user_id, item_id of the history


def window_cut(events: DataFrame, label_days: int) -> tuple[DataFrame, DataFrame, dt.datetime | None]:
    """(history, label, cutoff): label = the last ``label_days`` days before the newest event."""
    newest = events.agg(F.max("ts")).collect()[0][0]
    if newest is None:
        return events, events.limit(0), None
    cut_ts = newest - dt.timedelta(days=label_days)
    return events.where(F.col("ts") <= F.lit(cut_ts)), events.where(F.col("ts") > F.lit(cut_ts)), cut_ts


def history_features(spark: SparkSession, history: DataFrame, items: DataFrame, item_embeddings: DataFrame | None,
                     social: DataFrame | None, settings: Settings, key: bytes, checkpoint_dir: str) -> Features:
    """Profiles and an ALS fit of ``history`` alone (the gold tables also hold the label window), then
    ``features_from`` them."""
    prof = profiles.build_profiles(history, items, social, settings.profiles, settings.clean.event_weights, key,
                                   item_embeddings)
    # ALS on the history
    pairs = als.strengths(history, settings.als, settings.clean.event_weights).cache()
    uidx, iidx = als.index_ids(pairs)
    ratings = pairs.join(uidx, "user_id").join(iidx, "item_id").select("user_idx", "item_idx", "strength")
    model = als.fit(spark, ratings, settings.als, checkpoint_dir)
    uf, itf = (df.localCheckpoint() for df in als.factor_frames(model, uidx, iidx))
    return features_from(spark, history, prof, uf, itf, items, item_embeddings, social, settings, key)


def features_from(spark: SparkSession, history: DataFrame, prof: DataFrame, uf: DataFrame, itf: DataFrame,
                  items: DataFrame, item_embeddings: DataFrame | None, social: DataFrame | None, settings: Settings,
                  key: bytes) -> Features:
    """Features from a history and what was computed on it: ``prof`` (profiles of ``history``), ``uf`` /
    ``itf`` (ALS factors fitted on it: user_id/item_id, user_idx/item_idx, features). Training examples
    pass a history cut before the label window; the nightly job passes everything up to ds and the
    gold tables of that ds, so the ranker sees features computed the same way in both."""
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
                    itf, uf, recommend.seen_items(history).localCheckpoint())


def assemble(pairs: DataFrame, f: Features, recent_items: int, candidates: int) -> DataFrame:
    """pairs (user_id, item_id[, als_rank], ...) -> + dense array<float> in DENSE_FEATURES order and
    recent_items (newest first, at most ``recent_items``). A pair without an ``als_rank`` (not among the
    user's ``candidates`` ALS candidates) ranks ``candidates + 1``. Pairs whose user has no history get no row."""
    cat_aff = F.aggregate(
        F.transform(F.coalesce("categories", F.array().cast("array<string>")),
                    lambda c: F.coalesce(F.col("category_affinity")[c], F.lit(0.0))), F.lit(0.0),
        lambda acc, x: acc + x)
    dot = F.when(F.col("user_factor").isNotNull() & F.col("item_factor").isNotNull(),
                 F.aggregate(F.zip_with("user_factor", "item_factor", lambda a, b: a * b), F.lit(0.0),
                             lambda acc, x: acc + x)).otherwise(F.lit(0.0))
    cos = F.when(F.col("content_vector").isNotNull() & F.col("embedding").isNotNull(),
                 vectors.cosine("content_vector", "embedding")).otherwise(F.lit(0.0))
    rank = F.col("als_rank") if "als_rank" in pairs.columns else F.lit(None)
    rows = (pairs.join(f.users, "user_id").join(f.items, "item_id", "left")
            .join(f.friends_on_item, ["user_id", "item_id"], "left")
            .withColumn("als_score", dot).withColumn("content_cosine", cos)
            .withColumn("log_als_rank", F.log1p(F.coalesce(rank, F.lit(candidates + 1)).cast("double")))
            .withColumn("category_affinity", cat_aff)
            .withColumn("log_friends_on_item", F.log1p(F.coalesce("n_friends", F.lit(0)))))
    for c in ("log_item_users", "log_item_recent_users", "log_item_age_days"):
        rows = rows.withColumn(c, F.coalesce(F.col(c), F.lit(0.0)))
    rows = rows.withColumn("item_unseen", F.coalesce(F.col("item_unseen"), F.lit(1.0)))
    dense = F.array(*[F.col(c).cast("float") for c in DENSE_FEATURES])
    keep = [c for c in pairs.columns if c not in ("user_id", "item_id", "als_rank")]
    return rows.select("user_id", "item_id", *keep, dense.alias("dense"),
                       F.slice("recent_items", 1, recent_items).alias("recent_items"))


def candidate_pairs(f: Features, users: DataFrame, k: int) -> DataFrame:
    """(user_id, item_id, als_rank): each user's top ``k`` unseen items by the history ALS."""
    uf = f.user_factors.join(users.select("user_id").distinct(), "user_id")
    seen_idx = (f.seen.join(uf.select("user_id", "user_idx"), "user_id")
                .join(f.item_factors.select("item_id", "item_idx"), "item_id")
                .groupBy("user_idx").agg(F.collect_list("item_idx").alias("seen")))
    top = vectors.top_k(uf.select("user_idx", "features"), f.item_factors.select("item_idx", "features"),
                        seen_idx, k)
    rows = top.select("user_idx", F.posexplode("items").alias("pos", "item_idx"))
    return (rows.join(uf.select("user_id", "user_idx"), "user_idx")
            .join(f.item_factors.select("item_id", "item_idx"), "item_idx")
            .select("user_id", "item_id", (F.col("pos") + 1).alias("als_rank")))


def build_examples(f: Features, label: DataFrame, settings: Settings) -> DataFrame:
    """Labelled examples: (user_id, item_id, label, split, dense, recent_items).

    The ranker re-ranks ALS candidates, so it learns on them: per user, the items among its ALS top
    ``candidates`` (from the history) that it interacted with in the label window are the positives;
    up to ``hard_negatives`` of the other candidates, drawn uniformly over the candidate list, and
    ``random_negatives`` random catalogue items are the negatives. Positives outside the candidates are
    left out: drawing negatives from the top of ALS's list only while taking positives from anywhere
    would teach the model that a high ALS score means "no" (measured: re-ranked nDCG@10 fell to 0.12
    on ml-100k). Users without a positive among their candidates give no example. Items seen in the
    history never appear (the nightly job never recommends them either).
    """
    conf = settings.ranker
    labelled = (label.select("user_id", "item_id").distinct()
                .join(f.seen, ["user_id", "item_id"], "left_anti")
                .join(f.users.select("user_id"), "user_id"))  # users with a history only
    cands = candidate_pairs(f, labelled.select("user_id").distinct(), conf.candidates).cache()
    positives = cands.join(labelled, ["user_id", "item_id"]).select("user_id", "item_id", "als_rank")
    users = positives.select("user_id").distinct().cache()
    hard = (cands.join(users, "user_id").join(positives, ["user_id", "item_id"], "left_anti")
            .withColumn("_r", F.row_number().over(Window.partitionBy("user_id").orderBy(
                F.xxhash64("user_id", "item_id", F.lit(conf.seed)))))
            .where(F.col("_r") <= conf.hard_negatives).select("user_id", "item_id", "als_rank"))
    catalogue = f.items.select("item_id").withColumn("_h", F.xxhash64("item_id", F.lit(conf.seed)))
    n_items = catalogue.count()
    # random negatives: for each user, items at pseudo-random offsets of the catalogue (no driver loop)
    indexed = catalogue.withColumn("_i", F.row_number().over(Window.orderBy("_h")) - 1)
    draws = users.select("user_id", F.explode(F.sequence(F.lit(1), F.lit(max(conf.random_negatives, 0))))
                         .alias("d")) if conf.random_negatives > 0 else users.limit(0).withColumn("d", F.lit(0))
    draws = draws.withColumn("_i", F.pmod(F.xxhash64("user_id", "d", F.lit(conf.seed + 1)), F.lit(max(n_items, 1))))
    rand = (draws.join(indexed, "_i").select("user_id", "item_id")
            .join(f.seen, ["user_id", "item_id"], "left_anti").join(labelled, ["user_id", "item_id"], "left_anti")
            .join(cands.select("user_id", "item_id", "als_rank"), ["user_id", "item_id"], "left"))
    negatives = hard.unionByName(rand).dropDuplicates(["user_id", "item_id"])
    pairs = (positives.withColumn("label", F.lit(1.0)).unionByName(negatives.withColumn("label", F.lit(0.0))))
    valid = (F.pmod(F.xxhash64("user_id", F.lit(conf.seed + 2)), F.lit(10_000)) <
             F.lit(int(conf.validation_fraction * 10_000)))
    pairs = pairs.withColumn("split", F.when(valid, "valid").otherwise("train"))
    return assemble(pairs, f, conf.recent_items, conf.candidates)


def vocabulary(f: Features) -> DataFrame:
    """gold.ranker_items rows: (item_id, item_idx from 1, als_factor, text_embedding); 0 is padding/unknown."""
    return f.items.select("item_id", F.col("item_factor").alias("als_factor"),
                          F.col("embedding").alias("text_embedding")).withColumn(
        "item_idx", F.row_number().over(Window.orderBy("item_id")).cast("int"))


def with_indices(examples: DataFrame, vocab: DataFrame) -> DataFrame:
    """+ item_idx and recent_idx (array<int>, 0 for unknown ids) from the vocabulary."""
    ids = vocab.select("item_id", "item_idx")
    seq = (examples.select("user_id", "item_id", F.posexplode_outer("recent_items").alias("p", "rid"))
           .join(ids.select(F.col("item_id").alias("rid"), F.col("item_idx").alias("ridx")), "rid", "left")
           .groupBy("user_id", "item_id")
           .agg(F.sort_array(F.collect_list(F.struct("p", F.coalesce("ridx", F.lit(0)).alias("i")))).alias("s")))
    seq = seq.select("user_id", "item_id", F.transform(F.filter("s", lambda x: x["p"].isNotNull()),
                                                       lambda x: x["i"]).alias("recent_idx"))
    return (examples.join(ids, "item_id", "left").withColumn("item_idx", F.coalesce("item_idx", F.lit(0)))
            .join(seq, ["user_id", "item_id"], "left"))


def padded(col: str, length: int) -> F.Column:
    """An array<int> column cut or right-padded with 0 to exactly ``length``."""
    c = F.coalesce(F.col(col), F.array().cast("array<int>"))
    pad = F.array_repeat(F.lit(0), F.greatest(F.lit(length) - F.size(c), F.lit(0)))
    return F.slice(F.concat(c, pad), 1, length)


def training_rows(examples: DataFrame, length: int) -> DataFrame:
    """The numeric columns Petastorm feeds to torch: item_idx, recent_idx (fixed length), dense, label."""
    return examples.select(F.col("item_idx").cast("int"), padded("recent_idx", length).alias("recent_idx"),
                           F.col("dense").cast("array<float>"), F.col("label").cast("float"),
                           F.xxhash64("user_id").alias("group"))

