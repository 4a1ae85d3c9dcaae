"""The candidates the ranker ranks, defined once: the nightly job, the training examples and the evaluation
all take them from here.

Per user, the union of:
- ``ease``: EASE's top ``recommend.ease_candidates`` unseen items (``via`` = the history item that adds
  most to the score);
- ``als``: ALS's top ``recommend.als_candidates`` unseen items;
- ``content``: the content neighbours (gold.item_neighbors, the best ``neighbors_per_item`` of each) of
  the user's ``neighbor_history`` most recent items (``via`` = that history item);
- ``popular_category``: the ``category_candidates`` items most popular lately in each of the user's
  ``fallback_categories`` favourite categories (``via`` = the category);
- ``friends``: the ``friend_candidates`` items most of the user's friends chose (``via`` = a friend).

Seen items never come back; an item found by several sources is one row that remembers all of them, its
rank in the ALS and EASE lists, its EASE score, and ``source``/``via`` of the most specific evidence
(``SOURCE_PRIORITY``, then the source's own order: rank, similarity, popularity; a tie between two recent
items with the same similarity goes to the smaller id).

How: Spark gathers one row per user (``user_inputs``: profile features, recent items, favourite categories,
seen items, friends' items, ALS factor); the catalogue-sized side (``features.ItemArrays``: ALS item factors,
EASE's weights, neighbours, popular items per category) is broadcast; ``union`` builds the lists of a batch of
users with numpy inside Spark's Arrow batches (``per_user``), the ALS and EASE lists as matrix products over
the batch, and ``features.dense`` computes their features there. Nothing is exploded to one Spark row per
candidate unless asked for (``candidate_rows``: the training examples, the evaluation's recall, the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from liverec import ease, features, vectors
from liverec.config import RecommendSettings, Settings
from liverec.features import SCORE_STATS, USER_STATS, Features, ItemArrays

if TYPE_CHECKING:
    import pyarrow as pa

# which source names a candidate found by several (the most specific evidence first)
SOURCE_PRIORITY = {"content": 0, "friends": 1, "ease": 2, "popular_category": 3, "als": 4}
SOURCES = tuple(SOURCE_PRIORITY)
# the columns of ``user_inputs``: one row per user, what ``union`` and ``features.dense`` read
USER_INPUTS = ("user_id", *USER_STATS, "aff_keys", "aff_values", "recent_items", "content_vector", "user_factor",
               "top_categories", "seen", "friend_items", "friend_n", "friend_via")
# what ``candidate_rows`` writes: one row per (user, candidate)
CANDIDATE_ROWS = ("user_id string, item_id string, als_rank int, ease_rank int, sources array<string>, source string, "
                  "via string, dense array<float>, recent_items array<string>")


def ease_lists(spark: SparkSession, model: ease.EaseModel, seen: DataFrame, users: DataFrame, k: int,
               exclude: list[str] | None = None) -> DataFrame:
    """(user_id, item_id, rank, score, via, score_mean, score_std): each user's top ``k`` unseen items by EASE
    over their history ``seen`` (user_id, item_id), never one of ``exclude``; users without an item EASE knows get
    no rows."""
    index = spark.createDataFrame([(i, n) for n, i in enumerate(model.item_ids)], "item_id string, item_idx int")
    hist = ease.user_items(seen.join(users.select("user_id").distinct(), "user_id", "left_semi"), F.broadcast(index))
    top = ease.scored_top(spark, model, hist, k, exclude)
    rows = top.select("user_id", "score_mean", "score_std",
                      F.posexplode(F.arrays_zip("items", "scores", "via")).alias("pos", "x"))
    return (rows.join(F.broadcast(index), F.col("x.items") == F.col("item_idx"))
            .join(F.broadcast(index.select(F.col("item_idx").alias("v_idx"), F.col("item_id").alias("via"))),
                  F.col("x.via") == F.col("v_idx"), "left")
            .select("user_id", "item_id", (F.col("pos") + 1).alias("rank"), F.col("x.scores").alias("score"),
                    "via", "score_mean", "score_std"))


def user_inputs(f: Features, users: DataFrame, friend_candidates: int) -> DataFrame:
    """USER_INPUTS: one row per user of ``users`` that has a profile in ``f`` (the others get no candidates). The
    friends' items come best first (most friends, then item id), with one friend for the first
    ``friend_candidates`` only: a friend's id is read for the friends source alone, the counts for every item."""
    seen = f.seen.groupBy("user_id").agg(F.collect_list("item_id").alias("seen"))
    friends = f.friends.withColumn("fr_via", F.slice(F.col("fr.a_friend"), 1, max(friend_candidates, 1)))
    rows = (f.users.join(users.select("user_id").distinct(), "user_id", "left_semi")
            .join(f.profiles.select("user_id", "top_categories"), "user_id", "left")
            .join(seen, "user_id", "left").join(friends, "user_id", "left"))
    return rows.select("user_id", *[F.col(c).cast("double").alias(c) for c in USER_STATS],
                       F.map_keys("category_affinity").alias("aff_keys"),
                       F.map_values("category_affinity").cast("array<double>").alias("aff_values"),
                       "recent_items", F.col("content_vector").cast("array<float>").alias("content_vector"),
                       F.col("user_factor").cast("array<float>").alias("user_factor"), "top_categories", "seen",
                       F.col("fr.item_id").alias("friend_items"),
                       features.friend_counts("fr").alias("friend_n"),
                       F.col("fr_via").alias("friend_via"))


def _lists(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, offsets) of a list column; a null list is empty."""
    import pyarrow.compute as pc

    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return pc.list_flatten(col).to_numpy(zero_copy_only=False), np.r_[0, np.cumsum(lengths)]


def _rows(col: pa.Array, n: int, width: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """A column of equal-length vectors (null allowed) as an (n, width) matrix, and which rows had one."""
    flat, off = _lists(col)
    lengths = np.diff(off)
    present = lengths > 0
    if present.any() and width == 0:
        width = int(lengths[present][0])
    out = np.zeros((n, width), dtype=dtype)
    if present.any():
        if (lengths[present] != width).any():
            raise ValueError(f"vectors of different lengths in one column ({sorted(set(lengths[present]))}, "
                             f"expected {width})")
        out[present] = np.asarray(flat, dtype=dtype).reshape(-1, width)
    return out, present


@dataclass
class Batch:
    """A batch of ``user_inputs`` rows as numpy, items as positions of the ``ItemArrays``."""

    user_ids: np.ndarray  # str
    stats: np.ndarray  # (B, USER_STATS) float64
    affinity: np.ndarray  # (B, categories) float64: the user's category affinity (0 where none)
    recent_ids: pa.Array  # the recent_items column as it came (newest first)
    recent: list[np.ndarray]  # recent items as positions (-1 outside the catalogue)
    content: np.ndarray  # (B, dim) float64 content vectors (0 where none)
    content_norm: np.ndarray  # (B,)
    factor: np.ndarray  # (B, rank) float32 ALS factors
    has_factor: np.ndarray  # (B,) bool
    top_categories: list[np.ndarray]  # favourite categories, best first, as category indices (-1 unknown)
    seen: list[np.ndarray]  # positions of the items in the user's history (those outside the catalogue left out)
    friend_items: np.ndarray  # flat over the batch: friends' items (positions), best first, and how many friends
    friend_n: np.ndarray
    friend_offsets: np.ndarray  # (B + 1,)
    friend_via: np.ndarray  # one friend of each of the first (recommend.friend_candidates) items of a user
    via_offsets: np.ndarray  # (B + 1,)

    def friends_on(self, user: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
        """How many friends of ``user[i]`` chose ``item[i]`` (0 when none), vectorised."""
        out = np.zeros(len(item), dtype=np.float64)
        if len(self.friend_items) == 0 or len(item) == 0:
            return out
        owner = np.repeat(np.arange(len(self.user_ids)), np.diff(self.friend_offsets))
        keys = owner * n_items + self.friend_items
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        want = user * n_items + item
        at = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
        hit = keys[at] == want
        out[hit] = self.friend_n[order][at[hit]]
        return out


def read_batch(rb: pa.RecordBatch, items: ItemArrays) -> Batch:
    """``user_inputs`` rows (an Arrow batch) -> a ``Batch`` over ``items``."""
    n = rb.num_rows
    col = {name: rb.column(name) for name in USER_INPUTS}
    stats = np.column_stack([col[c].to_numpy(zero_copy_only=False).astype(np.float64) for c in USER_STATS]) \
        if n else np.zeros((0, len(USER_STATS)))
    affinity = np.zeros((n, max(len(items.categories), 1)), dtype=np.float64)
    keys, off = _lists(col["aff_keys"])
    values, _ = _lists(col["aff_values"])
    if len(keys):
        cat = pd.Index(items.categories).get_indexer(pd.Index(keys.astype(str)))
        owner = np.repeat(np.arange(n), np.diff(off))
        ok = cat >= 0
        affinity[owner[ok], cat[ok]] = np.asarray(values, dtype=np.float64)[ok]

    def positions(name: str, index: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
        flat, off = _lists(col[name])
        pos = index(flat) if len(flat) else np.zeros(0, dtype=np.int64)
        return [pos[a:b] for a, b in zip(off[:-1], off[1:], strict=True)]

    content, _ = _rows(col["content_vector"], n, items.embeddings.shape[1], np.float64)
    factor, has_factor = _rows(col["user_factor"], n, items.factors.shape[1], np.float32)
    cat_index = pd.Index(items.categories)
    fi, f_off = _lists(col["friend_items"])
    fn, _ = _lists(col["friend_n"])
    fv, v_off = _lists(col["friend_via"])
    return Batch(
        user_ids=col["user_id"].to_numpy(zero_copy_only=False), stats=stats, affinity=affinity,
        recent_ids=col["recent_items"], recent=positions("recent_items", items.positions), content=content,
        content_norm=np.sqrt((content ** 2).sum(axis=1)), factor=factor, has_factor=has_factor,
        top_categories=positions("top_categories", lambda x: cat_index.get_indexer(pd.Index(x.astype(str)))),
        seen=[s[s >= 0] for s in positions("seen", items.positions)],
        friend_items=items.positions(fi) if len(fi) else np.zeros(0, dtype=np.int64),
        friend_n=np.asarray(fn, dtype=np.float64), friend_offsets=f_off, friend_via=np.asarray(fv, dtype=object),
        via_offsets=v_off)


@dataclass
class Lists:
    """Every candidate of a batch of users, one row each, ordered by (user, item position)."""

    user: np.ndarray  # the user's row in the batch
    item: np.ndarray  # the item's position in the ItemArrays
    als_rank: np.ndarray  # int32, 0 = not in the user's ALS list
    ease_rank: np.ndarray  # int32, 0 = not in the EASE list
    ease_score: np.ndarray  # float64, NaN when unlisted
    neighbor_similarity: np.ndarray  # float64, NaN when no content neighbour
    sources: np.ndarray  # int64 bit mask of SOURCE_PRIORITY
    source: np.ndarray  # int64: the SOURCE_PRIORITY of the one that names the row
    via: np.ndarray  # object: str or None
    offsets: np.ndarray  # (B + 1,): user b's rows are offsets[b]:offsets[b + 1]
    stats: dict[str, np.ndarray]  # SCORE_STATS per user of the batch, NaN where the user has no such list

    def source_names(self) -> np.ndarray:
        return np.asarray(SOURCES, dtype=object)[self.source]



def source_lists(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat names, offsets) of the sources in each bit mask of ``Lists.sources``, sorted by name (what Spark's
    sort_array(collect_set(source)) gives)."""
    table = [sorted(s for s, p in SOURCE_PRIORITY.items() if m >> p & 1) for m in range(1 << len(SOURCES))]
    lengths = np.array([len(t) for t in table], dtype=np.int64)[masks]
    flat_table = np.array([s for t in table for s in t], dtype=object)
    starts = np.r_[0, np.cumsum([len(t) for t in table])][:-1]
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return flat_table[np.repeat(starts[masks], lengths) + within], np.r_[0, np.cumsum(lengths)]


_FIELDS = ("user", "item", "prio", "order", "via", "via_key", "als_rank", "ease_rank", "ease_score",
           "neighbor_similarity")


def _part(user: np.ndarray, item: np.ndarray, source: str, order: np.ndarray, via: np.ndarray,
          via_key: np.ndarray | None = None, **extra: np.ndarray) -> dict[str, np.ndarray]:
    n = len(item)
    return {"user": np.asarray(user, dtype=np.int64), "item": np.asarray(item, dtype=np.int64),
            "prio": np.full(n, SOURCE_PRIORITY[source], dtype=np.int64), "order": np.asarray(order, dtype=np.float64),
            "via": np.asarray(via, dtype=object), "via_key": np.zeros(n, dtype=np.int64) if via_key is None
            else np.asarray(via_key, dtype=np.int64),
            "als_rank": extra.get("als_rank", np.zeros(n, dtype=np.int64)),
            "ease_rank": extra.get("ease_rank", np.zeros(n, dtype=np.int64)),
            "ease_score": extra.get("ease_score", np.full(n, np.nan)),
            "neighbor_similarity": extra.get("neighbor_similarity", np.full(n, np.nan))}


def _ranked(lists: list[list[int]], users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, rank from 1) rows of per-user ranked lists."""
    lengths = np.array([len(x) for x in lists], dtype=np.int64)
    flat = np.fromiter((i for x in lists for i in x), dtype=np.int64, count=int(lengths.sum()))
    rank = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths) + 1
    return np.repeat(users, lengths), flat, rank


def _list_stats(stats: dict[str, np.ndarray], name: str, users: np.ndarray, scores: list[list[float]],
                mean: np.ndarray, std: np.ndarray) -> None:
    """A source's SCORE_STATS for the users whose list is not empty (the floor is the last listed score)."""
    has = np.array([len(s) > 0 for s in scores], dtype=bool)
    stats[f"{name}_mean"][users[has]] = mean[has]
    stats[f"{name}_std"][users[has]] = std[has]
    stats[f"{name}_floor"][users[has]] = [min(s) for s, h in zip(scores, has, strict=True) if h]


def union(batch: Batch, items: ItemArrays, conf: RecommendSettings, blocked: np.ndarray | None = None) -> Lists:
    """The candidate lists of a batch of users (see the module doc); ``blocked`` (bool per catalogue row, the content
    policy's items) leaves those out of every list, as seen items are, after each source's own ranks and score
    statistics (so the other candidates' features do not move)."""
    n_users, n_items = len(batch.user_ids), len(items.ids)
    stats = {k: np.full(n_users, np.nan) for k in SCORE_STATS}
    parts = []
    if conf.ease_candidates > 0 and items.ease_weights is not None:
        hists = [np.unique(items.ease_pos[s][items.ease_pos[s] >= 0]).astype(np.int64) for s in batch.seen]
        users = np.array([b for b, h in enumerate(hists) if len(h)], dtype=np.int64)
        if len(users):
            top, scores, via, mean, std = ease.top_of([hists[b] for b in users], items.ease_weights,
                                                      len(items.ease_items), conf.ease_candidates)
            user, item, rank = _ranked(top, users)
            via_flat = np.fromiter((v for x in via for v in x), dtype=np.int64, count=len(item))
            via_ids = np.where(via_flat >= 0, items.ids[items.ease_items[np.maximum(via_flat, 0)]], None)
            parts.append(_part(user, items.ease_items[item], "ease", rank, via_ids, ease_rank=rank,
                               ease_score=np.fromiter((s for x in scores for s in x), dtype=np.float64,
                                                      count=len(item))))
            _list_stats(stats, "ease", users, scores, mean, std)
    if conf.als_candidates > 0:
        users = np.flatnonzero(batch.has_factor)
        if len(users):
            top, scores, mean, std = vectors.dot_top(batch.factor[users], items.factors, items.has_factor,
                                                     pd.Series([batch.seen[b] for b in users], dtype=object),
                                                     conf.als_candidates)
            user, item, rank = _ranked(top, users)
            parts.append(_part(user, item, "als", rank, np.full(len(item), None), als_rank=rank))
            _list_stats(stats, "als", users, scores, mean, std)
    if conf.neighbor_history > 0 and conf.neighbors_per_item > 0 and (items.neighbors >= 0).any():
        hist = [r[:conf.neighbor_history] for r in batch.recent]
        owner = np.repeat(np.arange(n_users), [len(h) for h in hist])
        hist_flat = np.concatenate(hist) if hist else np.zeros(0, dtype=np.int64)
        owner, hist_flat = owner[hist_flat >= 0], hist_flat[hist_flat >= 0]
        nb = items.neighbors[hist_flat, :conf.neighbors_per_item]
        sim = items.neighbor_sim[hist_flat, :conf.neighbors_per_item]
        ok = nb >= 0
        src = np.broadcast_to(hist_flat[:, None], nb.shape)[ok]
        parts.append(_part(np.broadcast_to(owner[:, None], nb.shape)[ok], nb[ok], "content", -sim[ok],
                           items.ids[src], via_key=src, neighbor_similarity=sim[ok]))
    if conf.category_candidates > 0 and len(items.categories):
        for b, cats in enumerate(batch.top_categories):
            for cp, c in enumerate(cats[:conf.fallback_categories]):
                if c < 0:
                    continue
                pop = items.popular_items[items.popular_ptr[c]:items.popular_ptr[c + 1]]
                parts.append(_part(np.full(len(pop), b), pop, "popular_category", cp * 1000 + np.arange(1, len(pop) + 1),
                                   np.full(len(pop), items.categories[c], dtype=object)))
    if conf.friend_candidates > 0 and len(batch.friend_items):  # the first friend_candidates of each user's list
        take = np.minimum(np.diff(batch.friend_offsets), conf.friend_candidates)
        owner = np.repeat(np.arange(n_users), take)
        within = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)
        item = batch.friend_items[batch.friend_offsets[owner] + within]
        via = batch.friend_via[batch.via_offsets[owner] + within]
        known = item >= 0
        parts.append(_part(owner[known], item[known], "friends", within[known] + 1, via[known]))
    rows = {k: np.concatenate([p[k] for p in parts]) for k in _FIELDS} if parts else _part([], [], "als", [], [])
    # seen items never come back
    seen_keys = np.concatenate([b * n_items + s for b, s in enumerate(batch.seen)] + [np.zeros(0, np.int64)])
    keys = rows["user"] * n_items + rows["item"]
    keep = ~np.isin(keys, seen_keys)
    if blocked is not None:
        keep &= ~blocked[rows["item"]]
    rows, keys = {k: v[keep] for k, v in rows.items()}, keys[keep]
    # one row per (user, item): the best evidence names it, the ranks / scores / similarity from whichever found them
    order = np.lexsort((rows["via_key"], rows["order"], rows["prio"], keys))
    rows, keys = {k: v[order] for k, v in rows.items()}, keys[order]
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, dtype=np.int64)
    big = np.iinfo(np.int64).max
    if len(first):
        als_rank = np.minimum.reduceat(np.where(rows["als_rank"] > 0, rows["als_rank"], big), first)
        ease_rank = np.minimum.reduceat(np.where(rows["ease_rank"] > 0, rows["ease_rank"], big), first)
        ease_score = np.fmax.reduceat(rows["ease_score"], first)
        similarity = np.fmax.reduceat(rows["neighbor_similarity"], first)
        sources = np.bitwise_or.reduceat(np.left_shift(1, rows["prio"]), first)
    else:
        als_rank = ease_rank = sources = np.zeros(0, dtype=np.int64)
        ease_score = similarity = np.zeros(0, dtype=np.float64)
    user = rows["user"][first]
    return Lists(user=user, item=rows["item"][first],
                 als_rank=np.where(als_rank == big, 0, als_rank).astype(np.int32),
                 ease_rank=np.where(ease_rank == big, 0, ease_rank).astype(np.int32), ease_score=ease_score,
                 neighbor_similarity=similarity, sources=sources, source=rows["prio"][first], via=rows["via"][first],
                 offsets=np.searchsorted(user, np.arange(n_users + 1)), stats=stats)


def check(conf: RecommendSettings) -> None:
    """A ValueError when every candidate source is turned off."""
    if not (conf.ease_candidates > 0 or conf.als_candidates > 0 or (conf.neighbor_history > 0 and
            conf.neighbors_per_item > 0) or conf.category_candidates > 0 or conf.friend_candidates > 0):
        raise ValueError("every candidate source is turned off (recommend.*_candidates)")


def per_user(f: Features, users: DataFrame, neighbors: DataFrame | None, settings: Settings,
             emit: Callable[[Batch, Lists, np.ndarray, ItemArrays, Any], pa.RecordBatch], schema: str,
             setup: Callable[[ItemArrays], Any] | None = None, blocked: Any = None) -> DataFrame:
    """The candidate lists of ``users`` and their dense features, per batch of ``recommend.list_batch_users``
    users inside Spark's Arrow batches: ``emit(batch, lists, dense, items, state)`` turns each into the output
    rows (``schema``); ``setup(items)``, once per Python worker task, gives ``state`` (a loaded model, say).
    ``blocked``: the content policy's ``liverec.policy.Blocked``, items no list may hold (None: none)."""
    conf = settings.recommend
    check(conf)
    items = features.item_arrays(f, neighbors, conf)
    banned = blocked.mask(items.ids) if blocked is not None and len(blocked) else None
    shared = users.sparkSession.sparkContext.broadcast((items, banned))
    size = max(conf.list_batch_users, 1)

    def apply(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        arrays, banned = shared.value
        state = setup(arrays) if setup else None
        for rb in batches:
            for start in range(0, rb.num_rows, size):
                batch = read_batch(rb.slice(start, size), arrays)
                lists = union(batch, arrays, conf, banned)
                dense = features.dense(lists, batch, arrays, conf.als_candidates, conf.ease_candidates)
                yield emit(batch, lists, dense, arrays, state)

    return user_inputs(f, users, conf.friend_candidates).mapInArrow(apply, schema)


def candidate_rows(f: Features, users: DataFrame, neighbors: DataFrame | None, settings: Settings) -> DataFrame:
    """CANDIDATE_ROWS: every candidate of ``users`` with its features (``dense`` in features.DENSE_FEATURES order)
    and the user's ``ranker.recent_items`` most recent items: what the training examples are made of."""
    length = settings.ranker.recent_items

    def emit(batch: Batch, lists: Lists, dense: np.ndarray, items: ItemArrays, state: Any) -> pa.RecordBatch:
        import pyarrow as pa
        import pyarrow.compute as pc

        del state
        rows = pa.array(lists.user, type=pa.int64())
        names, off = source_lists(lists.sources)
        recent = pc.list_slice(batch.recent_ids, 0, length)
        return pa.RecordBatch.from_arrays([
            pa.array(batch.user_ids, type=pa.string()).take(rows), pa.array(items.ids[lists.item], type=pa.string()),
            pa.array(np.where(lists.als_rank > 0, lists.als_rank, 0), type=pa.int32(), mask=lists.als_rank == 0),
            pa.array(lists.ease_rank, type=pa.int32(), mask=lists.ease_rank == 0),
            pa.ListArray.from_arrays(pa.array(off, type=pa.int32()), pa.array(names, type=pa.string())),
            pa.array(lists.source_names(), type=pa.string()), pa.array(lists.via, type=pa.string()),
            pa.ListArray.from_arrays(pa.array(np.arange(0, dense.size + 1, dense.shape[1]), type=pa.int32()),
                                     pa.array(dense.reshape(-1), type=pa.float32())),
            recent.take(rows)], names=[c.split(" ")[0] for c in CANDIDATE_ROWS.split(", ")])

    return per_user(f, users, neighbors, settings, emit, CANDIDATE_ROWS)


def recall(cands: DataFrame, held: DataFrame) -> dict[str, float]:
    """Share of the held-out (user_id, item_id) pairs of the candidates' users that the union, and each
    source, found: a re-ranker cannot do better than the union."""
    users = cands.select("user_id").distinct()
    truth = held.select("user_id", "item_id").distinct().join(users, "user_id", "left_semi").cache()
    total = truth.count()
    found = truth.join(cands.select("user_id", "item_id", "sources"), ["user_id", "item_id"])
    per = {r["s"]: r["n"] for r in found.select(F.explode("sources").alias("s")).groupBy("s")
           .agg(F.count("*").alias("n")).collect()}
    out = {"union": found.count() / total if total else 0.0}
    out.update({s: per.get(s, 0) / total if total else 0.0 for s in SOURCES})
    truth.unpersist()
    return out
