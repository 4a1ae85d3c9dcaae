"""Readers that turn each supported source into bronze rows (all strings, raw identifiers).

Each reader returns DataFrames with the bronze columns except the bookkeeping ones (row_id,
ingested_at, ds, source), which :func:`to_bronze` adds. Readers check their input first and raise
:class:`InputError` with one clear sentence: a missing path, an empty or binary file, or columns
that are not the ones the format needs.
"""

from __future__ import annotations

import lzma
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from liverec.errors import InputError

CORRUPT = "_corrupt_record"
EVENT_REQUIRED = ("user_id", "item_id", "event_type", "ts")
EVENT_OPTIONAL = ("event_id", "value", "session_id", "price")
ITEM_REQUIRED = ("item_id",)
ITEM_OPTIONAL = ("title", "category", "description", "price")
FORMATS = ("csv", "json", "parquet")
SOURCES = ("events", "movielens", "online_retail", "filmtrust", "otto", "edges", "demo")
# OTTO's event types, as the event types liverec weighs
OTTO_TYPES = {"clicks": "click", "carts": "add_to_cart", "orders": "purchase"}

RETAIL_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                  "CustomerID", "Country")
# product stock codes are five digits with an optional letter suffix; POST, M, BANK CHARGES,
# DOT, gift vouchers and the like are not products
RETAIL_PRODUCT_CODE = r"^[0-9]{5}[A-Za-z]*$"
EDGE_HEADER_WORDS = {"src", "dst", "source", "target", "from", "to", "user", "friend", "follower",
                     "followee", "truster", "trustee", "weight", "user_id", "friend_id", "a", "b", "u", "v"}


@dataclass
class Ingested:
    events: DataFrame | None = None
    items: DataFrame | None = None
    social: DataFrame | None = None


# --------------------------------------------------------------------------- input checks

def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> Path:
    return Path(path[len("file://"):] if path.startswith("file://") else path)


def data_files(path: str) -> list[Path]:
    """The data files a local path stands for (a file, or the visible files of a folder)."""
    p = _local(path)
    if p.is_file():
        return [p]
    return sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "_")))


def check_path(path: str, what: str = "input") -> None:
    """Missing, empty and binary local inputs are errors before Spark reads anything."""
    if not _is_local(path):
        return  # object stores: Spark reports missing paths; see read_* for column checks
    p = _local(path)
    if not p.exists():
        raise InputError(f"{what} path does not exist: {path}")
    files = data_files(path)
    if not files:
        raise InputError(f"{what} folder has no data files: {path}")
    if all(f.stat().st_size == 0 for f in files):
        raise InputError(f"{what} is empty: {path}")
    for f in files:
        if f.suffix in {".parquet", ".gz", ".bz2", ".xz", ".snappy", ".zst"} or ".parquet" in f.name:
            continue
        with f.open("rb") as fh:
            head = fh.read(8192)
        if b"\x00" in head:
            raise InputError(f"{what} is a binary file, not text: {f}")


def detect_format(path: str, given: str | None) -> str:
    if given:
        if given not in FORMATS:
            raise InputError(f"unknown format '{given}'; use one of {', '.join(FORMATS)}")
        return given
    names = [f.name for f in data_files(path)] if _is_local(path) else [path]
    for name in names:
        lower = name.lower()
        if ".parquet" in lower:
            return "parquet"
        if lower.endswith((".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz")):
            return "json"
        if lower.endswith((".csv", ".tsv", ".txt", ".csv.gz")):
            return "csv"
    raise InputError(f"cannot tell the format of {path} from its name; pass --format csv|json|parquet")


def _require(columns: list[str], required: tuple[str, ...], path: str, what: str) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        shown = ", ".join(columns[:12]) or "none"
        raise InputError(f"{what} {path} lacks required column(s) {', '.join(missing)} (it has: {shown})")


def _not_empty(df: DataFrame, path: str, what: str) -> DataFrame:
    if df.limit(1).count() == 0:
        raise InputError(f"{what} has no data rows: {path}")
    return df


def read_table_file(spark: SparkSession, path: str, fmt: str | None, required: tuple[str, ...],
                    optional: tuple[str, ...], what: str) -> DataFrame:
    """Read a CSV/JSON-lines/Parquet file or folder as strings, malformed lines kept in ``raw_record``."""
    check_path(path, what)
    fmt = detect_format(path, fmt)
    try:
        if fmt == "parquet":
            df = spark.read.parquet(path)
            _require(df.columns, required, path, what)
            keep = [c for c in (*required, *optional) if c in df.columns]
            out = df.select([F.col(c).cast("string").alias(c) for c in keep]).withColumn(
                "raw_record", F.lit(None).cast("string"))
        else:
            sep = "\t" if path.lower().endswith(".tsv") else ","
            if fmt == "csv":
                header = spark.read.option("header", True).option("sep", sep).csv(path).columns
            else:
                sample = spark.read.text(path).limit(2000)
                header = spark.read.json(sample.rdd.map(lambda r: r.value)).columns
            header = [c for c in header if c != CORRUPT]
            _require(header, required, path, what)
            schema = StructType([StructField(c, StringType()) for c in header] + [StructField(CORRUPT, StringType())])
            reader = (spark.read.schema(schema).option("mode", "PERMISSIVE")
                      .option("columnNameOfCorruptRecord", CORRUPT))
            if fmt == "csv":
                raw = reader.option("header", True).option("sep", sep).csv(path)
            else:
                raw = reader.json(path)
            keep = [c for c in (*required, *optional) if c in header]
            out = raw.select(*[F.col(c) for c in keep], F.col(CORRUPT).alias("raw_record"))
    except InputError:
        raise
    except Exception as exc:  # Spark's own errors: name the file and the first line of the cause
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read {what} {path} as {fmt}: {first}") from exc
    for c in (*required, *optional):
        if c not in out.columns:
            out = out.withColumn(c, F.lit(None).cast("string"))
    return _not_empty(out, path, what)


# --------------------------------------------------------------------------- sources

def _blank_to_null(c: Column) -> Column:
    trimmed = F.trim(c)
    return F.when(trimmed == "", None).otherwise(trimmed)


def _with_input_file(df: DataFrame) -> DataFrame:
    return df.withColumn("input_file", F.col("_metadata.file_path"))


def generic_event_columns(df: DataFrame) -> DataFrame:
    """The generic event columns (blanks as nulls), no source reject, ``raw_record`` and the input file:
    what bronze.events keeps of a generic event file, for the batch reader and the stream alike."""
    df = _with_input_file(df)
    cols = [_blank_to_null(F.col(c)).alias(c) for c in (*EVENT_REQUIRED, *EVENT_OPTIONAL)]
    return df.select(*cols, F.lit(None).cast("string").alias("source_reject"), "raw_record", "input_file")


def read_generic_events(spark: SparkSession, path: str, fmt: str | None = None, default_ts: str | None = None
                        ) -> DataFrame:
    """The generic event format. ``default_ts`` (ISO-8601 or epoch seconds) is the time of every event of a log
    without timestamps: the ``ts`` column may then be absent, and blank values get it too."""
    if default_ts is None:
        return generic_event_columns(read_table_file(spark, path, fmt, EVENT_REQUIRED, EVENT_OPTIONAL,
                                                     "events input"))
    check_default_ts(default_ts)
    required = tuple(c for c in EVENT_REQUIRED if c != "ts")
    df = read_table_file(spark, path, fmt, required, (*EVENT_OPTIONAL, "ts"), "events input")
    df = df.withColumn("ts", F.coalesce(_blank_to_null(F.col("ts")), F.lit(default_ts)))
    return generic_event_columns(df)


def check_default_ts(value: str) -> None:
    """--default-ts must be epoch seconds or an ISO-8601 time (what the clean stage parses)."""
    import datetime as dt

    try:
        float(value)
        return
    except ValueError:
        pass
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"--default-ts must be epoch seconds or an ISO-8601 time, got '{value}'") from exc


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


def read_generic_items(spark: SparkSession, path: str, fmt: str | None = None) -> DataFrame:
    df = read_table_file(spark, path, fmt, ITEM_REQUIRED, ITEM_OPTIONAL, "items input")
    df = df.where(F.col("raw_record").isNull() & _blank_to_null(F.col("item_id")).isNotNull())
    return df.select(*[_blank_to_null(F.col(c)).alias(c) for c in (*ITEM_REQUIRED, *ITEM_OPTIONAL)])


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


def read_edges(spark: SparkSession, path: str) -> DataFrame:
    """``a b [weight]`` per line, whitespace or tab separated, with or without a header line."""
    check_path(path, "edges input")
    lines = spark.read.text(path).select(F.trim("value").alias("line")).where(F.col("line") != "")
    first = lines.first()
    if first is None:
        raise InputError(f"edges input has no data rows: {path}")
    tokens = first["line"].split()
    has_header = bool({t.lower() for t in tokens} & EDGE_HEADER_WORDS) or (
        len(tokens) == 3 and not _is_number(tokens[2]))
    if has_header:
        lines = lines.where(F.col("line") != first["line"])
    parts = F.split(F.col("line"), r"\s+")
    n = F.size(parts)
    weight = F.get(parts, F.lit(2))
    ok = (n == 2) | ((n == 3) & weight.try_cast("double").isNotNull())
    return lines.select(
        F.when(ok, F.get(parts, F.lit(0))).alias("src"), F.when(ok, F.get(parts, F.lit(1))).alias("dst"),
        F.when(ok, F.when(n == 3, weight).otherwise(F.lit("1"))).alias("weight"),
        F.when(~ok, F.col("line")).alias("raw_record"))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def to_bronze(df: DataFrame, ds: str, source: str) -> DataFrame:
    """Add the bookkeeping columns every bronze table carries."""
    out = df.withColumn("ingested_at", F.current_timestamp()).withColumn("ds", F.lit(ds)).withColumn(
        "source", F.lit(source))
    if "raw_record" in df.columns and "event_type" in df.columns:
        out = out.withColumn("row_id", F.monotonically_increasing_id())
    return out
