"""Readers that turn each supported source into bronze rows (all strings, raw identifiers).

Each reader returns DataFrames with the bronze columns except the bookkeeping ones (row_id,
ingested_at, ds, source), which :func:`to_bronze` adds. Readers check their input first and raise
:class:`InputError` with one clear sentence: a missing path, an empty or binary file, or columns
that are not the ones the format needs. This module holds the generic formats (events, items, edges)
and those checks; the real data sets' readers (MovieLens, Online Retail, FilmTrust, OTTO) are in
``liverec.readers``.
"""

from __future__ import annotations

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


def read_generic_items(spark: SparkSession, path: str, fmt: str | None = None) -> DataFrame:
    df = read_table_file(spark, path, fmt, ITEM_REQUIRED, ITEM_OPTIONAL, "items input")
    df = df.where(F.col("raw_record").isNull() & _blank_to_null(F.col("item_id")).isNotNull())
    return df.select(*[_blank_to_null(F.col(c)).alias(c) for c in (*ITEM_REQUIRED, *ITEM_OPTIONAL)])


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
