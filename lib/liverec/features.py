"""Every feature the ranker reads, defined once: the training examples, the nightly job, the evaluation and
the online bundle all compute them through this module.

``history_features`` turns the events of a history (and the item catalogue, text embeddings and social
edges, which carry no event time) into user and item aggregates, ALS factors and an EASE model fitted on
that history alone, content vectors and the recent-item sequence, in Spark; ``features_from`` does the same
from what was already fitted on it (the gold tables of a ds). ``item_arrays`` gathers the catalogue-sized
part (one row per item) as numpy arrays for the executors, and ``dense`` computes the ``DENSE_FEATURES`` of
the candidate lists of a batch of users (``liverec.candidates``) from them, inside Spark's Arrow batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from liverec import als, ease, profiles
from liverec.config import RecommendSettings, Settings

if TYPE_CHECKING:
    from liverec.candidates import Batch, Lists

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
# per-user statistics of a source's scores (liverec.candidates computes them with the lists): mean and standard
# deviation over the user's unseen items, and the floor (the last listed score, an unlisted item's score)
SCORE_STATS = ("als_mean", "als_std", "als_floor", "ease_mean", "ease_std", "ease_floor")
# the user's and the item's own features, in DENSE_FEATURES' names (and the value of an item outside the history)
USER_STATS = ("log_user_events", "log_user_items", "log_days_since_last", "log_friend_count")
ITEM_STATS = ("log_item_users", "log_item_recent_users", "log_item_age_days", "item_unseen")
ITEM_STATS_UNSEEN = (0.0, 0.0, 0.0, 1.0)


@dataclass
class Features:
    """Everything ``assemble`` and ``liverec.candidates`` need, computed from one history."""

    users: DataFrame  # user_id, log_user_events, log_user_items, log_days_since_last, log_friend_count,
    #                   category_affinity (map), recent_items (array<string>), content_vector, user_factor
    items: DataFrame  # item_id, categories, log_item_users, log_item_recent_users, log_item_age_days, item_unseen,
    #                   item_factor, embedding
    friends: DataFrame  # user_id, fr: every item the user's friends chose, best first (FRIEND_ENTRY, friend_lists)
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

    seen = history.select("user_id", "item_id").distinct().localCheckpoint()
    if social is not None:
        friends = friend_lists(profiles.friend_pairs(social, key), seen)
    else:
        friends = spark.createDataFrame([], f"user_id string, fr array<{FRIEND_ENTRY}>")
    # materialised with their lineage cut: the plans behind them (profiles, an ALS fit, several joins) are
    # large, and every later join would otherwise carry (and print, in Spark's UI events) all of them
    return Features(users.localCheckpoint(), item_rows.localCheckpoint(), friends.localCheckpoint(), itf, uf, seen,
                    ease_model, prof.drop("ref"))


# one entry of a user's friend list: neg = minus the friends who chose the item, so ascending order is best first
FRIEND_ENTRY = "struct<neg:bigint,item_id:string,a_friend:string>"


def friend_lists(friends: DataFrame, seen: DataFrame) -> DataFrame:
    """(user_id, fr): every item a user's friends chose, as FRIEND_ENTRY structs in the friends source's order (most
    friends first, then item id), each with one of those friends (the smallest id, for the reasons). ``friends``:
    (user_id, friend_id) pairs; ``seen``: distinct (user_id, item_id). Counted by ``profiles.over_friends`` inside
    each user's partition, so the per-user lists shuffle nothing more."""
    counted = profiles.over_friends(friends, seen, F.count("*").alias("n_friends"),
                                    F.min("friend_id").alias("a_friend"))
    return counted.groupBy("user_id").agg(F.sort_array(F.collect_list(F.struct(
        (-F.col("n_friends")).alias("neg"), "item_id", "a_friend"))).alias("fr"))


def friend_counts(fr: str) -> Column:
    """How many friends chose each item of a ``friend_lists`` column, in its order (array<long>)."""
    return F.transform(fr, lambda x: -x["neg"]).cast("array<long>")




@dataclass
class ItemArrays:
    """The catalogue-sized side of the candidate lists and their features, one row per item (``ids`` sorted, so an
    item's position orders like its id): built once on the driver (``item_arrays``) and broadcast to the
    executors."""

    ids: np.ndarray  # item ids (str), sorted
    factors: np.ndarray  # (n, rank) float32 ALS factors of the features' fit, 0 where none
    has_factor: np.ndarray  # bool
    embeddings: np.ndarray  # (n, dim) float32 text embeddings, 0 where none
    embedding_norm: np.ndarray  # (n,) float64
    stats: np.ndarray  # (n, ITEM_STATS) float64 (ITEM_STATS_UNSEEN for an item outside the history)
    categories: list[str]  # every category an item has, sorted
    category_ptr: np.ndarray  # CSR over ``categories``: item i's are category_idx[category_ptr[i]:category_ptr[i + 1]]
    category_idx: np.ndarray
    popular_ptr: np.ndarray  # per category, its most popular recent items (the popular_category source), best first:
    popular_items: np.ndarray  # popular_items[popular_ptr[c]:popular_ptr[c + 1]]
    neighbors: np.ndarray  # (n, neighbors_per_item) int32 content neighbours by rank, -1 = none
    neighbor_sim: np.ndarray  # (n, neighbors_per_item) float64 their cosine
    ease_items: np.ndarray | None  # EASE model index -> item position (None without an EASE model)
    ease_pos: np.ndarray | None  # item position -> EASE model index, -1 outside it
    ease_weights: np.ndarray | None  # EASE's B over its own index

    @property
    def index(self) -> pd.Index:
        return pd.Index(self.ids)

    def positions(self, ids: np.ndarray | list) -> np.ndarray:
        """Each id's position (int64), -1 for an id outside the catalogue."""
        return self.index.get_indexer(pd.Index(np.asarray(ids, dtype=object).astype(str)))


def _matrix(values: pd.Series, n: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, width) float32 rows from a column of arrays (None -> zeros), and which rows had one."""
    out = np.zeros((n, width), dtype=np.float32)
    present = np.array([v is not None for v in values], dtype=bool)
    if present.any():
        out[present] = np.stack([np.asarray(v, dtype=np.float32) for v in values[present]])
    return out, present


def category_csr(categories: list[list[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(every category sorted, ptr, idx): item i's categories as indices into the names are
    idx[ptr[i]:ptr[i + 1]], duplicates kept (each listing counts in category_affinity)."""
    names = sorted({c for cs in categories for c in cs})
    index = {c: j for j, c in enumerate(names)}
    lengths = np.array([len(cs) for cs in categories], dtype=np.int64)
    ptr = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    flat = np.fromiter((index[c] for cs in categories for c in cs), dtype=np.int32, count=int(ptr[-1]))
    return names, ptr, flat


def item_arrays(f: Features, neighbors: DataFrame | None, conf: RecommendSettings) -> ItemArrays:
    """The ``ItemArrays`` of a feature set: ``f.items`` (its statistics, categories, ALS factors and embeddings),
    the best ``recommend.neighbors_per_item`` content neighbours of each item and the EASE model. Model-sized
    (one row per item, EASE's n x n that ``ease.max_items`` bounds), collected through Arrow."""
    rows = f.items.select("item_id", "categories", *ITEM_STATS, "item_factor", "embedding").toPandas()
    k = max(conf.neighbors_per_item, 1)
    if neighbors is not None and conf.neighbors_per_item > 0 and conf.neighbor_history > 0:
        nb = neighbors.where(F.col("rank") <= conf.neighbors_per_item).select(
            "item_id", "rank", "neighbor_id", "similarity").toPandas()
    else:
        nb = pd.DataFrame({"item_id": [], "rank": [], "neighbor_id": [], "similarity": []})
    ease_ids = list(f.ease.item_ids) if f.ease is not None else []
    ids = np.array(sorted(set(rows["item_id"].astype(str)) | set(nb["item_id"].astype(str))
                          | set(nb["neighbor_id"].astype(str)) | set(map(str, ease_ids))), dtype=object)
    n = len(ids)
    index = pd.Index(ids)
    at = index.get_indexer(rows["item_id"].astype(str))
    rows = rows.iloc[np.argsort(at)].reset_index(drop=True)
    at = np.sort(at)
    stats = np.tile(np.asarray(ITEM_STATS_UNSEEN, dtype=np.float64), (n, 1))
    stats[at] = rows[list(ITEM_STATS)].to_numpy(dtype=np.float64)
    rank = next((len(v) for v in rows["item_factor"] if v is not None), 0)
    fac, has = _matrix(rows["item_factor"], len(rows), max(rank, 1))
    factors, has_factor = np.zeros((n, fac.shape[1]), dtype=np.float32), np.zeros(n, dtype=bool)
    factors[at], has_factor[at] = fac, has
    dim = next((len(v) for v in rows["embedding"] if v is not None), 0)
    emb, _ = _matrix(rows["embedding"], len(rows), max(dim, 1))
    embeddings = np.zeros((n, emb.shape[1]), dtype=np.float32)
    embeddings[at] = emb

    per_item: list[list[str]] = [[] for _ in range(n)]
    for pos, cs in zip(at, rows["categories"], strict=True):
        per_item[pos] = list(cs) if cs is not None else []
    names, ptr, flat = category_csr(per_item)
    lengths = np.diff(ptr)

    # popular_category: per category the items with an event in the history, by recent users, then users, then id
    # (one entry per time the item lists the category)
    owner = np.repeat(np.arange(n), lengths)
    keep = stats[owner, 3] == 0
    cat_of, item_of = flat[keep], owner[keep]
    order = np.lexsort((item_of, -stats[item_of, 0], -stats[item_of, 1], cat_of))
    cat_of, item_of = cat_of[order], item_of[order]
    starts = np.searchsorted(cat_of, np.arange(len(names) + 1))
    take = np.concatenate([np.arange(a, min(b, a + conf.category_candidates)) for a, b in
                           zip(starts[:-1], starts[1:], strict=True)]) if len(names) else np.zeros(0, np.int64)
    popular_items = item_of[take.astype(np.int64)].astype(np.int32)
    popular_ptr = np.r_[0, np.cumsum(np.minimum(np.diff(starts), max(conf.category_candidates, 0)))].astype(np.int64)

    neighbors_arr = np.full((n, k), -1, dtype=np.int32)
    neighbor_sim = np.zeros((n, k), dtype=np.float64)
    if len(nb):
        a, b = index.get_indexer(nb["item_id"].astype(str)), index.get_indexer(nb["neighbor_id"].astype(str))
        r = nb["rank"].to_numpy(dtype=np.int64) - 1
        neighbors_arr[a, r] = b
        neighbor_sim[a, r] = nb["similarity"].to_numpy(dtype=np.float64)
    ease_items = ease_pos = weights = None
    if f.ease is not None:
        ease_items = index.get_indexer(pd.Index([str(i) for i in ease_ids])).astype(np.int32)
        ease_pos = np.full(n, -1, dtype=np.int32)
        ease_pos[ease_items] = np.arange(len(ease_items), dtype=np.int32)
        weights = f.ease.weights
    return ItemArrays(ids, factors, has_factor, embeddings,
                      np.sqrt((embeddings.astype(np.float64) ** 2).sum(axis=1)), stats, names, ptr, flat,
                      popular_ptr, popular_items, neighbors_arr, neighbor_sim, ease_items, ease_pos, weights)


def _z(score: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(score - mean) / max(std, 1e-9), 0 where any of them is missing (NaN)."""
    z = (score - mean) / np.maximum(std, 1e-9)
    return np.where(np.isnan(z), 0.0, z)


def dense(lists: Lists, batch: Batch, items: ItemArrays, als_candidates: int, ease_candidates: int) -> np.ndarray:
    """The (rows, DENSE_FEATURES) float32 features of the candidate rows ``lists`` of the users ``batch``:

    - als_z: the dot product of the user's and the item's ALS factors (float32 products summed in float64; the
      user's ALS floor when either has none), as a z-score with the user's ALS mean and standard deviation;
      log_als_rank: log1p of the rank in the user's ALS list, als_candidates + 1 beyond it;
    - ease_z / log_ease_rank: the same with the item's listed EASE score (the floor when unlisted);
    - content_cosine: cosine of the user's content vector and the item's text embedding (0 when either is
      missing or zero); neighbor_similarity: the candidate's own (0 when no content neighbour);
    - the item's ITEM_STATS and the user's USER_STATS;
    - category_affinity: the user's affinity summed over the item's categories (each listing counts);
    - log_friends_on_item: log1p of the user's friends who chose the item.
    """
    u, it = lists.user, lists.item
    n = len(it)
    out = np.zeros((n, len(DENSE_FEATURES)), dtype=np.float32)
    col = {name: j for j, name in enumerate(DENSE_FEATURES)}
    if n == 0:
        return out
    stats = lists.stats
    both = batch.has_factor[u] & items.has_factor[it]
    dot = stats["als_floor"][u].copy()
    if both.any():
        w = np.flatnonzero(both)
        dot[w] = (batch.factor[u[w]] * items.factors[it[w]]).sum(axis=1, dtype=np.float64)
    out[:, col["als_z"]] = _z(dot, stats["als_mean"][u], stats["als_std"][u])
    out[:, col["log_als_rank"]] = np.log1p(np.where(lists.als_rank > 0, lists.als_rank, als_candidates + 1))
    ease_score = np.where(np.isnan(lists.ease_score), stats["ease_floor"][u], lists.ease_score)
    out[:, col["ease_z"]] = _z(ease_score, stats["ease_mean"][u], stats["ease_std"][u])
    out[:, col["log_ease_rank"]] = np.log1p(np.where(lists.ease_rank > 0, lists.ease_rank, ease_candidates + 1))
    cos = np.zeros(n, dtype=np.float64)
    for b in np.flatnonzero(batch.content_norm > 0):  # one matrix-vector product per user over its candidates
        a, e = lists.offsets[b], lists.offsets[b + 1]
        rows = it[a:e]
        dots = items.embeddings[rows] @ batch.content[b]
        cos[a:e] = dots / np.maximum(batch.content_norm[b] * items.embedding_norm[rows], 1e-12)
    out[:, col["content_cosine"]] = cos
    out[:, col["neighbor_similarity"]] = np.where(np.isnan(lists.neighbor_similarity), 0.0, lists.neighbor_similarity)
    for j, name in enumerate(ITEM_STATS):
        out[:, col[name]] = items.stats[it, j]
    for j, name in enumerate(USER_STATS):
        out[:, col[name]] = batch.stats[u, j]
    lengths = items.category_ptr[it + 1] - items.category_ptr[it]
    owner = np.repeat(np.arange(n), lengths)
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cats = items.category_idx[np.repeat(items.category_ptr[it], lengths) + within]
    out[:, col["category_affinity"]] = np.bincount(owner, weights=batch.affinity[u[owner], cats], minlength=n)
    out[:, col["log_friends_on_item"]] = np.log1p(batch.friends_on(u, it, len(items.ids)))
    return out
