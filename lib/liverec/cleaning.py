"""bronze.events -> silver.events + silver.quarantine, with nothing lost.

Every bronze row gets exactly one status: ``ok`` (to silver.events), ``quarantine`` with a reason, or
``duplicate`` (the same event as a row that is kept). The checks run in a fixed order and the first
that fails names the reason, so each rejected row has one reason:

malformed, missing_user_id, missing_item_id, the source's own reason (e.g. non_product_code),
missing_event_type, missing_ts, bad_ts, ts_too_old, future_ts, unknown_event_type,
non_numeric_value, non_numeric_price, value_out_of_range, then the bot rules over the valid rows (bot_user: a
minute or a day at an inhuman rate; bot_sustained_rate: an hour at a rate no real user of the reference data
reaches; bot_cadence: a long run of actions at near-constant intervals), then shilling (a campaign: fresh accounts
that crowd onto one item within a few hours, far beyond what the item's share of users predicts), then duplicates (by
event_id, else by a hash of the row's content, within the run and against the other dates already in silver.events).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from liverec.config import CleanSettings, Settings
from liverec.errors import ConfigError

STATUS_OK = "ok"
STATUS_QUARANTINE = "quarantine"
STATUS_DUPLICATE = "duplicate"

REASONS = (
    "malformed", "missing_user_id", "missing_item_id", "missing_event_type", "missing_ts", "bad_ts",
    "ts_too_old", "future_ts", "unknown_event_type", "non_numeric_value", "non_numeric_price",
    "value_out_of_range", "bot_user", "bot_sustained_rate", "bot_cadence", "shilling",
)


# --------------------------------------------------------------------------- pseudonymisation

def id_key(settings: Settings) -> bytes:
    """The HMAC key from the environment; without one, only demo mode may go on (with the public key)."""
    key = os.environ.get(settings.ids.key_env, "")
    if key:
        return key.encode("utf-8")
    if settings.demo_mode:
        return settings.ids.demo_key.encode("utf-8")
    raise ConfigError(
        f"environment variable {settings.ids.key_env} is not set: it holds the key that pseudonymises user ids. "
        "Set it (e.g. export LIVEREC_ID_KEY=$(openssl rand -hex 32)), or run with --set demo_mode=true on demo data")


def pseudonymise_value(raw: str, key: bytes) -> str:
    """HMAC-SHA256 of a raw id, as hex: the same function the Spark column uses."""
    return hmac.new(key, raw.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonymise(col: Column, key: bytes) -> Column:
    """HMAC-SHA256 (hex) of a string column; nulls stay null. The key travels inside the UDF's closure,
    so it never shows in a query plan or the Spark UI."""

    @F.pandas_udf("string")
    def _hmac(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in _block(key)))
        outer = hashlib.sha256(bytes(b ^ 0x5C for b in _block(key)))
        for s in batches:
            out = []
            for v in s:
                if v is None or (isinstance(v, float) and pd.isna(v)):
                    out.append(None)
                    continue
                i = inner.copy()
                i.update(v.encode("utf-8"))
                o = outer.copy()
                o.update(i.digest())
                out.append(o.hexdigest())
            yield pd.Series(out, dtype="object")

    return _hmac(col)


def _block(key: bytes) -> bytes:
    """RFC 2104 key block for SHA-256 (64 bytes)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    return key.ljust(64, b"\0")


# --------------------------------------------------------------------------- classification

def _blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c) == "")


def parse_ts(ts: Column) -> Column:
    """Epoch seconds (or milliseconds when > 1e11) or ISO-8601 text -> timestamp; anything else -> null."""
    num = ts.try_cast("double")
    seconds = F.when(F.abs(num) > 1e11, num / 1000.0).otherwise(num)
    from_epoch = F.when(num.isNotNull() & ~F.isnan(num), F.timestamp_micros((seconds * 1e6).cast("long")))
    return F.when(num.isNotNull(), from_epoch).otherwise(F.trim(ts).try_cast("timestamp"))


def _finite(c: Column) -> Column:
    return c.isNotNull() & ~F.isnan(c) & (F.abs(c) != float("inf"))


def ds_window_end(ds: str, tolerance_seconds: int) -> dt.datetime:
    """Latest plausible event time for a run date: the end of ds plus the tolerance (deterministic, so a
    rerun of the date judges the same rows the same way)."""
    day = dt.datetime.strptime(ds, "%Y-%m-%d")
    return day + dt.timedelta(days=1, seconds=tolerance_seconds)


def reason_column(conf: CleanSettings, ds: str) -> Column:
    """The first failing row-level check, or null when the row is valid."""
    etype = F.lower(F.trim("event_type"))
    value, price = F.col("_value"), F.col("_price")
    min_ts = dt.datetime.fromisoformat(conf.min_ts)
    max_ts = ds_window_end(ds, conf.future_tolerance_seconds)
    known = list(conf.event_weights)
    return (
        F.when(F.col("raw_record").isNotNull(), "malformed")
        .when(_blank(F.col("user_id")), "missing_user_id")
        .when(_blank(F.col("item_id")), "missing_item_id")
        .when(F.col("source_reject").isNotNull(), F.col("source_reject"))
        .when(_blank(F.col("event_type")), "missing_event_type")
        .when(_blank(F.col("ts")), "missing_ts")
        .when(F.col("_ts").isNull(), "bad_ts")
        .when(F.col("_ts") < F.lit(min_ts), "ts_too_old")
        .when(F.col("_ts") > F.lit(max_ts), "future_ts")
        .when(~etype.isin(known), "unknown_event_type")
        .when(~_blank(F.col("value")) & ~_finite(value), "non_numeric_value")
        .when(~_blank(F.col("price")) & ~_finite(price), "non_numeric_price")
        .when(F.abs(value) > value_limit(conf, etype), "value_out_of_range")
    )


def value_limit(conf: CleanSettings, event_type: Column) -> Column:
    """The largest |value| an event of ``event_type`` may have: ``clean.value_limits`` of its type, else
    ``clean.max_abs_value``."""
    if not conf.value_limits:
        return F.lit(float(conf.max_abs_value))
    limits = F.create_map(*[x for k, v in conf.value_limits.items() for x in (F.lit(k.lower()), F.lit(float(v)))])
    return F.coalesce(limits[event_type], F.lit(float(conf.max_abs_value)))


_PEAKS = ("user_id string, peak_minute long, peak_day long, peak_hour long, cv double, cv_mean_gap double")


def user_peaks(micros: np.ndarray, user_codes: np.ndarray, n: int, max_mean_gap: float
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The bot rules' figures per user from their actions' times (microseconds since the epoch, UTC) in numpy:
    (the users' codes, {peak_minute, peak_day, peak_hour, cv, cv_mean_gap}). Actions at one instant count once;
    minutes and days are calendar (UTC) ones, hours are counted on two grids (calendar hours, and hours shifted by
    30 minutes); cv is the lowest coefficient of variation of the gaps of ``n`` consecutive actions (``n - 1`` gaps
    in whole seconds) whose mean gap is positive and at most ``max_mean_gap``, cv_mean_gap that run's mean gap
    (the lowest mean among runs with the lowest cv); NaN where no run qualifies."""
    order = np.lexsort((micros, user_codes))
    c, m = user_codes[order], micros[order]
    first = np.ones(len(c), dtype=bool)
    first[1:] = (c[1:] != c[:-1]) | (m[1:] != m[:-1])
    c, m = c[first], m[first]
    users, starts = np.unique(c, return_index=True)  # c is sorted: each user's actions are one slice
    secs = np.floor_divide(m, 1_000_000)

    def peak(key: np.ndarray) -> np.ndarray:
        """The most actions of one user under one key (key ascending within each user)."""
        new = np.ones(len(c), dtype=bool)
        new[1:] = (c[1:] != c[:-1]) | (key[1:] != key[:-1])
        runs = np.flatnonzero(new)
        sizes = np.diff(np.append(runs, len(c)))
        return np.maximum.reduceat(sizes, np.searchsorted(runs, starts))

    out: dict[str, np.ndarray] = {
        "peak_minute": peak(np.floor_divide(m, 60_000_000)),
        "peak_day": peak(np.floor_divide(secs, 86_400)),
        "peak_hour": np.maximum(peak(np.floor_divide(secs, 3600)), peak(np.floor_divide(secs + 1800, 3600))),
    }
    # runs of n actions (n - 1 gaps) from running sums: the gaps of the run ending at action i sum to
    # t[i] - t[i - n + 1], their squares to a difference of the running sum of squared gaps (a user's first action
    # adds 0); int64 sums may wrap, their differences inside one user are exact. cv = sqrt(k q - s^2) / s, k = n - 1
    k = n - 1
    cv = np.full(len(users), np.nan)
    cv_mean = np.full(len(users), np.nan)
    if len(c) > k:
        g = np.diff(secs, prepend=secs[:1])
        g[starts] = 0
        q_run = np.cumsum(g * g)
        end = np.arange(k, len(c))
        same = c[end] == c[end - k]
        s_run = secs[end] - secs[end - k]
        mean = s_run / k
        ok = same & (s_run > 0) & (mean <= max_mean_gap)
        end, s_run, mean = end[ok], s_run[ok], mean[ok]
        q = q_run[end] - q_run[end - k]
        run_cv = np.sqrt(np.maximum(q * k - s_run * s_run, 0).astype(np.float64)) / s_run
        who = np.searchsorted(users, c[end])
        best = np.lexsort((mean, run_cv, who))  # by user, then cv, then mean: each user's first is its best run
        who, run_cv, mean = who[best], run_cv[best], mean[best]
        head = np.ones(len(who), dtype=bool)
        head[1:] = who[1:] != who[:-1]
        cv[who[head]], cv_mean[who[head]] = run_cv[head], mean[head]
    out["cv"], out["cv_mean_gap"] = cv, cv_mean
    return users, out


def bot_users(valid: DataFrame, conf: CleanSettings) -> DataFrame:
    """Users the bot rules flag, from their distinct-timestamp actions (several lines of one basket at one instant
    are one action, so a large invoice is not a bot). Returns (user_id, bot_reason, bot_detail), the first rule
    that holds naming the reason:

    - bot_user: more than ``bot_max_actions_per_minute`` in a calendar minute or ``bot_max_actions_per_day`` in a
      UTC day;
    - bot_sustained_rate: more than ``bot_max_actions_per_hour`` in an hour, counted on two grids (calendar hours,
      and hours shifted by 30 minutes), so an hour-long run at a steady rate r has at least 45 r actions in one of
      them;
    - bot_cadence: ``bot_cadence_actions`` consecutive actions whose gaps have a mean of at most
      ``bot_cadence_max_mean_gap_seconds`` and a coefficient of variation (standard deviation / mean) below
      ``bot_cadence_max_cv``: a script's steady pace; people are bursty.

    The actions are shuffled once by user and each partition's figures computed at once in numpy
    (:func:`user_peaks`, over Arrow): the same rules as Spark group-bys and windows took 4x the time on a 20M-row
    day (the actions' shuffle read once per rule, a sort for the cadence window).
    """
    n = int(conf.bot_cadence_actions)
    if n < 2:
        raise ConfigError(f"clean.bot_cadence_actions must be at least 2 (a run has n - 1 gaps), got {n}")
    max_mean_gap = float(conf.bot_cadence_max_mean_gap_seconds)

    def partition_peaks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = pa.Table.from_batches(list(batches), schema=pa.schema([("user_id", pa.string()), ("t", pa.int64())]))
        if table.num_rows == 0:
            return
        ids = table.column("user_id").combine_chunks().dictionary_encode()
        users, figures = user_peaks(table.column("t").to_numpy(), ids.indices.to_numpy(), n, max_mean_gap)
        columns = {k: pa.array(v, mask=np.isnan(v)) if v.dtype.kind == "f" else pa.array(v) for k, v in figures.items()}
        yield pa.RecordBatch.from_pydict({"user_id": ids.dictionary.take(pa.array(users)), **columns})

    peaks = (valid.select("user_id", F.unix_micros("_ts").alias("t")).repartition("user_id")
             .mapInArrow(partition_peaks, _PEAKS))
    burst = (F.col("peak_minute") > conf.bot_max_actions_per_minute) | (F.col("peak_day") > conf.bot_max_actions_per_day)
    sustained = F.col("peak_hour") > conf.bot_max_actions_per_hour
    cadence = F.coalesce(F.col("cv") < conf.bot_cadence_max_cv, F.lit(False))  # null: no run qualifies
    return (peaks.where(burst | sustained | cadence).select(
        "user_id",
        F.when(burst, "bot_user").when(sustained, "bot_sustained_rate").otherwise("bot_cadence").alias("bot_reason"),
        F.when(burst, F.format_string("peak %d actions/minute, %d actions/day", "peak_minute", "peak_day"))
        .when(sustained, F.format_string("peak %d actions/hour", "peak_hour"))
        .otherwise(F.format_string(f"{n} actions %.1f s apart on average, gaps' coefficient of variation %.3f",
                                   "cv_mean_gap", "cv")).alias("bot_detail")))


_NO_SHILLS = "user_id string, shill_reason string, shill_detail string"


def shilling_on(conf: CleanSettings) -> bool:
    """Whether the shilling rule runs: ``clean.shilling_enabled`` with a positive account minimum and window."""
    return bool(conf.shilling_enabled) and conf.shilling_min_accounts > 0 and conf.shilling_window_seconds > 0


def shilling_windows(valid: DataFrame, conf: CleanSettings) -> tuple[DataFrame, DataFrame]:
    """(fresh (user_id, item_id, win) pairs, and the (item_id, win) windows with at least
    ``shilling_min_accounts`` fresh accounts: accounts, lift): what :func:`shilling_users` thresholds."""
    w = int(conf.shilling_window_seconds)
    secs = F.col("_ts").cast("long")
    touches = (valid.select("user_id", "item_id", secs.alias("t"))
               .select("user_id", "item_id", F.explode(F.array(
                   F.floor(F.col("t") / w), F.floor((F.col("t") + w // 2) / w) + F.lit(10**12))).alias("win")))
    users = valid.groupBy("user_id").agg(((F.max(secs) - F.min(secs)) <= conf.shilling_max_account_span_seconds)
                                         .alias("fresh"))
    total = users.agg(F.count("*").alias("n_users"))  # one row, joined below (no extra job here)
    item_users = valid.groupBy("item_id").agg(F.countDistinct("user_id").alias("n_item"))
    window_users = touches.groupBy("win").agg(F.countDistinct("user_id").alias("n_window"))
    pairs = touches.distinct()
    in_window = pairs.groupBy("item_id", "win").agg(F.count("*").alias("n_item_window"))
    fresh_pairs = pairs.join(users.where("fresh"), "user_id", "left_semi")
    expected = ((F.col("n_item") - F.col("n_item_window") + 1) * F.col("n_window")
                / F.greatest(F.col("n_users") - F.col("n_window"), F.lit(1)))
    windows = (fresh_pairs.groupBy("item_id", "win").agg(F.count("*").alias("accounts"))
               .where(F.col("accounts") >= max(int(conf.shilling_min_accounts), 1))
               .join(in_window, ["item_id", "win"]).join(item_users, "item_id").join(window_users, "win")
               .crossJoin(F.broadcast(total))
               .select("item_id", "win", "accounts", (F.col("accounts") / expected).alias("lift")))
    return fresh_pairs, windows


def shilling_users(valid: DataFrame, conf: CleanSettings) -> DataFrame:
    """Accounts of a campaign that pushes (or nukes) one item: returns (user_id, shill_reason, shill_detail).

    Within a window of ``shilling_window_seconds`` (two grids, the second shifted by half a window, so a campaign
    shorter than half a window lies whole in one of them), the *fresh* accounts (every row of theirs in these rows
    within ``shilling_max_account_span_seconds``) that touch an item are counted. The window is a campaign on the
    item when they are at least ``shilling_min_accounts`` and at least ``shilling_min_lift`` times what the item's
    users outside the window predict for it: ``(n_out + 1) * U_w / max(U - U_w, 1)`` (n_out: the item's users not
    in the window, U_w: users active in the window, U: all users in these rows; the + 1 keeps an item seen nowhere
    else from an expectation of zero). Its fresh accounts are flagged. The rule runs only when :func:`shilling_on`
    (``clean.shilling_enabled``, off by default: conf/base.yaml says why); otherwise no user is returned.

    It sees only the rows it is given (one ds of bronze in the clean job, one micro-batch in the stream): an account
    with visible activity older than the span, or a campaign slower than ``shilling_min_accounts`` per window, is not
    caught; in a daily batch every account's rows span at most a day, so there every account is fresh (the span
    condition only spares long-standing users in a batch that covers days); a campaign on an item new that day looks
    like its launch; when every row shares one timestamp (FilmTrust) a window holds every user and the lift is below
    1. Cost: group-bys over (user, item, window) and (item, window), no user x user comparison.
    """
    if not shilling_on(conf):
        return valid.sparkSession.createDataFrame([], _NO_SHILLS)
    fresh_pairs, windows = shilling_windows(valid, conf)
    campaigns = windows.where(F.col("lift") >= conf.shilling_min_lift)
    hours = conf.shilling_window_seconds / 3600
    return (fresh_pairs.join(campaigns, ["item_id", "win"])
            .groupBy("user_id").agg(F.max_by(F.struct("item_id", "accounts", "lift"), "lift").alias("c"))
            .select("user_id", F.lit("shilling").alias("shill_reason"), F.format_string(
                f"one of %d fresh accounts on item %s within {hours:g} h, %.1fx what its other users predict",
                "c.accounts", "c.item_id", "c.lift").alias("shill_detail")))


def _flag_users(df: DataFrame, flagged: DataFrame, reason: str, detail: str) -> DataFrame:
    """The rows of the users in ``flagged`` (one row per user: user_id, ``reason``, ``detail``) that no earlier check
    rejected take its reason and detail. A left join keyed on a non-null user id: a row never multiplies."""
    df = df.join(F.broadcast(flagged), on="user_id", how="left")
    hit = F.col("_reason").isNull() & F.col(detail).isNotNull()
    return (df.withColumn("_detail", F.when(hit, F.col(detail)).otherwise(F.col("_detail")))
            .withColumn("_reason", F.when(hit, F.col(reason)).otherwise(F.col("_reason")))
            .drop(detail, reason))


def content_event_id(source: Column | str = "source") -> Column:
    """A stable id for a row without one: SHA-256 over its content (so exact repeats collide)."""
    fields = [F.coalesce(F.col(c), F.lit("\u2400")) for c in
              ("user_id", "item_id", "event_type", "value", "ts", "session_id", "price")]
    return F.sha2(F.concat_ws("\u241f", F.col(source) if isinstance(source, str) else source, *fields), 256)


def event_id_column() -> Column:
    """A bronze row's event id: the source's own, else :func:`content_event_id`."""
    return F.coalesce(F.trim("event_id"), content_event_id())


def classify(bronze: DataFrame, settings: Settings, ds: str, other_event_ids: DataFrame | None) -> DataFrame:
    """Add ``_status``, ``_reason``, ``_detail`` and parsed columns to every bronze row (row count kept)."""
    conf = settings.clean
    df = (bronze
          .withColumn("_ts", parse_ts(F.col("ts")))
          .withColumn("_value", F.col("value").try_cast("double"))
          .withColumn("_price", F.col("price").try_cast("double"))
          .withColumn("_event_id", event_id_column()))
    df = df.withColumn("_reason", reason_column(conf, ds)).withColumn(
        "_detail", F.when(F.col("_reason") == "future_ts", F.col("ts").cast("string")))

    valid = df.where(F.col("_reason").isNull())
    # the flagged users (a few) materialised once: the duplicate marks below and the caller's pass both read them
    df = _flag_users(df, bot_users(valid, conf).localCheckpoint(), "bot_reason", "bot_detail")
    if shilling_on(conf):  # off: no job, no join
        df = _flag_users(df, shilling_users(valid, conf).localCheckpoint(), "shill_reason", "shill_detail")

    # duplicates among the rows still valid: the first by row_id (then source) is kept, and an event id another
    # date (or the stream) already holds is a duplicate. Found on three narrow columns; only the ids that repeat
    # or were seen before meet the day's rows again, broadcast while there are at most
    # clean.broadcast_duplicate_ids of them, so the rows themselves are not shuffled (a join on the event id
    # shuffled every row of a 20M-row day; a window over whole rows shuffles and sorts them: 2x the time)
    still_valid = F.col("_reason").isNull()
    narrow = df.where(still_valid).select("_event_id", "row_id", "source")
    marks = (narrow.groupBy("_event_id")
             .agg(F.count("*").alias("_n"), F.min(F.struct("row_id", "source")).alias("_first"))
             .where(F.col("_n") > 1).drop("_n"))
    if other_event_ids is not None:
        seen = (narrow.select("_event_id").distinct()
                .join(other_event_ids.select(F.col("event_id").alias("_event_id")), "_event_id", "left_semi")
                .select("_event_id", F.lit(True).alias("_seen")))
        marks = marks.join(seen, "_event_id", "full")
    else:
        marks = marks.withColumn("_seen", F.lit(None).cast("boolean"))
    marks = marks.localCheckpoint()
    small = marks.count() <= conf.broadcast_duplicate_ids
    df = df.join(F.broadcast(marks) if small else marks, "_event_id", "left")
    repeat = F.col("_first").isNotNull() & (F.struct("row_id", "source") != F.col("_first"))
    duplicate = still_valid & (repeat | F.col("_seen").isNotNull())
    status = (F.when(F.col("_reason").isNotNull(), STATUS_QUARANTINE)
              .when(duplicate, STATUS_DUPLICATE).otherwise(STATUS_OK))
    return df.withColumn("_status", status).drop("_first", "_seen")


def for_writes(classified: DataFrame) -> DataFrame:
    """The classified rows narrowed to what :func:`count_statuses`, :func:`silver_rows` and :func:`quarantine_rows`
    read: parsed values only where a row is kept, raw ones only where it is quarantined, no bookkeeping columns.
    What the batch job materialises between counting and writing (a 20M-row day: count, silver.events' and
    silver.quarantine's rows 163 s from the whole rows, 97 s from these)."""
    kept, bad = F.col("_status") == STATUS_OK, F.col("_status") == STATUS_QUARANTINE
    return classified.select(
        "_status", "_reason", "_detail", "source", "row_id", "user_id", "item_id", "event_type", "session_id",
        *[F.when(kept, F.col(c)).alias(c) for c in ("_event_id", "_value", "_ts", "_price")],
        *[F.when(bad, F.col(c)).alias(c) for c in ("event_id", "value", "ts", "price")])


def pseudonymise_ids(frame: DataFrame, column: str, key: bytes, broadcast_max: int) -> DataFrame:
    """``frame`` with its string ``column`` of raw ids replaced by their pseudonyms (:func:`pseudonymise`), each
    distinct id hashed once: a day's rows repeat a user's id about a hundred times, and the Python UDF over every
    row was most of the silver write (32 s of 38 s on a 20M-row day). The (id, pseudonym) pairs are materialised
    once and joined back, broadcast while there are at most ``broadcast_max`` of them; nulls stay null, the row
    count and the column order are kept."""
    ids = frame.select(column).where(F.col(column).isNotNull()).distinct()
    pairs = ids.select(column, pseudonymise(F.col(column), key).alias("_pseudonym")).localCheckpoint()
    small = pairs.count() <= broadcast_max
    joined = frame.join(F.broadcast(pairs) if small else pairs, column, "left")
    return joined.select(*[F.col("_pseudonym").alias(c) if c == column else F.col(c) for c in frame.columns])


def silver_rows(classified: DataFrame, key: bytes, ds: str, broadcast_max: int | None = None) -> DataFrame:
    """The kept rows as silver.events. With ``broadcast_max`` (the batch job: ``ids.broadcast_pseudonyms``), user
    ids are pseudonymised once per distinct id (:func:`pseudonymise_ids`); without (a stream's small micro-batch,
    where two extra jobs cost more than they save), row by row."""
    ok = classified.where(F.col("_status") == STATUS_OK)
    user = F.trim("user_id") if broadcast_max is not None else pseudonymise(F.trim("user_id"), key)
    rows = ok.select(
        F.col("_event_id").alias("event_id"),
        user.alias("user_id"),
        F.trim("item_id").alias("item_id"),
        F.lower(F.trim("event_type")).alias("event_type"),
        F.col("_value").alias("value"),
        F.col("_ts").alias("ts"),
        "session_id",
        F.col("_price").alias("price"),
        "source",
        F.lit(ds).alias("ds"),
    )
    return rows if broadcast_max is None else pseudonymise_ids(rows, "user_id", key, broadcast_max)


def quarantine_rows(classified: DataFrame, key: bytes, ds: str) -> DataFrame:
    bad = classified.where(F.col("_status") == STATUS_QUARANTINE)
    return bad.select(
        F.col("_reason").alias("reason"), F.col("_detail").alias("detail"), "source", "row_id", "event_id",
        pseudonymise(F.trim("user_id"), key).alias("user_id"),
        "item_id", "event_type", "value", "ts", "session_id", "price", F.lit(ds).alias("ds"))


@dataclass
class Balance:
    """Where every input row went; ``holds`` is the nothing-lost check."""

    input_rows: int
    kept: int
    quarantined: int
    duplicates: int
    reasons: dict[str, int]

    @property
    def holds(self) -> bool:
        return (self.input_rows == self.kept + self.quarantined + self.duplicates
                and self.quarantined == sum(self.reasons.values()))

    def line(self) -> str:
        sign = "=" if self.holds else "!="
        return (f"balance: input {self.input_rows:,} {sign} silver {self.kept:,} + quarantine "
                f"{self.quarantined:,} + duplicates {self.duplicates:,}")


def count_statuses(classified: DataFrame) -> tuple[int, int, int, dict[str, int]]:
    """(kept, quarantined, duplicates, {reason: rows}) in one pass over the classified rows."""
    rows = classified.groupBy("_status", "_reason").count().collect()
    kept = sum(r["count"] for r in rows if r["_status"] == STATUS_OK)
    dup = sum(r["count"] for r in rows if r["_status"] == STATUS_DUPLICATE)
    reasons = {r["_reason"]: r["count"] for r in rows if r["_status"] == STATUS_QUARANTINE}
    return kept, sum(reasons.values()), dup, dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
