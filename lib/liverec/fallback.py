"""The baseline chain of the nightly job, used when no champion ranker beats the baselines (and for the users a
ranker cannot rank): the chosen baseline (EASE or ALS) where it has a list for the user (ALS lists may give
``content_slots`` of the last places to cold items close to the user's content vector), ALS for users EASE
cannot score, content similarity for users neither knows, popularity in the user's favourite categories (or
overall) for the rest; seen items never come back; every row says why."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from liverec import candidates, embeddings, reasons, vectors
from liverec.config import RecommendSettings
from liverec.ease import EaseModel


def active_users(events: DataFrame, active_days: int) -> DataFrame:
    """Users with an event in the last ``active_days`` before the newest event (user_id)."""
    newest = events.agg(F.max("ts").alias("ref"))
    recent = events.crossJoin(F.broadcast(newest)).where(
        F.col("ts") > F.col("ref") - F.expr(f"INTERVAL {int(active_days)} DAYS"))
    return recent.select("user_id").distinct()


def seen_items(events: DataFrame) -> DataFrame:
    """(user_id, item_id) pairs the user already has."""
    return events.select("user_id", "item_id").distinct()


def _scored(user_vecs: DataFrame, item_vecs: DataFrame, seen: DataFrame, n: int) -> DataFrame:
    """(user_id, rank, item_id, score): top ``n`` unseen items by dot product (``vectors.top_items``)."""
    return vectors.top_items(user_vecs, item_vecs, seen, n).select("user_id", "rank", "item_id", "score")


def als_recommendations(users: DataFrame, user_factors: DataFrame, item_factors: DataFrame, seen: DataFrame,
                        n: int) -> DataFrame:
    """(user_id, rank, item_id, score) for users that have factors."""
    return _scored(user_factors.join(users, "user_id"), item_factors, seen, n)


def content_recommendations(users: DataFrame, profiles: DataFrame, item_embeddings: DataFrame, seen: DataFrame,
                            n: int, min_similarity: float = -1.0) -> DataFrame:
    """(user_id, rank, item_id, score): the ``n`` unseen items whose text embedding is closest (cosine) to the
    user's content vector, only those with a cosine of at least ``min_similarity``."""
    user_vecs = (profiles.join(users, "user_id").where(F.col("content_vector").isNotNull())
                 .select("user_id", F.col("content_vector").alias("features")))
    user_vecs = vectors.dense_index(user_vecs, "user_id", "user_idx")
    recs = _scored(user_vecs, embeddings.index_items(item_embeddings), seen, n)
    recs = recs.where(F.col("score") >= min_similarity)
    return recs.withColumn("rank", F.row_number().over(Window.partitionBy("user_id").orderBy("rank")))


def cold_items(item_embeddings: DataFrame, events: DataFrame, max_users: int) -> DataFrame:
    """Rows of ``item_embeddings`` whose item at most ``max_users`` distinct users interacted with (0 included)."""
    users = events.groupBy("item_id").agg(F.countDistinct("user_id").alias("n_users"))
    return (item_embeddings.join(users, "item_id", "left")
            .where(F.coalesce(F.col("n_users"), F.lit(0)) <= max_users).drop("n_users"))


def item_users(events: DataFrame) -> DataFrame:
    """(item_id, users): the distinct users of each item, what popularity ranks by."""
    return events.groupBy("item_id").agg(F.countDistinct("user_id").alias("users"))


def popular_recommendations(users: DataFrame, events: DataFrame, items: DataFrame, profiles: DataFrame,
                            seen: DataFrame, conf: RecommendSettings, pop: DataFrame | None = None) -> DataFrame:
    """(user_id, rank, item_id, score, reason, source) from popularity, in the user's top categories first.
    ``pop`` (item_id, users): the counts to rank by (a differentially private release, ``liverec.privacy``); the
    exact distinct users per item (``item_users``) when None."""
    if pop is None:
        pop = item_users(events)
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


def ease_recommendations(users: DataFrame, seen: DataFrame, items: DataFrame, model: EaseModel, n: int,
                         run_id: str | None, version: str, exclude: list[str] | None = None) -> DataFrame:
    """gold.recommendations columns (without ds) from EASE's top ``n`` of ``users`` (never one of ``exclude``): the
    reason names the history item that adds most to the item's score."""
    spark = users.sparkSession
    lists = candidates.ease_lists(spark, model, seen, users, n, exclude)
    titled = lists.join(items.select(F.col("item_id").alias("via"), "title"), "via", "left")
    return titled.select("user_id", "rank", "item_id", "score",
                         F.concat(F.lit("Because you chose "), reasons.quoted_title("via")).alias("reason"),
                         F.lit("ease").alias("source"), F.lit(run_id).cast("string").alias("model_run_id"),
                         F.lit(version).alias("model_version"))


def nightly(events: DataFrame, items: DataFrame, profiles: DataFrame, user_factors: DataFrame | None,
            item_factors: DataFrame | None, model_run_id: str | None, conf: RecommendSettings, ds: str,
            item_embeddings: DataFrame | None = None, content_version: str = "content",
            users: DataFrame | None = None, als_version_note: str = "", ease_model: EaseModel | None = None,
            ease_run_id: str | None = None, baseline: str = "als", popularity: Any = None,
            blocked: Any = None) -> DataFrame:
    """gold.recommendations rows for one ds.

    ``baseline`` ``ease`` (with ``ease_model``): EASE's top N for the users it can score. Then, users with ALS
    factors: ALS, with up to ``content_slots`` of the last places given to cold items close to their content
    vector. Users without factors but with a content vector (new users): content similarity. Everyone else:
    popularity in their categories, then overall. item_embeddings: (item_id, embedding). ``users`` (user_id)
    replaces the active users (the ranked job passes those it could not rank); ``als_version_note`` is appended
    to the ALS and EASE rows' model_version (e.g. why no ranker ranked them). ``popularity``: a
    ``liverec.privacy.Release`` the popularity rows rank by (their model_version names its epsilon), else exact
    counts.
    ``blocked``: the content policy's ``liverec.policy.Blocked``; every list is cut from the other items, so
    it still has N when there are N others.
    """
    users = (active_users(events, conf.active_days) if users is None else users.select("user_id").distinct()).cache()
    seen = seen_items(events).join(users, "user_id").cache()
    exclude, pop = None, popularity.counts if popularity is not None else None
    if blocked is not None and len(blocked):  # the policy's items leave every source before its top N
        from liverec import policy

        exclude, banned = blocked.ids, F.broadcast(policy.frame(blocked, events.sparkSession))
        item_factors = item_factors.join(banned, "item_id", "left_anti") if item_factors is not None else None
        item_embeddings = item_embeddings.join(banned, "item_id", "left_anti") if item_embeddings is not None else None
        pop = (pop if pop is not None else item_users(events)).join(banned, "item_id", "left_anti")
    n, history = conf.top_n, conf.reason_history_items
    parts = []
    covered = users.limit(0)
    if baseline == "ease" and ease_model is not None:
        ease_rows = ease_recommendations(users, seen, items, ease_model, n, ease_run_id,
                                         f"ease:{ease_run_id}{als_version_note}", exclude).cache()
        parts.append(ease_rows)
        covered = ease_rows.select("user_id").distinct()
    emb_vecs = None
    if item_embeddings is not None:
        item_embeddings = item_embeddings.select("item_id", "embedding").where(F.col("embedding").isNotNull())
        emb_vecs = item_embeddings.select("item_id", F.col("embedding").alias("features"))
    if user_factors is not None and item_factors is not None:
        als_users = users.join(covered, "user_id", "left_anti")
        recs = als_recommendations(als_users, user_factors, item_factors, seen, n).cache()
        covered = covered.unionByName(recs.select("user_id").distinct())
        if item_embeddings is not None and conf.content_slots > 0:
            cold = cold_items(item_embeddings, events, conf.cold_item_max_users)
            listed = seen.unionByName(recs.select("user_id", "item_id"))  # a slot never repeats an ALS pick
            slots = content_recommendations(recs.select("user_id").distinct(), profiles, cold, listed,
                                            min(conf.content_slots, n), conf.content_min_similarity)
            taken = slots.groupBy("user_id").agg(F.count("*").alias("m"))
            recs = (recs.join(taken, "user_id", "left")
                    .where(F.col("rank") <= n - F.coalesce(F.col("m"), F.lit(0))).drop("m"))
            slots = (slots.join(taken, "user_id").withColumn("rank", F.col("rank") + n - F.col("m")).drop("m"))
            parts.append(reasons.labelled(slots, profiles, emb_vecs, items, history, "Few have found it yet; close to ",
                                       "Few have found it yet; close to what you like", "content", None,
                                       content_version))
        parts.append(reasons.labelled(recs, profiles, item_factors, items, history, "Because you showed interest in ",
                                   "People with tastes like yours chose it", "als", model_run_id,
                                   f"als:{model_run_id}{als_version_note}"))
    rest = users.join(covered, "user_id", "left_anti")
    if item_embeddings is not None:
        content = content_recommendations(rest, profiles, item_embeddings, seen, n).cache()
        parts.append(reasons.labelled(content, profiles, emb_vecs, items, history, "Similar to ",
                                   "Close to what you looked at", "content", None, content_version))
        rest = rest.join(content.select("user_id").distinct(), "user_id", "left_anti")
    pop_rows = (popular_recommendations(rest, events, items, profiles, seen, conf, pop)
                .withColumn("model_run_id", F.lit(None).cast("string"))
                .withColumn("model_version", F.lit(f"popularity:{ds}"
                                                   + (f":{popularity.label}" if popularity is not None else ""))))
    parts.append(pop_rows)
    cols = ["user_id", "rank", "item_id", "score", "reason", "source", "model_run_id", "model_version"]
    out = parts[0].select(*cols)
    for p in parts[1:]:
        out = out.unionByName(p.select(*cols))
    return out.withColumn("ds", F.lit(ds))
