"""Readers of the real data sets as they are published: MovieLens (100K and "latest"), UCI Online Retail,
FilmTrust and OTTO. Each maps a data set's own files, event types, ids and times onto the bronze columns of
``liverec.ingest`` and returns an :class:`~liverec.ingest.Ingested` (events, items and, for FilmTrust, social
edges); the generic formats, the input checks the readers share and ``to_bronze`` stay in ``liverec.ingest``.
"""
from __future__ import annotations

import lzma
import os
import shutil
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from liverec.errors import InputError
from liverec.ingest import (
    CORRUPT,
    Ingested,
    _blank_to_null,
    _local,
    _not_empty,
    _with_input_file,
    check_default_ts,
    check_path,
    read_edges,
    read_table_file,
)

RETAIL_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                  "CustomerID", "Country")
# product stock codes are five digits with an optional letter suffix; POST, M, BANK CHARGES,
# DOT, gift vouchers and the like are not products
RETAIL_PRODUCT_CODE = r"^[0-9]{5}[A-Za-z]*$"
# OTTO's event types, as the event types liverec weighs
OTTO_TYPES = {"clicks": "click", "carts": "add_to_cart", "orders": "purchase"}


def read_movielens(spark: SparkSession, path: str) -> Ingested:
    """MovieLens 100K (``u.data``, ``u.item``) or "latest" (``ratings.csv``, ``movies.csv``, ``tags.csv``)."""
    check_path(path, "MovieLens folder")
    root = _local(path)
    if (root / "u.data").is_file():
        return _read_ml100k(spark, root)
    if (root / "ratings.csv").is_file():
        return _read_ml_latest(spark, root)
    raise InputError(f"MovieLens folder {path} has neither u.data (100K) nor ratings.csv (latest)")


def _read_ml100k(spark: SparkSession, root: Path) -> Ingested:
    for name in ("u.data", "u.item"):
        check_path(str(root / name), f"MovieLens {name}")
    data_schema = StructType([StructField(c, StringType()) for c in ("user_id", "item_id", "value", "ts")]
                             + [StructField(CORRUPT, StringType())])
    raw = (spark.read.schema(data_schema).option("sep", "\t").option("mode", "PERMISSIVE")
           .option("columnNameOfCorruptRecord", CORRUPT).csv(str(root / "u.data")))
    events = _with_input_file(raw).select(
        F.lit(None).cast("string").alias("event_id"), "user_id", "item_id",
        F.lit("rating").alias("event_type"), "value", "ts",
        F.lit(None).cast("string").alias("session_id"), F.lit(None).cast("string").alias("price"),
        F.lit(None).cast("string").alias("source_reject"), F.col(CORRUPT).alias("raw_record"), "input_file")
    _not_empty(events, str(root / "u.data"), "MovieLens u.data")

    genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
              "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
              "War", "Western"]
    genre_file = root / "u.genre"
    if genre_file.is_file():  # the names as the data set itself spells them
        pairs = [ln.split("|") for ln in genre_file.read_text(encoding="latin-1").splitlines() if "|" in ln]
        genres = [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))]
    item_cols = ["item_id", "title", "release_date", "video_date", "url"] + [f"g{i}" for i in range(len(genres))]
    raw_items = (spark.read.schema(StructType([StructField(c, StringType()) for c in item_cols]))
                 .option("sep", "|").option("encoding", "ISO-8859-1").csv(str(root / "u.item")))
    category = F.concat_ws("|", *[F.when(F.col(f"g{i}") == "1", F.lit(g)) for i, g in enumerate(genres)])
    items = raw_items.select(
        "item_id", "title",
        F.when(category == "", None).otherwise(category).alias("category"),
        F.when(F.col("release_date").isNotNull(), F.concat(F.lit("Released "), F.col("release_date")))
        .alias("description"),
        F.lit(None).cast("string").alias("price"))
    return Ingested(events=events, items=items)


def _read_ml_latest(spark: SparkSession, root: Path) -> Ingested:
    ratings = read_table_file(spark, str(root / "ratings.csv"), "csv", ("userId", "movieId", "rating", "timestamp"),
                              (), "MovieLens ratings.csv")
    events = _with_input_file(ratings).select(
        F.lit(None).cast("string").alias("event_id"), F.col("userId").alias("user_id"),
        F.col("movieId").alias("item_id"), F.lit("rating").alias("event_type"), F.col("rating").alias("value"),
        F.col("timestamp").alias("ts"), F.lit(None).cast("string").alias("session_id"),
        F.lit(None).cast("string").alias("price"), F.lit(None).cast("string").alias("source_reject"),
        "raw_record", "input_file")
    movies = read_table_file(spark, str(root / "movies.csv"), "csv", ("movieId", "title", "genres"), (),
                             "MovieLens movies.csv").where(F.col("raw_record").isNull())
    description = F.lit(None).cast("string")
    if (root / "tags.csv").is_file():
        tags = read_table_file(spark, str(root / "tags.csv"), "csv", ("userId", "movieId", "tag", "timestamp"), (),
                               "MovieLens tags.csv").where(F.col("raw_record").isNull())
        tag_text = tags.groupBy("movieId").agg(
            F.concat_ws(", ", F.array_sort(F.collect_set(F.lower(F.trim("tag"))))).alias("tags"))
        movies = movies.join(tag_text, "movieId", "left")
        description = F.col("tags")
    genres = F.when(F.col("genres") == "(no genres listed)", None).otherwise(F.col("genres"))
    items = movies.select(F.col("movieId").alias("item_id"), "title", genres.alias("category"),
                          description.alias("description"), F.lit(None).cast("string").alias("price"))
    return Ingested(events=events, items=items)


def _unpack_xz(path: Path, scratch: str) -> Path:
    """Spark has no xz codec: unpack once into the scratch folder (reused while the source is unchanged)."""
    target_dir = Path(scratch) / "unpacked"
    target_dir.mkdir(parents=True, exist_ok=True)
    stat = path.stat()
    target = target_dir / f"{path.name[:-3]}.{int(stat.st_mtime)}.{stat.st_size}"
    if not target.is_file():
        tmp = target.with_suffix(".tmp")
        try:
            with lzma.open(path) as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
        except lzma.LZMAError as exc:
            tmp.unlink(missing_ok=True)
            raise InputError(f"{path} is not a valid .xz file: {exc}") from exc
        os.replace(tmp, target)
    return target


def read_online_retail(spark: SparkSession, path: str, scratch: str) -> Ingested:
    """UCI Online Retail: invoice lines as purchases, cancellations (InvoiceNo 'C...') as returns."""
    check_path(path, "Online Retail input")
    local = _local(path)
    if local.suffix == ".xz":
        local = _unpack_xz(local, scratch)
    raw = read_table_file(spark, str(local), "csv", RETAIL_COLUMNS, (), "Online Retail input")
    raw = _with_input_file(raw)
    invoice = _blank_to_null(F.col("InvoiceNo"))
    is_return = invoice.startswith("C")
    quantity = F.col("Quantity").try_cast("double")
    unit_price = F.col("UnitPrice").try_cast("double")
    code = _blank_to_null(F.col("StockCode"))
    parsed_ts = F.coalesce(F.expr("try_to_timestamp(InvoiceDate, 'yyyy-MM-dd HH:mm:ss')"),
                           F.expr("try_to_timestamp(InvoiceDate, 'M/d/yyyy H:mm')"))
    reject = (F.when(code.isNotNull() & ~code.rlike(RETAIL_PRODUCT_CODE), "non_product_code")
              .when(unit_price.isNotNull() & (unit_price <= 0), "non_positive_price")
              .when(~is_return & quantity.isNotNull() & (quantity <= 0), "non_positive_quantity"))
    customer = F.regexp_replace(_blank_to_null(F.col("CustomerID")), r"\.0$", "")
    events = raw.select(
        F.lit(None).cast("string").alias("event_id"), customer.alias("user_id"), code.alias("item_id"),
        F.when(is_return, "return").otherwise("purchase").alias("event_type"),
        F.when(is_return, F.regexp_replace(F.trim("Quantity"), "^-", "")).otherwise(F.trim("Quantity"))
        .alias("value"),
        F.coalesce(F.date_format(parsed_ts, "yyyy-MM-dd'T'HH:mm:ss"), F.col("InvoiceDate")).alias("ts"),
        invoice.alias("session_id"), F.trim("UnitPrice").alias("price"),
        F.when(F.col("raw_record").isNull(), reject).alias("source_reject"), "raw_record", "input_file")
    lines = raw.where(F.col("raw_record").isNull() & code.isNotNull())
    items = (lines.withColumn("desc", _blank_to_null(F.col("Description")))
             .groupBy(code.alias("item_id"))
             .agg(F.mode("desc").alias("title"), F.percentile_approx(unit_price, 0.5).alias("p")))
    items = items.select("item_id", "title", F.lit(None).cast("string").alias("category"),
                         F.col("title").alias("description"), F.col("p").cast("string").alias("price"))
    return Ingested(events=events, items=items)



def read_filmtrust(spark: SparkSession, path: str, default_ts: str) -> Ingested:
    """FilmTrust: ``ratings.txt`` (user item rating, whitespace separated, no timestamp) and, when present,
    ``trust.txt`` (truster trustee weight) as social edges. Every rating gets ``default_ts``: the data set has no
    time at all."""
    check_path(path, "FilmTrust folder")
    root = _local(path)
    ratings = root / "ratings.txt"
    if not ratings.is_file():
        raise InputError(f"FilmTrust folder {path} has no ratings.txt")
    check_path(str(ratings), "FilmTrust ratings.txt")
    check_default_ts(default_ts)
    lines = spark.read.text(str(ratings)).select(F.trim("value").alias("line"), F.col("_metadata.file_path")
                                                  .alias("input_file")).where(F.col("line") != "")
    parts = F.split(F.col("line"), r"\s+")
    ok = (F.size(parts) == 3) & F.get(parts, F.lit(2)).try_cast("double").isNotNull()
    events = lines.select(
        F.lit(None).cast("string").alias("event_id"), F.when(ok, F.get(parts, F.lit(0))).alias("user_id"),
        F.when(ok, F.get(parts, F.lit(1))).alias("item_id"), F.lit("rating").alias("event_type"),
        F.when(ok, F.get(parts, F.lit(2))).alias("value"), F.lit(default_ts).alias("ts"),
        F.lit(None).cast("string").alias("session_id"), F.lit(None).cast("string").alias("price"),
        F.lit(None).cast("string").alias("source_reject"), F.when(~ok, F.col("line")).alias("raw_record"),
        "input_file")
    _not_empty(events, str(ratings), "FilmTrust ratings.txt")
    trust = root / "trust.txt"
    return Ingested(events=events, social=read_edges(spark, str(trust)) if trust.is_file() else None)


def read_otto(spark: SparkSession, path: str) -> Ingested:
    """OTTO sessions: JSON lines ``{"session": n, "events": [{"aid": a, "ts": ms, "type": clicks|carts|orders}]}``.
    A session is the user (OTTO's sessions are anonymous) and the session id; ``ts`` is in milliseconds; the
    types become click, add_to_cart and purchase (an unknown type is kept and quarantined by clean)."""
    check_path(path, "OTTO input")
    schema = StructType([StructField("session", StringType()),
                         StructField("events", StringType()), StructField(CORRUPT, StringType())])
    raw = (spark.read.schema(schema).option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT)
           .json(path))
    sample = raw.where(F.col(CORRUPT).isNull()).limit(1).collect()
    if raw.limit(1).count() and not sample:
        raise InputError(f"OTTO input {path} has no line with 'session' and 'events' (is it the OTTO jsonl format?)")
    event = "array<struct<aid:string,ts:string,type:string>>"
    parsed = _with_input_file(raw).withColumn("_events", F.from_json("events", event))
    good = parsed.where(F.col(CORRUPT).isNull() & F.col("_events").isNotNull())
    bad = parsed.where(F.col(CORRUPT).isNotNull() | F.col("_events").isNull())
    types = F.create_map(*[x for k, v in OTTO_TYPES.items() for x in (F.lit(k), F.lit(v))])
    exploded = good.select("session", "input_file", F.explode("_events").alias("e"))
    events = exploded.select(
        F.lit(None).cast("string").alias("event_id"), F.col("session").alias("user_id"),
        F.col("e.aid").alias("item_id"), F.coalesce(types[F.col("e.type")], F.col("e.type")).alias("event_type"),
        F.lit(None).cast("string").alias("value"), F.col("e.ts").alias("ts"), F.col("session").alias("session_id"),
        F.lit(None).cast("string").alias("price"), F.lit(None).cast("string").alias("source_reject"),
        F.lit(None).cast("string").alias("raw_record"), "input_file")
    malformed = bad.select(*[F.lit(None).cast("string").alias(c) for c in
                             ("event_id", "user_id", "item_id", "event_type", "value", "ts", "session_id", "price",
                              "source_reject")],
                           F.coalesce(F.col(CORRUPT), F.to_json(F.struct("session", "events"))).alias("raw_record"),
                           "input_file")
    out = events.unionByName(malformed)
    _not_empty(out, path, "OTTO input")
    return Ingested(events=out)
