"""Impressions: what was shown, to whom, by which policy and with which probability, and the feedback that followed.

Every online answer (``liverec.online.OnlineScorer``) and every nightly list (gold.recommendations) is an impression
per shown item: ``IMPRESSION_FIELDS``. The server does not write tables: :class:`ImpressionLog` buffers the rows
and writes them as JSON-lines files into the impressions landing folder (``tables.impressions_landing``), each
file written under a hidden name and renamed into place, so a reader never sees half a file. ``collect_feedback``
(``liverec.stages.feedback``) reads the new files with Structured Streaming (the same file-source-and-checkpoint
path as ``stream_events``), adds the nightly lists of its ds, and MERGEs both into silver.impressions on
``impression_id`` (:func:`merge`): delivery is at least once (a file copied twice, a batch replayed after a
crash), the table holds each impression once. Then :func:`attribute` joins the impressions of the ds to the
events that followed them into gold.feedback: an event of the same user on the same item within
``feedback.attribution_seconds`` after the impression, each event credited to the latest impression before it
(so one click is never counted twice); ``clicked`` when one of them is in ``feedback.click_events``.

``propensity`` is the probability that the policy that served the request shows exactly this list up to and
including this position (the prefix propensity; 1.0 for a deterministic list): what the off-policy estimators
(``liverec.offpolicy``) weigh by. A visitor's impressions (no user id) are kept but cannot be attributed.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

# one row per shown item: the impression's id (request id and position), the request, the pseudonymised user (null
# for a visitor), the item, its position (1 = first), the policy that chose the list (the ranker's version), the
# prefix propensity, the policy's score, where it was shown (SURFACES), whether the list was sampled by exploration,
# the candidates exploration drew from with their standardised scores, their ranker features (DENSE_FEATURES order)
# and the user's recent items the ranker read (on position 1 of an answer served with exploration on, the served
# list first; else null: what evaluate_offpolicy replays other policies on, and what the promotion gate's
# off-policy check re-scores with a new ranker), and when
IMPRESSION_FIELDS = ("impression_id", "request_id", "user_id", "item_id", "position", "policy", "propensity", "score",
                     "surface", "explored", "pool", "pool_scores", "pool_dense", "recent_items", "ts")
SURFACES = ("online", "nightly")
POOL_FIELDS = ("pool", "pool_scores", "pool_dense", "recent_items")  # on position 1 only
DENSE_DECIMALS = 6  # a logged feature's rounding (the ranker reads float32)


class Pool(NamedTuple):
    """What an exploring answer drew from: item ids (the served list first), their standardised scores, and, for
    re-scoring by another ranker, their dense feature rows and the recent items the ranker read."""

    items: list[str]
    scores: list[float]
    dense: list[list[float]] | None = None
    recent: list[str] | None = None


def impression_id(request_id: str, position: int) -> str:
    return f"{request_id}:{position}"


def rows_of(request_id: str, user_id: str | None, shown: list[dict[str, Any]], policy: str, surface: str,
            explored: bool, ts: float, pool: Pool | tuple | None = None) -> list[dict[str, Any]]:
    """IMPRESSION_FIELDS rows of one answer: ``shown`` holds per position (in order) item_id, score, propensity;
    ``pool`` (a ``Pool``, or its fields as a tuple) goes on the first row."""
    when = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()
    first = dict.fromkeys(POOL_FIELDS)
    if pool is not None:
        pool = Pool(*pool)
        first.update(pool=list(pool.items), pool_scores=[float(x) for x in pool.scores],
                     pool_dense=None if pool.dense is None else [[round(float(v), DENSE_DECIMALS) for v in row]
                                                                 for row in pool.dense],
                     recent_items=None if pool.recent is None else [str(x) for x in pool.recent])
    rest = dict.fromkeys(POOL_FIELDS)
    return [{"impression_id": impression_id(request_id, p), "request_id": request_id, "user_id": user_id,
             "item_id": s["item_id"], "position": p, "policy": policy, "propensity": float(s["propensity"]),
             "score": float(s["score"]), "surface": surface, "explored": explored,
             **(first if p == 1 else rest), "ts": when}
            for p, s in enumerate(shown, start=1)]


class ImpressionLog:
    """Buffers impression rows and writes them as JSON-lines files into ``folder``: every ``flush_seconds`` (a
    background thread), when ``flush_rows`` are waiting, and on ``close``. A file is written as ``.<name>.tmp`` and
    renamed to ``<name>.jsonl`` (Spark's file source skips hidden files), named by host, process and a sequence
    number, so several servers can share a folder. A write that fails (disk full, folder gone) is logged and
    counted (``failed_rows``); the rows are dropped, never the request."""

    def __init__(self, folder: str | Path, flush_seconds: float = 1.0, flush_rows: int = 5000):
        self.folder = Path(folder)
        self.flush_seconds, self.flush_rows = float(flush_seconds), max(int(flush_rows), 1)
        self.written_rows = self.failed_rows = self.files = 0
        self._rows: list[bytes] = []
        self._lock = threading.Lock()
        self._seq = 0
        self._prefix = f"impressions-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="impression-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # what is waiting when the process ends is written, not lost

    def add(self, rows: list[dict[str, Any]]) -> None:
        import orjson

        lines = [orjson.dumps(r) for r in rows]
        with self._lock:
            self._rows.extend(lines)
            full = len(self._rows) >= self.flush_rows
        if full:
            self.flush()

    def flush(self) -> int:
        """Write what is waiting as one file; returns the rows written."""
        with self._lock:
            rows, self._rows = self._rows, []
            if not rows:
                return 0
            self._seq += 1
            name = f"{self._prefix}-{self._seq:08d}"
        tmp = self.folder / f".{name}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(b"\n".join(rows) + b"\n")
            os.replace(tmp, self.folder / f"{name}.jsonl")
        except OSError as err:
            self.failed_rows += len(rows)
            log.warning("could not write %d impressions to %s: %s", len(rows), self.folder, err)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return 0
        self.written_rows += len(rows)
        self.files += 1
        return len(rows)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()


def open_log(folder: str | None, flush_seconds: float, flush_rows: int) -> ImpressionLog | None:
    """The server's impression log: None when ``folder`` is empty or ``off`` (impressions not logged)."""
    if not folder or folder == "off":
        return None
    if "://" in folder and not folder.startswith("file://"):  # the servers write files, not object-store keys
        log.warning("impressions not logged: %s is not a local or mounted folder (set feedback.landing to one, or "
                    "LIVEREC_IMPRESSIONS)", folder)
        return None
    return ImpressionLog(folder.removeprefix("file://"), flush_seconds, flush_rows)


# --------------------------------------------------------------------------- Spark: landing -> tables

def landing_schema() -> Any:
    from pyspark.sql.types import (
        ArrayType,
        BooleanType,
        DoubleType,
        FloatType,
        IntegerType,
        StringType,
        StructField,
        StructType,
    )

    types = {"position": IntegerType(), "propensity": DoubleType(), "score": DoubleType(), "explored": BooleanType(),
             "pool": ArrayType(StringType()), "pool_scores": ArrayType(DoubleType()),
             "pool_dense": ArrayType(ArrayType(FloatType())), "recent_items": ArrayType(StringType())}
    return StructType([StructField(c, types.get(c, StringType())) for c in IMPRESSION_FIELDS])


def typed(df: Any) -> Any:
    """Landing rows (ts an ISO-8601 string) as silver.impressions rows: ts a timestamp, ds its date (the session's
    time zone, UTC)."""
    from pyspark.sql import functions as F

    return (df.select(*[c for c in IMPRESSION_FIELDS if c != "ts"], F.to_timestamp("ts").alias("ts"))
            .withColumn("ds", F.date_format("ts", "yyyy-MM-dd")))


def valid() -> Any:
    """A row with an id, an item, a position from 1, a time and a propensity in (0, 1] (the others are skipped
    and counted)."""
    from pyspark.sql import functions as F

    return (F.col("impression_id").isNotNull() & F.col("item_id").isNotNull() & F.col("position").isNotNull()
            & (F.col("position") >= 1) & F.col("ts").isNotNull() & (F.col("propensity") > 0)
            & (F.col("propensity") <= 1.0))


def nightly(recs: Any, ds: str, ts: dt.datetime) -> Any:
    """gold.recommendations rows of ``ds`` as impressions: one request per user and ds, propensity 1 (the nightly
    list is deterministic), policy its ``model_version``, shown at ``ts``."""
    from pyspark.sql import functions as F

    request = F.concat_ws(":", F.lit("nightly"), F.lit(ds), "user_id")
    return (recs.where(F.col("ds") == ds)
            .select(F.concat_ws(":", request, F.col("rank").cast("string")).alias("impression_id"),
                    request.alias("request_id"), "user_id", "item_id", F.col("rank").alias("position"),
                    F.col("model_version").alias("policy"), F.lit(1.0).alias("propensity"), "score",
                    F.lit("nightly").alias("surface"), F.lit(False).alias("explored"),
                    F.lit(None).cast("array<string>").alias("pool"), F.lit(None).cast("array<double>").alias("pool_scores"),
                    F.lit(None).cast("array<array<float>>").alias("pool_dense"),
                    F.lit(None).cast("array<string>").alias("recent_items"),
                    F.lit(ts).cast("timestamp").alias("ts"), F.lit(ts.strftime("%Y-%m-%d")).alias("ds")))


def merge(spark: Any, settings: Any, rows: Any) -> dict[str, int]:
    """MERGE impression rows into silver.impressions on impression_id (and ds): an impression the table holds, or
    one repeated within ``rows``, is not inserted again. Returns {"rows": in, "inserted": new}."""
    from delta.tables import DeltaTable

    from liverec import lakehouse, tables

    data = lakehouse.conform(rows, tables.SILVER_IMPRESSIONS).dropDuplicates(["impression_id"]).cache()
    try:
        n = data.count()
        if n == 0:
            return {"rows": 0, "inserted": 0}
        if not lakehouse.exists(spark, settings, tables.SILVER_IMPRESSIONS) or set(data.columns) - set(
                lakehouse.read(spark, settings, tables.SILVER_IMPRESSIONS).columns):
            # creates the table, or adds the columns a later release logs (MERGE would not insert them)
            lakehouse.append(spark, settings, tables.SILVER_IMPRESSIONS, data.limit(0))
        target = DeltaTable.forPath(spark, tables.table_path(settings, tables.SILVER_IMPRESSIONS))
        (target.alias("t").merge(data.alias("s"), "t.ds = s.ds AND t.impression_id = s.impression_id")
         .whenNotMatchedInsertAll().execute())
        metrics = target.history(1).collect()[0]["operationMetrics"] or {}
        return {"rows": n, "inserted": int(metrics.get("numTargetRowsInserted", 0))}
    finally:
        data.unpersist()


def attribute(impressions: Any, events: Any, window_seconds: int, click_events: tuple[str, ...]) -> Any:
    """gold.feedback rows: every impression of ``impressions`` with ``clicked`` (an attributed event in
    ``click_events``), ``events`` (how many events were attributed to it), ``first_event_ts`` and
    ``reward`` (1.0 when clicked, else 0.0). An event of the same user on the same item in (ts, ts + window]
    is attributed to the latest such impression before it."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    imp = impressions.where(F.col("user_id").isNotNull())
    ev = events.select("user_id", "item_id", F.col("event_id"), F.col("event_type"), F.col("ts").alias("ev_ts"))
    pairs = (imp.select("impression_id", "user_id", "item_id", "ts").join(ev, ["user_id", "item_id"])
             .where((F.col("ev_ts") > F.col("ts"))
                    & (F.col("ev_ts") <= F.col("ts") + F.expr(f"INTERVAL {int(window_seconds)} SECONDS"))))
    latest = Window.partitionBy("event_id", "user_id", "item_id").orderBy(F.desc("ts"), F.desc("impression_id"))
    credited = (pairs.withColumn("n", F.row_number().over(latest)).where(F.col("n") == 1)
                .groupBy("impression_id").agg(
                    F.count("*").alias("events"),
                    F.max(F.col("event_type").isin(*click_events).cast("int")).alias("clicked_i"),
                    F.min("ev_ts").alias("first_event_ts")))
    return (impressions.join(credited, "impression_id", "left")
            .select(*IMPRESSION_FIELDS, F.coalesce("clicked_i", F.lit(0)).cast("boolean").alias("clicked"),
                    F.coalesce("events", F.lit(0)).alias("events"), "first_event_ts",
                    F.coalesce("clicked_i", F.lit(0)).cast("double").alias("reward"), "ds"))


def replayable(feedback: Any, features: bool = False) -> Any:
    """One row per online answer of gold.feedback rows that off-policy evaluation can replay (its candidate pool was
    logged: exploration was on; positions 1..k, every shown item in the pool), in Spark: request_id, policy,
    clicked array<double> and propensity array<double> by position, shown array<int> (each shown item's index in
    the pool) and pool_scores; with ``features``, only the answers that logged their pool's features, and pool,
    pool_dense and recent_items besides (what another ranker re-scores)."""
    from pyspark.sql import functions as F

    per = (feedback.where(F.col("surface") == "online").groupBy("request_id").agg(
        F.sort_array(F.collect_list(F.struct("position", F.col("clicked").cast("double").alias("clicked"),
                                             "propensity", "item_id"))).alias("rows"),
        F.first("policy", ignorenulls=True).alias("policy"),
        *[F.first(c, ignorenulls=True).alias(c) for c in POOL_FIELDS]))
    shown = F.transform("rows", lambda r: (F.array_position("pool", r["item_id"]) - 1).cast("int"))
    ok = (F.col("pool").isNotNull() & F.col("pool_scores").isNotNull()
          & (F.col("rows")[F.size("rows") - 1]["position"] == F.size("rows")))
    if features:
        ok = ok & F.col("pool_dense").isNotNull() & (F.size("pool_dense") == F.size("pool"))
    return (per.where(ok)
            .select("request_id", "policy", F.col("rows.clicked").alias("clicked"),
                    F.col("rows.propensity").alias("propensity"), shown.alias("shown"), "pool_scores",
                    *(["pool", "pool_dense", F.coalesce("recent_items", F.array().cast("array<string>"))
                       .alias("recent_items")] if features else []))
            .where(F.array_min("shown") >= 0))
