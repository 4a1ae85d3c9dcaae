"""A realistic, deliberately dirty event log generated inside Spark (no driver loop).

Users browse in sessions through a view -> click -> add_to_cart -> purchase funnel with popularity
skew and category preferences, rate some purchases, and have friends with similar tastes. Then dirt
is put in on purpose: exact duplicates, malformed lines, null user ids, future timestamps, unknown
event types, non-numeric values, and bot users with inhuman rates. Every kind of dirt is counted in
``manifest.json`` beside the data, so a test can check that cleaning finds exactly that.

Randomness is a hash of (seed, purpose, row), so the same settings give the same log on any
partitioning.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from liverec.config import DemoSettings
from liverec.ingest import EVENT_OPTIONAL, EVENT_REQUIRED

ADJECTIVES = ["classic", "compact", "deluxe", "vintage", "modern", "eco", "premium", "handmade", "smart",
              "portable", "rustic", "bold", "gentle", "bright", "silent", "golden"]
CATEGORIES = [
    ("kitchen", ["kettle", "teapot", "mug", "skillet", "spatula", "whisk", "cutting board", "chef knife"]),
    ("garden", ["watering can", "trowel", "planter", "hose reel", "seed tray", "pruner", "bird feeder"]),
    ("books", ["mystery novel", "cookbook", "travel guide", "poetry collection", "biography", "atlas"]),
    ("music", ["vinyl record", "guitar strings", "ukulele", "metronome", "headphones", "drum sticks"]),
    ("toys", ["puzzle", "building blocks", "plush bear", "kite", "toy train", "board game"]),
    ("sports", ["yoga mat", "tennis racket", "football", "water bottle", "running shoes", "dumbbell"]),
    ("outdoors", ["tent", "sleeping bag", "lantern", "hiking pole", "compass", "camping stove"]),
    ("beauty", ["face cream", "lip balm", "perfume", "hair brush", "nail polish", "bath salts"]),
    ("office", ["notebook", "fountain pen", "desk lamp", "stapler", "paper tray", "planner"]),
    ("pets", ["dog collar", "cat toy", "pet bed", "aquarium filter", "bird cage", "chew bone"]),
    ("electronics", ["phone charger", "usb cable", "speaker", "smart watch", "power bank", "webcam"]),
    ("home decor", ["candle holder", "photo frame", "wall clock", "cushion", "vase", "rug"]),
    ("clothing", ["wool scarf", "rain jacket", "cotton shirt", "knitted hat", "denim jeans", "socks"]),
    ("food", ["dark chocolate", "green tea", "olive oil", "honey jar", "coffee beans", "spice mix"]),
]
# the generic event format's columns (ingest.py owns them), all but price, which demo events lack
EVENT_COLUMNS = [c for c in (*EVENT_OPTIONAL, *EVENT_REQUIRED) if c != "price"]
# the folders a demo log consists of, under the output folder (ingest --source demo reads these)
DEMO_FILES = {"events": "events", "items": "items", "edges": "edges"}
DIRT_KINDS = ["null_user_id", "future_ts", "unknown_event_type", "non_numeric_value"]


class _Rng:
    """Uniform [0, 1) numbers from a hash of the seed, a purpose tag and row columns."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def u(self, tag: str, *cols: Column | str) -> Column:
        h = F.xxhash64(F.lit(self.seed), F.lit(tag), *cols)
        return F.pmod(h, F.lit(1 << 40)).cast("double") / float(1 << 40)

    def n(self, tag: str, *cols: Column | str) -> Column:
        """Approximately standard normal (sum of four uniforms)."""
        total = sum((self.u(f"{tag}{k}", *cols) for k in range(4)), F.lit(0.0))
        return (total - 2.0) * (3.0 ** 0.5)


def _pick(options: list[str], index: Column) -> Column:
    return F.element_at(F.array(*[F.lit(o) for o in options]), (index % len(options)).cast("int") + 1)


def items_frame(spark: SparkSession, conf: DemoSettings) -> DataFrame:
    rng = _Rng(conf.seed)
    n_cat = min(conf.categories, len(CATEGORIES))
    cat_names = [c for c, _ in CATEGORIES[:n_cat]]
    i = F.col("id")
    cat = (i % n_cat).cast("int")
    # every category has its own nouns: pick the category's list, then a noun in it
    nouns = F.element_at(F.array(*[F.array(*[F.lit(n) for n in ns]) for _, ns in CATEGORIES[:n_cat]]), cat + 1)
    noun = F.element_at(nouns, (F.floor(rng.u("noun", i) * F.size(nouns)) + 1).cast("int"))
    adj = _pick(ADJECTIVES, F.floor(rng.u("adj", i) * len(ADJECTIVES)))
    adj2 = _pick(ADJECTIVES, F.floor(rng.u("adj2", i) * len(ADJECTIVES)))
    category = _pick(cat_names, cat)
    title = F.initcap(F.concat_ws(" ", adj, noun, F.format_string("no. %d", (i / n_cat).cast("int") + 1)))
    description = F.concat(F.lit("A "), adj2, F.lit(" "), noun, F.lit(" from our "), category,
                           F.lit(" range, "), adj, F.lit(" and built to last."))
    price = F.round(F.exp(F.lit(2.5) + 0.8 * rng.n("price", i)), 2)
    return spark.range(conf.items).select(
        F.concat(F.lit("i"), i.cast("string")).alias("item_id"), title.alias("title"),
        category.alias("category"), description.alias("description"), price.cast("string").alias("price"))


def clean_events_frame(spark: SparkSession, conf: DemoSettings) -> DataFrame:
    """The honest part of the log, before any dirt: sessions exploded into funnel events."""
    rng = _Rng(conf.seed)
    n_cat = min(conf.categories, len(CATEGORIES))
    per_cat = max(conf.items // n_cat, 1)
    end = dt.datetime.fromisoformat(conf.end_date).replace(tzinfo=dt.UTC)
    span = conf.days * 86400
    start_epoch = int(end.timestamp()) - span
    events_per_view = 1.0 + 0.35 + 0.35 * 0.3 + 0.35 * 0.3 * 0.5 + 0.35 * 0.3 * 0.5 * 0.5
    views_per_session = 6.0
    # n_views = 1 + floor(5 X), X ~ Exp(1): its mean is 1 + 1 / (e^(1/5) - 1)
    mean_views = 1.0 + 1.0 / (math.exp(1.0 / (views_per_session - 1.0)) - 1.0)
    n_sessions = max(round(conf.events / (events_per_view * mean_views)), 1)

    s = F.col("id")
    # users: mildly skewed activity, spread over the id space
    user_rank = F.floor(F.pow(rng.u("user", s), 1.5) * conf.users).cast("long")
    user = F.pmod(user_rank * 7919 + 13, F.lit(conf.users))
    sessions = spark.range(0, n_sessions, 1, conf.partitions).select(
        s.alias("sid"), user.alias("u"),
        (F.lit(start_epoch) + F.floor(rng.u("start", s) * span)).cast("long").alias("t0"),
        (F.lit(1) + F.floor(-F.log(F.lit(1.0) - rng.u("len", s)) * (views_per_session - 1))).cast("int")
        .alias("n_views"))
    views = sessions.select("*", F.explode(F.sequence(F.lit(0), F.col("n_views") - 1)).alias("pos"))
    v = F.col("sid") * 1000 + F.col("pos")
    pref1 = F.pmod(F.xxhash64(F.lit(conf.seed), F.lit("pref1"), "u"), F.lit(n_cat))
    pref2 = F.pmod(F.xxhash64(F.lit(conf.seed), F.lit("pref2"), "u"), F.lit(n_cat))
    r = rng.u("cat", v)
    cat = F.when(r < 0.6, pref1).when(r < 0.85, pref2).otherwise(F.floor(rng.u("anycat", v) * n_cat))
    rank_in_cat = F.floor(F.pow(rng.u("pop", v), 2.2) * per_cat)
    item_idx = F.least(rank_in_cat * n_cat + cat, F.lit(conf.items - 1)).cast("long")
    matches = (cat == pref1) | (cat == pref2)
    click = rng.u("click", v) < 0.35
    cart = click & (rng.u("cart", v) < 0.3)
    buy = cart & (rng.u("buy", v) < 0.5)
    rate = buy & (rng.u("rate", v) < 0.5)
    stars = F.when(matches, F.lit(4) + F.floor(rng.u("stars", v) * 2)).otherwise(
        F.lit(1) + F.floor(rng.u("stars", v) * 3))
    def step(kind: str, offset: int, val: Column) -> Column:
        return F.struct(F.lit(kind).alias("t"), F.lit(offset).alias("dt"), val.cast("string").alias("val"))

    none = F.lit(None).cast("string")
    funnel = F.array(
        step("view", 0, none),
        F.when(click, step("click", 3, none)),
        F.when(cart, step("add_to_cart", 9, F.lit("1"))),
        F.when(buy, step("purchase", 20, F.lit("1"))),
        F.when(rate, step("rating", 25, stars.cast("int"))),
    )
    per_view = views.select(
        "sid", "u", "pos", item_idx.alias("item"),
        (F.col("t0") + F.col("pos") * 35 + F.floor(rng.u("gap", v) * 20)).cast("long").alias("tv"),
        F.posexplode(F.filter(funnel, lambda x: x.isNotNull())).alias("step", "e"))
    eid = F.col("sid") * 10000 + F.col("pos") * 8 + F.col("step")
    ts_epoch = F.col("tv") + F.col("e.dt")
    iso = rng.u("iso", eid) < 0.2  # a fifth of the rows carry ISO-8601 text instead of epoch seconds
    ts = F.when(iso, F.date_format(F.timestamp_seconds(ts_epoch), "yyyy-MM-dd'T'HH:mm:ss'Z'")).otherwise(
        ts_epoch.cast("string"))
    return per_view.select(
        F.concat(F.lit("e"), eid.cast("string")).alias("event_id"),
        F.concat(F.lit("u"), F.col("u").cast("string")).alias("user_id"),
        F.concat(F.lit("i"), F.col("item").cast("string")).alias("item_id"),
        F.col("e.t").alias("event_type"), F.col("e.val").alias("value"), ts.alias("ts"),
        F.concat(F.lit("s"), F.col("sid").cast("string")).alias("session_id"),
        eid.alias("_n"))


def bot_events_frame(spark: SparkSession, conf: DemoSettings) -> DataFrame:
    """Bots: one view every second for 10 to 40 minutes, far beyond any human's rate."""
    rng = _Rng(conf.seed)
    end = int(dt.datetime.fromisoformat(conf.end_date).replace(tzinfo=dt.UTC).timestamp())
    b = F.col("id")
    bots = spark.range(conf.bot_users).select(
        b.alias("b"), (F.lit(600) + F.floor(rng.u("botlen", b) * 1800)).cast("int").alias("n"),
        (F.lit(end - 10 * 86400) + F.floor(rng.u("botstart", b) * 5 * 86400)).cast("long").alias("t0"))
    rows = bots.select("*", F.explode(F.sequence(F.lit(0), F.col("n") - 1)).alias("k"))
    k = F.col("b") * 100000 + F.col("k")
    return rows.select(
        F.concat(F.lit("bot"), F.col("b").cast("string"), F.lit("-"), F.col("k").cast("string")).alias("event_id"),
        F.concat(F.lit("bot"), F.col("b").cast("string")).alias("user_id"),
        F.concat(F.lit("i"), F.floor(rng.u("botitem", k) * conf.items).cast("long").cast("string")).alias("item_id"),
        F.lit("view").alias("event_type"), F.lit(None).cast("string").alias("value"),
        (F.col("t0") + F.col("k")).cast("string").alias("ts"),
        F.concat(F.lit("bots"), F.col("b").cast("string")).alias("session_id"))


def dirty_events_frame(clean: DataFrame, conf: DemoSettings) -> DataFrame:
    """Mark a disjoint slice of rows for each kind of dirt and apply it; ``_dirt`` says which."""
    rng = _Rng(conf.seed)
    d = conf.dirt_fraction
    r = rng.u("dirt", "_n")
    kind = F.lit(None).cast("string")
    for k, name in enumerate(DIRT_KINDS):
        kind = F.when((r >= k * d) & (r < (k + 1) * d), F.lit(name)).otherwise(kind)
    dup = (r >= len(DIRT_KINDS) * d) & (r < (len(DIRT_KINDS) + 1) * d)
    df = clean.withColumn("_dirt", kind).withColumn("_dup", dup)
    df = (df.withColumn("user_id", F.when(F.col("_dirt") == "null_user_id", None).otherwise(F.col("user_id")))
          .withColumn("ts", F.when(F.col("_dirt") == "future_ts",
                                   (F.lit(2051222400) + F.col("_n") % 86400).cast("string")).otherwise(F.col("ts")))
          .withColumn("event_type", F.when(F.col("_dirt") == "unknown_event_type", F.lit("teleport"))
                      .otherwise(F.col("event_type")))
          .withColumn("value", F.when(F.col("_dirt") == "non_numeric_value", F.lit("lots"))
                      .otherwise(F.col("value"))))
    dups = df.where(F.col("_dup") & F.col("_dirt").isNull()).withColumn("_dirt", F.lit("duplicate"))
    return df.unionByName(dups)


def edges_frame(spark: SparkSession, conf: DemoSettings) -> DataFrame:
    """Friendships, mostly between users who share a preferred category."""
    rng = _Rng(conf.seed)
    n_cat = min(conf.categories, len(CATEGORIES))
    e = F.col("id")
    a = F.floor(rng.u("ea", e) * conf.users).cast("long")
    # same-taste friend: a user whose pref1 equals a's is found by scanning a few candidates
    cands = F.array(*[F.floor(rng.u(f"eb{k}", e) * conf.users).cast("long") for k in range(6)])
    pref = F.pmod(F.xxhash64(F.lit(conf.seed), F.lit("pref1"), a), F.lit(n_cat))
    same = F.filter(cands, lambda c: (F.pmod(F.xxhash64(F.lit(conf.seed), F.lit("pref1"), c), F.lit(n_cat)) == pref)
                    & (c != a))
    b = F.coalesce(F.try_element_at(same, F.lit(1)), F.element_at(cands, 1))
    n_edges = conf.users * conf.avg_friends // 2
    edges = spark.range(n_edges).select(a.alias("a"), b.alias("b")).where(F.col("a") != F.col("b")).distinct()
    return edges.select(F.format_string("u%d\tu%d\t1", "a", "b").alias("line"))


def _write_csv(df: DataFrame, path: Path, partitions: int) -> None:
    df.repartition(partitions).write.mode("overwrite").option("header", True).csv(str(path))


def generate(spark: SparkSession, conf: DemoSettings, output_dir: str | None = None) -> dict[str, Any]:
    """Write events/, items/, edges/ and manifest.json under the output folder; return the manifest."""
    out = Path(output_dir or conf.output_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    items = items_frame(spark, conf)
    _write_csv(items, out / DEMO_FILES["items"], 1)

    honest = clean_events_frame(spark, conf)
    dirty = dirty_events_frame(honest, conf)
    bots = bot_events_frame(spark, conf).withColumn("_dirt", F.lit("bot")).withColumn("_n", F.lit(-1).cast("long"))
    everything = dirty.drop("_dup").unionByName(bots)
    counts = {r["_dirt"]: r["count"] for r in everything.groupBy("_dirt").count().collect()}
    _write_csv(everything.select(*EVENT_COLUMNS), out / DEMO_FILES["events"], conf.partitions)

    n_malformed = max(int(conf.events * conf.dirt_fraction), 1)
    with (out / DEMO_FILES["events"] / "part-malformed-extra.csv").open("w", encoding="utf-8") as fh:
        fh.write(",".join(EVENT_COLUMNS) + "\n")
        for k in range(n_malformed):
            fh.write("this line is not an event\n" if k % 2 == 0 else f"e-bad{k},u1,i1,view,,1700000000,s1,extra,cols\n")

    edges = edges_frame(spark, conf)
    edges.coalesce(1).write.mode("overwrite").text(str(out / DEMO_FILES["edges"]))
    n_edges = spark.read.text(str(out / DEMO_FILES["edges"])).count()

    manifest = {
        "settings": {k: getattr(conf, k) for k in conf.__dataclass_fields__},
        "files": DEMO_FILES,
        "items": conf.items,
        "edges": n_edges,
        "clean_events": counts.get(None, 0),
        "rows_written": sum(counts.values()) + n_malformed,
        "dirt": {
            "duplicate": counts.get("duplicate", 0),
            "malformed": n_malformed,
            "null_user_id": counts.get("null_user_id", 0),
            "future_ts": counts.get("future_ts", 0),
            "unknown_event_type": counts.get("unknown_event_type", 0),
            "non_numeric_value": counts.get("non_numeric_value", 0),
            "bot_events": counts.get("bot", 0),
            "bot_users": conf.bot_users,
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
