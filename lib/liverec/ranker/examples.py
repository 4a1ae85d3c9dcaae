"""Ranker training examples, in Spark.

``label_split`` holds (user, item) pairs out of the events (``ranker.label_split``: a random share of each
user's items, or the newest share of the log by time); the remaining history gives every feature
(``liverec.features.history_features``) and the candidates (``liverec.candidates``, the same union the
nightly job scores); ``build_examples`` labels those candidates with the held-out pairs. Because every
feature is computed from the history only, a label can never leak into a feature (tests/test_ranker.py
checks it by changing the held-out events and comparing features). ``training_lists`` turns the training
users' rows into sampled-softmax lists for the torch feed.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from liverec import splits, vectors
from liverec.config import Settings
from liverec.features import Features

# the columns of a validation row the gate and the pyfunc check read (gold.ranker_examples, split = valid)
VALID_COLUMNS = ("user_id", "item_id", "label", "n_labels", "sampled", "als_rank", "ease_rank", "dense",
                 "recent_items")

def label_split(events: DataFrame, settings: Settings) -> tuple[DataFrame, DataFrame, float | None]:
    """(history events, held-out (user_id, item_id) label pairs, cut-off epoch seconds) by
    ``ranker.label_split`` and ``ranker.label_fraction`` (the protocols of ``liverec.splits``)."""
    conf = settings.ranker
    return splits.holdout(events, conf.label_split, conf.label_fraction, conf.seed)


def impression_negatives(feedback: DataFrame, clip: float) -> DataFrame:
    """(user_id, item_id, weight) of what users were shown and did not click (gold.feedback rows): the weight is
    the sum over those impressions of 1 / the logged propensity, clipped at ``clip``. The logged propensity is the
    prefix one (the whole list down to the item), at most the item's own chance to be shown there, so the weight is
    an upper bound of its inverse, which the clip keeps from dominating a list."""
    return (feedback.where(F.col("user_id").isNotNull() & ~F.col("clicked") & (F.col("propensity") > 0))
            .groupBy("user_id", "item_id").agg(F.sum(1.0 / F.col("propensity")).alias("w"))
            .select("user_id", "item_id", F.least(F.col("w"), F.lit(float(clip))).alias("weight")))


def build_examples(cands: DataFrame, labels: DataFrame, settings: Settings, shown: DataFrame | None = None
                   ) -> DataFrame:
    """Labelled candidate rows (the candidate columns + label, split, n_labels) of the users with a label.

    ``cands``: the candidate rows of the history's users (``liverec.candidates.candidate_rows``), ``labels``: the
    held-out (user_id, item_id) pairs. A candidate that is a held-out pair is a positive; users without a
    positive among their candidates give no example. ``ranker.validation_fraction`` of the users (by a hash)
    validate: all their candidates are kept, so the promotion gate can rank them as the nightly job would and
    compare the top N with the baselines' (``n_labels``, every held-out pair of the user, is the ideal DCG's
    count). ``sampled`` marks every positive and ``ranker.negatives_per_user`` of the other candidates of each
    user, drawn uniformly: a training user keeps only those (``training_lists`` turns them into sampled-softmax
    lists), and the per-epoch validation (early stopping) scores only those of the validation users.

    ``shown`` (``impression_negatives``: what the user was shown and did not click, with a weight): a negative
    candidate among them is kept (``sampled``) with that ``weight``; every other row weighs 1.
    """
    conf = settings.ranker
    held = labels.select("user_id", "item_id").distinct().withColumn("label", F.lit(1.0))
    n_labels = held.groupBy("user_id").agg(F.count("*").cast("int").alias("n_labels"))
    rows = (cands.join(held, ["user_id", "item_id"], "left").withColumn("label", F.coalesce("label", F.lit(0.0))))
    with_pos = rows.where(F.col("label") > 0).select("user_id").distinct()
    rows = rows.join(with_pos, "user_id", "left_semi").join(n_labels, "user_id")
    valid = (F.pmod(F.xxhash64("user_id", F.lit(conf.seed + 2)), F.lit(10_000)) <
             F.lit(int(conf.validation_fraction * 10_000)))
    rows = rows.withColumn("split", F.when(valid, "valid").otherwise("train"))
    draw = Window.partitionBy("user_id", "label").orderBy(F.xxhash64("user_id", "item_id", F.lit(conf.seed)))
    rows = rows.withColumn("sampled", (F.col("label") > 0) | (F.row_number().over(draw) <= conf.negatives_per_user))
    if shown is None:
        rows = rows.withColumn("weight", F.lit(1.0))
    else:
        was_shown = (F.col("label") == 0) & F.col("shown_weight").isNotNull()
        rows = (rows.join(shown.withColumnRenamed("weight", "shown_weight"), ["user_id", "item_id"], "left")
                .withColumn("sampled", F.col("sampled") | was_shown)
                .withColumn("weight", F.when(was_shown, F.col("shown_weight")).otherwise(F.lit(1.0)))
                .drop("shown_weight"))
    return rows.where((F.col("split") == "valid") | F.col("sampled"))


def vocabulary(f: Features) -> DataFrame:
    """gold.ranker_items rows: (item_id, item_idx from 1, als_factor, text_embedding); 0 is padding/unknown."""
    return vectors.dense_index(f.items.select("item_id", F.col("item_factor").alias("als_factor"),
                                              F.col("embedding").alias("text_embedding")), "item_id", "item_idx", 1)


def with_indices(examples: DataFrame, vocab: DataFrame) -> DataFrame:
    """+ item_idx and recent_idx (array<int>, 0 for unknown ids) from the vocabulary. A user's rows share one
    recent-item sequence, so it is translated once per user."""
    ids = vocab.select("item_id", "item_idx")
    per_user = examples.select("user_id", "recent_items").dropDuplicates(["user_id"])
    seq = (per_user.select("user_id", F.posexplode_outer("recent_items").alias("p", "rid"))
           .join(ids.select(F.col("item_id").alias("rid"), F.col("item_idx").alias("ridx")), "rid", "left")
           .groupBy("user_id")
           .agg(F.sort_array(F.collect_list(F.struct("p", F.coalesce("ridx", F.lit(0)).alias("i")))).alias("s")))
    seq = seq.select("user_id", F.transform(F.filter("s", lambda x: x["p"].isNotNull()),
                                            lambda x: x["i"]).alias("recent_idx"))
    return (examples.join(ids, "item_id", "left").withColumn("item_idx", F.coalesce("item_idx", F.lit(0)))
            .join(seq, "user_id", "left"))


def padded(col: str, length: int) -> F.Column:
    """An array<int> column cut or right-padded with 0 to exactly ``length``."""
    c = F.coalesce(F.col(col), F.array().cast("array<int>"))
    pad = F.array_repeat(F.lit(0), F.greatest(F.lit(length) - F.size(c), F.lit(0)))
    return F.slice(F.concat(c, pad), 1, length)


def training_lists(examples: DataFrame, length: int, negatives: int, seed: int) -> DataFrame:
    """Sampled-softmax rows for training: per positive, the positive first and ``negatives`` of the same user's
    negatives (drawn with a hash, with replacement when the user has fewer): item_idx array<int> (1 +
    negatives), recent_idx (fixed length), dense (the list's feature rows, flattened), log_weight array<float>
    (0 for the positive, the log of each negative's ``weight``: added to its logit, a negative of weight w counts as
    w copies of itself in the softmax's denominator), group."""
    weight = F.coalesce(F.col("weight"), F.lit(1.0)) if "weight" in examples.columns else F.lit(1.0)
    rows = examples.select("user_id", "item_id", F.col("item_idx").cast("int"), "label",
                           F.col("dense").cast("array<float>"), padded("recent_idx", length).alias("recent_idx"),
                           F.log(weight).cast("float").alias("log_weight"))
    negs = (rows.where(F.col("label") == 0).groupBy("user_id")
            .agg(F.collect_list(F.struct("item_idx", "dense", "log_weight")).alias("negs")))
    pos = rows.where(F.col("label") > 0).join(negs, "user_id")
    picks = F.transform(F.sequence(F.lit(1), F.lit(negatives)), lambda j: F.element_at(
        "negs", (F.pmod(F.xxhash64("user_id", "item_id", j, F.lit(seed)), F.size("negs")) + 1).cast("int")))
    pos = pos.withColumn("picks", picks)
    return pos.select(
        F.concat(F.array("item_idx"), F.transform("picks", lambda x: x["item_idx"])).alias("item_idx"),
        "recent_idx",
        F.flatten(F.concat(F.array("dense"), F.transform("picks", lambda x: x["dense"]))).alias("dense"),
        F.concat(F.array(F.lit(0.0).cast("float")), F.transform("picks", lambda x: x["log_weight"])).alias("log_weight"),
        F.xxhash64("user_id").alias("group"))


def validation_rows(examples: DataFrame, length: int) -> DataFrame:
    """The numeric columns the per-epoch validation reads: item_idx, recent_idx (fixed length), dense, label,
    group (one row per candidate)."""
    return examples.select(F.col("item_idx").cast("int"), padded("recent_idx", length).alias("recent_idx"),
                           F.col("dense").cast("array<float>"), F.col("label").cast("float"),
                           F.xxhash64("user_id").alias("group"))
