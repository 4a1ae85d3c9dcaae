"""New event files in a landing folder -> silver.events, silver.quarantine and gold.user_recent, by
Structured Streaming.

The file source reads each new file of ``stream.landing`` once (which files it has read is in the
checkpoint). Every micro-batch is cleaned by the batch job's own functions (:mod:`liverec.cleaning`:
the same rules, reasons and pseudonyms, with ``source = 'stream'``), its event ids checked against
every date of silver.events, and then, in :func:`process_batch`:

0. the online store (``liverec.online_store``, what ``liverec serve`` reads per request) gets each user's
   merged recent list (:func:`push_recent`; a store that cannot be reached is a warning, not a failed batch);
1. gold.user_recent gets a MERGE whose source is every valid event of the batch (kept rows, and
   duplicates as silver holds them): the new list of a user is the newest-first top
   ``stream.recent_items`` distinct items of (old list + new events). Replaying the same events gives
   the same list, and a replayed batch whose rows silver already holds (duplicates now) is still merged;
2. the kept rows are appended to silver.events and the rejected ones to silver.quarantine, each
   append tagged with Delta's ``txnAppId`` (the streaming query's id, which lives in the checkpoint)
   and ``txnVersion`` (the batch id), so a batch that Spark re-executes after a crash is not
   appended twice.

The MERGE comes first because gold.user_recent is what serving reads and what the freshness target
is about: the newest events are visible there a second or two sooner on 2 cores. Either order leaves
the same tables after any crash and replay.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StringType, StructField, StructType

from liverec import cleaning, ingest, lakehouse, schemas, tables
from liverec.config import Settings
from liverec.errors import InputError
from liverec.progress import Progress

STREAM_SOURCE = "stream"  # silver's `source` of the rows this job appends
NOT_STREAM = f"source <> '{STREAM_SOURCE}'"  # the rows a batch job may replace
FORMATS = ("json", "csv")
CSV_HEADER = ",".join((*ingest.EVENT_REQUIRED, *ingest.EVENT_OPTIONAL))  # the header line a CSV landing file starts with
QUERY_NAME = "liverec_stream_events"
RAW = "raw_record"


# --------------------------------------------------------------------------- input

def landing_schema() -> StructType:
    """Every generic event column as a string, plus the reader's corrupt-record column ``raw_record``."""
    names = (*ingest.EVENT_REQUIRED, *ingest.EVENT_OPTIONAL)
    return StructType([StructField(c, StringType()) for c in names] + [StructField(RAW, StringType())])


def read_landing(spark: SparkSession, path: str, fmt: str, max_files: int | None = None,
                 streaming: bool = True) -> DataFrame:
    """The landing folder's event files as generic event rows (strings, blanks as nulls, ``input_file``).

    PERMISSIVE with ``raw_record`` as the corrupt-record column: a line the reader cannot parse becomes a
    row holding that line, which cleaning quarantines as ``malformed``. A CSV file starts with the header
    :data:`CSV_HEADER` (a stream has one schema for every file, matched by position; Spark checks each
    file's header against it and stops the query, naming the file, when it differs).
    ``streaming=False`` reads the path once (tests, backfills).
    """
    if fmt not in FORMATS:
        raise InputError(f"stream.format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    reader = (spark.readStream if streaming else spark.read).schema(landing_schema()) \
        .option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", RAW)
    if streaming and max_files:
        reader = reader.option("maxFilesPerTrigger", int(max_files))
    if fmt == "csv":
        raw = reader.option("header", True).option("enforceSchema", False).csv(path)
    else:
        raw = reader.json(path)
    return ingest.generic_event_columns(raw)


def as_bronze(rows: DataFrame, ds: str) -> DataFrame:
    """The bookkeeping columns bronze rows carry (row_id, ingested_at, ds, source = 'stream'), as ingest adds them."""
    return ingest.to_bronze(rows, ds, STREAM_SOURCE)


# --------------------------------------------------------------------------- gold.user_recent

_RECENT_FIELDS = ("item_id", "event_type", "ts", "event_id")
_RECENT_TYPE = schemas.USER_RECENT["recent"].dataType.simpleString()
# newest first; ties broken by event id, then item, so the order is total and a replay sorts the same way
_NEWEST_FIRST = ("(l, r) -> CASE WHEN l.ts > r.ts THEN -1 WHEN l.ts < r.ts THEN 1 "
                 "WHEN l.event_id > r.event_id THEN -1 WHEN l.event_id < r.event_id THEN 1 "
                 "WHEN l.item_id > r.item_id THEN -1 WHEN l.item_id < r.item_id THEN 1 ELSE 0 END")


def top_items_sql(array_sql: str, n: int) -> str:
    """SQL for the newest-first first ``n`` distinct items of an array of recent-item structs (an item
    keeps its newest event). top(top(A) + B) = top(A + B), so merging batch by batch, or a batch twice,
    gives the list of all the events at once."""
    if n <= 0:
        raise InputError(f"stream.recent_items must be positive, got {n}")
    keep = (f"(acc, x) -> IF(size(acc) >= {int(n)} OR exists(acc, y -> y.item_id = x.item_id), acc, "
            "concat(acc, array(x)))")
    return f"aggregate(array_sort({array_sql}, {_NEWEST_FIRST}), CAST(array() AS {_RECENT_TYPE}), {keep})"


def recent_source(events: DataFrame, n: int) -> DataFrame:
    """One row per user of ``events`` (user_id, item_id, event_type, ts, event_id): its top ``n`` items."""
    entry = F.struct(*[F.col(c) for c in _RECENT_FIELDS])
    return (events.select("user_id", entry.alias("_entry")).groupBy("user_id")
            .agg(F.expr(top_items_sql("collect_list(_entry)", n)).alias("recent"))
            .withColumn("updated_at", F.current_timestamp()))


def ensure_user_recent(spark: SparkSession, settings: Settings) -> None:
    """Create gold.user_recent (empty, not partitioned) when it does not exist yet."""
    from delta.tables import DeltaTable

    if not lakehouse.exists(spark, settings, tables.USER_RECENT):
        (DeltaTable.createIfNotExists(spark).location(tables.table_path(settings, tables.USER_RECENT))
         .addColumns(schemas.USER_RECENT).execute())


def merge_recent(spark: SparkSession, settings: Settings, events: DataFrame, n: int) -> int:
    """MERGE the users of ``events`` into gold.user_recent (created when missing); returns the users merged."""
    from delta.tables import DeltaTable

    ensure_user_recent(spark, settings)
    source = recent_source(events, n)
    target = DeltaTable.forPath(spark, tables.table_path(settings, tables.USER_RECENT))
    metrics = (target.alias("t").merge(source.alias("s"), "t.user_id = s.user_id")
               .whenMatchedUpdate(set={"recent": top_items_sql("concat(t.recent, s.recent)", n),
                                       "updated_at": "s.updated_at"})
               .whenNotMatchedInsert(values={"user_id": "s.user_id", "recent": "s.recent",
                                             "updated_at": "s.updated_at"})
               .execute().collect())
    return int(metrics[0]["num_affected_rows"]) if metrics else 0


# --------------------------------------------------------------------------- the online store's recent lists

def newest_distinct(entries: list[tuple[str, str, float, str]], n: int) -> list[tuple[str, str, float, str]]:
    """The newest-first first ``n`` distinct items of (item_id, event_type, ts, event_id) entries, ordered as
    :func:`top_items_sql` orders gold.user_recent (ts, then event id, then item, each descending), so the online
    store's list of a user is the table's (tests/test_streaming.py compares them)."""
    out, have = [], set()
    for e in sorted(entries, key=lambda e: (e[2], e[3], e[0]), reverse=True):
        if e[0] not in have:
            have.add(e[0])
            out.append(e)
            if len(out) >= n:
                break
    return out


def push_recent(settings: Settings, events: DataFrame, n: int) -> int:
    """Merge a micro-batch's valid events (user_id, item_id, event_type, ts, event_id) into the online store's
    recent list of each of their users (liverec.online_store, the list the server reads per request); returns the
    users written. Raises ``StoreUnavailable`` when the store cannot be reached."""
    import orjson

    from liverec.online_store import open_store

    rows = events.select("user_id", "item_id", "event_type", F.col("ts").cast("double").alias("ts"),
                         "event_id").collect()  # one micro-batch: small
    if not rows:
        return 0
    batch: dict[str, list[tuple[str, str, float, str]]] = {}
    for r in rows:
        batch.setdefault(r["user_id"], []).append((r["item_id"], r["event_type"], float(r["ts"]), r["event_id"]))
    conf = settings.online
    store = open_store(tables.online_store_url(settings), conf.store_timeout_s, conf.store_prefix)
    try:
        old = store.get_recent(sorted(batch))
        merged = []
        for user, new in batch.items():
            known = [tuple(e) for e in orjson.loads(old[user])] if user in old else []
            merged.append((user, orjson.dumps(newest_distinct(known + new, n))))
        return store.put_recent(merged)
    finally:
        store.close()


# --------------------------------------------------------------------------- one micro-batch

@dataclass
class BatchResult:
    batch_id: int
    ds: str
    rows_in: int
    kept: int
    quarantined: int
    duplicates: int
    users_merged: int
    reasons: dict[str, int] = field(default_factory=dict)
    store_users: int = 0  # users whose recent list the online store got
    store_error: str | None = None  # why the online store could not be written (the Delta tables still were)


def _with_file_detail(classified: DataFrame) -> DataFrame:
    """A streamed row has no bronze row to point at: its quarantine detail names the landing file instead
    (the file stays where it landed; the stream never moves or deletes input)."""
    where = F.concat(F.lit("file "), F.col("input_file"))
    return classified.withColumn("_detail", F.concat_ws("; ", F.col("_detail"), where))


def process_batch(spark: SparkSession, settings: Settings, rows: DataFrame, batch_id: int, app_id: str,
                  ds: str | None = None) -> BatchResult:
    """Clean one micro-batch of landing rows and write it: the gold.user_recent MERGE, then the silver appends
    (idempotent per ``app_id`` and ``batch_id``). ``ds`` defaults to today's UTC date.

    A crash anywhere leaves a state that the replay of the batch repairs: the replay classifies the rows the
    same way (those silver already holds come back as duplicates, which the MERGE source includes, as silver
    holds them), the MERGE is idempotent, and Delta skips an append it already has.

    The intermediate frames are local checkpoints (computed once, lineage cut): each later query then plans
    over a few rows instead of re-analysing the whole cleaning plan, which is most of a small batch's time.
    """
    ds = ds or dt.datetime.now(dt.UTC).date().isoformat()
    key = cleaning.id_key(settings)
    bronze = as_bronze(rows, ds).localCheckpoint()  # the files are read once; row ids fixed

    # silver rows that share an event id with this batch (the duplicates, and their content for the MERGE),
    # read once before this batch writes anything
    seen: DataFrame | None = None
    if lakehouse.exists(spark, settings, tables.SILVER_EVENTS):
        ids = bronze.select(cleaning.event_id_column().alias("event_id")).distinct()
        seen = (lakehouse.read(spark, settings, tables.SILVER_EVENTS)
                .select("event_id", "user_id", "item_id", "event_type", "ts")
                .join(ids, "event_id", "left_semi").localCheckpoint())
    classified = cleaning.classify(bronze, settings, ds, seen.select("event_id") if seen is not None else None)
    classified = _with_file_detail(classified).localCheckpoint()
    kept, quarantined, duplicates, reasons = cleaning.count_statuses(classified)

    kept_rows = cleaning.silver_rows(classified, key, ds).localCheckpoint()  # pseudonymised once

    # the MERGE first (freshness: serving reads gold.user_recent), then the appends. Its source is every
    # valid event of the batch: the kept rows, and each duplicate as the row silver already holds
    valid = kept_rows.select("event_id", "user_id", "item_id", "event_type", "ts")
    if seen is not None and duplicates:
        dup_ids = (classified.where(F.col("_status") == cleaning.STATUS_DUPLICATE)
                   .select(F.col("_event_id").alias("event_id")))
        valid = valid.unionByName(seen.join(dup_ids, "event_id", "left_semi"))
    users, store_users, store_error = 0, 0, None
    if kept or duplicates:
        valid = valid.dropDuplicates(["event_id"]).localCheckpoint()
        # the online store first (what the server reads per request), then gold.user_recent; a store that cannot
        # be reached costs its freshness only, never the batch
        from liverec.online_store import StoreUnavailable

        try:
            store_users = push_recent(settings, valid, settings.stream.recent_items)
        except StoreUnavailable as err:
            store_error = str(err)
        users = merge_recent(spark, settings, valid, settings.stream.recent_items)

    txn = (app_id, batch_id)
    if kept:
        lakehouse.append(spark, settings, tables.SILVER_EVENTS, kept_rows, txn)
    if quarantined:
        lakehouse.append(spark, settings, tables.SILVER_QUARANTINE, cleaning.quarantine_rows(classified, key, ds),
                         txn)
    return BatchResult(batch_id, ds, kept + quarantined + duplicates, kept, quarantined, duplicates, users, reasons,
                       store_users, store_error)


# --------------------------------------------------------------------------- the query

@dataclass
class StreamState:
    """What the running query's batches share with the thread that started it."""

    progress: Progress
    on_batch: Callable[[BatchResult, float], None] | None = None
    app_id: str = ""
    ready: threading.Event = field(default_factory=threading.Event)
    # running sums over the batches this process ran (a stream runs for days: no per-batch list)
    sums: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("batches", "rows_in", "kept", "quarantined", "duplicates", "users_merged", "store_users", "store_errors"), 0))

    def add(self, result: BatchResult) -> None:
        self.sums["batches"] += 1
        for key in ("rows_in", "kept", "quarantined", "duplicates", "users_merged", "store_users"):
            self.sums[key] += getattr(result, key)
        self.sums["store_errors"] += result.store_error is not None

    def totals(self) -> dict[str, int]:
        return dict(self.sums)


def check_settings(settings: Settings) -> None:
    conf = settings.stream
    if conf.format not in FORMATS:
        raise InputError(f"stream.format must be one of {', '.join(FORMATS)}, got '{conf.format}'")
    if min(conf.trigger_seconds, conf.max_files_per_trigger, conf.recent_items, conf.shuffle_partitions,
           conf.snapshot_partitions) <= 0:
        raise InputError("stream.trigger_seconds, max_files_per_trigger, recent_items, shuffle_partitions and "
                         "snapshot_partitions must be positive")


def start(spark: SparkSession, settings: Settings, landing: str, once: bool, state: StreamState) -> StreamingQuery:
    """Start the query over ``landing`` (created when it is a missing local folder). ``once``: trigger
    availableNow (every file there now, in batches of ``stream.max_files_per_trigger``, then stop)."""
    check_settings(settings)
    conf = settings.stream
    if "://" not in landing or landing.startswith("file://"):
        Path(landing.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    rows = read_landing(spark, landing, conf.format, conf.max_files_per_trigger)

    def handle(df: DataFrame, batch_id: int) -> None:
        if not state.ready.wait(300):
            raise RuntimeError("stream_events: the query's id never reached its micro-batch handler")
        session = df.sparkSession  # the query's own session (a clone of the job's)
        session.conf.set("spark.sql.shuffle.partitions", str(conf.shuffle_partitions))
        session.conf.set("spark.databricks.delta.snapshotPartitions", str(conf.snapshot_partitions))
        state.progress.restart_clock()
        started = time.monotonic()
        result = process_batch(session, settings, df, batch_id, state.app_id)
        seconds = time.monotonic() - started
        state.add(result)
        state.progress.step("batch", result.rows_in, id=batch_id, kept=result.kept, quarantined=result.quarantined,
                            duplicates=result.duplicates, users_merged=result.users_merged,
                            store_users=result.store_users, ds=result.ds)
        if result.store_error:
            state.progress.info(f"warning: the online store was not written ({result.store_error}); these "
                                "events reach the server with the next nightly publish_online (they are in silver)")
        if state.on_batch is not None:
            state.on_batch(result, seconds)

    writer = (rows.writeStream.queryName(QUERY_NAME).foreachBatch(handle)
              .option("checkpointLocation", tables.stream_checkpoint(settings)))
    if once:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{max(1, round(conf.trigger_seconds * 1000))} milliseconds")
    query = writer.start()
    # the query id is stored in the checkpoint: stable across restarts, new for a new checkpoint (whose batch
    # ids start again at 0, so an id tied to the path alone would make Delta skip every new append)
    state.app_id = f"liverec-stream-events-{query.id}"
    state.ready.set()
    return query


def stop_between_batches(query: StreamingQuery, wait_seconds: float = 120.0) -> None:
    """Stop ``query`` when no micro-batch is running (or after ``wait_seconds``); a batch cut short would be
    replayed on restart anyway, idempotently."""
    deadline = time.monotonic() + wait_seconds
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.1)
    query.stop()


def run(spark: SparkSession, settings: Settings, landing: str, once: bool, timeout: float | None,
        state: StreamState) -> dict[str, Any]:
    """Run the query until it ends (``once``), ``timeout`` seconds pass, or forever; returns the totals."""
    query = start(spark, settings, landing, once, state)
    state.progress.info(f"watching {landing} ({settings.stream.format}), checkpoint "
                        f"{tables.stream_checkpoint(settings)}, query {query.id}")
    if timeout is None:
        query.awaitTermination()
    elif not query.awaitTermination(timeout):
        stop_between_batches(query)
    if query.exception() is not None:
        query.awaitTermination()  # raises the batch's error
    return {**state.totals(), "query_id": str(query.id)}
