"""The cleaning job's bot rules on the real data sets: how many users (and rows) each rule quarantines.

    python benchmarks/bot_rules.py [--data ../shared/data]

MovieLens 100K, UCI Online Retail and FilmTrust are read by liverec's own readers and classified by
``liverec.cleaning.classify`` with the default conf and the shilling rule on (one Spark session, local[2]). Per data
set: the users and rows each bot reason quarantines (the target: none), and, measured here with numpy on the same
distinct-timestamp actions, the data's own peaks next to each threshold: the most actions of a user in any 60 minutes,
and the lowest coefficient of variation of ``clean.bot_cadence_actions`` consecutive gaps averaging at most
``clean.bot_cadence_max_mean_gap_seconds``. The shilling rule (a campaign of fresh accounts on one item) is reported
the same way, with the largest lift of any item-window that has ``clean.shilling_min_accounts`` fresh accounts
(``cleaning.shilling_windows``, what the rule compares with ``clean.shilling_min_lift``), and once more with the
fresh-account condition off (``shilling_max_account_span_seconds`` a century): how a daily batch, where every
account's rows span at most a day, would see the same rows. Writes benchmarks/results/bot_rules.{json,md}. """

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from _measure import machine, write_results

REPO = Path(__file__).resolve().parents[1]
DS = "2024-01-15"
BOT_REASONS = ("bot_user", "bot_sustained_rate", "bot_cadence", "shilling")
NO_SPAN = 100 * 365 * 86400


def peaks(users: np.ndarray, ts: np.ndarray, n: int, max_gap: float) -> tuple[int, float]:
    """(most actions of a user in any 60 minutes, lowest CV of n - 1 consecutive gaps with mean <= max_gap)."""
    order = np.lexsort((ts, users))
    users, ts = users[order], ts[order]
    bounds = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1, len(users)]
    best_hour, best_cv = 0, float("inf")
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        t = ts[a:b]
        best_hour = max(best_hour, int((np.searchsorted(t, t + 3600, side="left") - np.arange(len(t))).max()))
        gaps = np.diff(t).astype(float)
        if len(gaps) >= n - 1:
            c, c2 = np.cumsum(np.r_[0, gaps]), np.cumsum(np.r_[0, gaps ** 2])
            m = (c[n - 1:] - c[:-(n - 1)]) / (n - 1)
            sd = np.sqrt(np.maximum((c2[n - 1:] - c2[:-(n - 1)]) / (n - 1) - m ** 2, 0.0))
            ok = (m > 0) & (m <= max_gap)
            if ok.any():
                best_cv = min(best_cv, float((sd[ok] / m[ok]).min()))
    return best_hour, best_cv


def shilling_peak(valid, conf) -> float | None:
    """The largest lift of an item-window with at least clean.shilling_min_accounts fresh accounts (None: none)."""
    from pyspark.sql import functions as F

    from liverec import cleaning

    return cleaning.shilling_windows(valid, conf)[1].agg(F.max("lift")).first()[0]


def fmt(lift: float | None) -> str:
    return "-" if lift is None else f"{lift:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=REPO / ".liverec" / "bench-bots", help="scratch and lakehouse folder")
    args = ap.parse_args()

    from pyspark.sql import functions as F

    from liverec import cleaning, ingest, readers
    from liverec.config import load_settings
    from liverec.session import build_spark

    work = args.work
    settings = load_settings(overrides=[f"lakehouse_root={work / 'lakehouse'}", f"scratch_dir={work / 'scratch'}",
                                        "spark.shuffle_partitions=4", "demo_mode=true",
                                        "clean.shilling_enabled=true"])  # off by default: measured on
    conf = settings.clean
    spark = build_spark(settings, "bot_rules")
    sets = {
        "MovieLens 100K": lambda: readers.read_movielens(spark, str(args.data / "ml-100k")).events,
        "UCI Online Retail": lambda: readers.read_online_retail(
            spark, str(args.data / "uci-online-retail" / "online_retail.csv.xz"), str(work / "scratch")).events,
        "FilmTrust": lambda: readers.read_filmtrust(spark, str(args.data / "filmtrust"), f"{DS}T00:00:00Z").events,
    }
    rows = []
    for name, read in sets.items():
        bronze = ingest.to_bronze(read(), DS, name).cache()
        out = cleaning.classify(bronze, settings, DS, None).cache()
        flagged = {r["_reason"]: (r["users"], r["rows"]) for r in out.where(F.col("_reason").isin(*BOT_REASONS))
                   .groupBy("_reason").agg(F.countDistinct("user_id").alias("users"), F.count("*").alias("rows"))
                   .collect()}
        valid = out.where(F.col("_reason").isNull() | F.col("_reason").isin(*BOT_REASONS))
        actions = valid.select("user_id", F.col("_ts").cast("long").alias("t")).distinct().toPandas()
        hour, cv = peaks(actions["user_id"].to_numpy(), actions["t"].to_numpy(), conf.bot_cadence_actions,
                         conf.bot_cadence_max_mean_gap_seconds)
        users = valid.select("user_id").distinct().count()
        lift = shilling_peak(valid, conf)
        every = replace(conf, shilling_max_account_span_seconds=NO_SPAN)
        daily = cleaning.shilling_users(valid, every).agg(F.count("*")).first()[0]
        daily_lift = shilling_peak(valid, every)
        rows.append({"data": name, "users": users, "rows": out.count(), "peak_hour": hour,
                     "min_cv": None if cv == float("inf") else cv, "shilling_peak_lift": lift,
                     "shilling_users_every_account_fresh": daily, "shilling_peak_lift_every_account_fresh": daily_lift,
                     **{r: {"users": flagged.get(r, (0, 0))[0], "rows": flagged.get(r, (0, 0))[1]}
                        for r in BOT_REASONS}})
        print(rows[-1], flush=True)
        out.unpersist()
        bronze.unpersist()
    command = " ".join(["python benchmarks/bot_rules.py", *sys.argv[1:]])
    payload = {"benchmark": "bot_rules", "date": dt.date.today().isoformat(), "machine": machine(),
               "command": command, "conf": {k: getattr(conf, k) for k in (
                   "bot_max_actions_per_minute", "bot_max_actions_per_day", "bot_max_actions_per_hour",
                   "bot_cadence_actions", "bot_cadence_max_cv", "bot_cadence_max_mean_gap_seconds",
                   "shilling_min_accounts", "shilling_min_lift", "shilling_window_seconds",
                   "shilling_max_account_span_seconds")}, "rows": rows}
    c = payload["conf"]
    lines = ["# bot_rules", "", f"Measured {payload['date']} on {payload['machine']}; `{payload['command']}`.", "",
             "Users (rows) each bot rule quarantines with the default conf (the shilling rule switched on) "
             f"(per minute > {c['bot_max_actions_per_minute']}, per day > {c['bot_max_actions_per_day']}, per hour > "
             f"{c['bot_max_actions_per_hour']}, cadence: {c['bot_cadence_actions']} actions with gaps' CV < "
             f"{c['bot_cadence_max_cv']} and mean <= {c['bot_cadence_max_mean_gap_seconds']:g} s; shilling: >= "
             f"{c['shilling_min_accounts']} fresh accounts (rows spanning <= {c['shilling_max_account_span_seconds']} s)"
             f" on one item in a {c['shilling_window_seconds']} s window at a lift >= {c['shilling_min_lift']:g}), and "
             "the data's own peaks beside the thresholds (distinct-timestamp actions; the largest shilling lift of an "
             "item-window with enough fresh accounts, - when none has).", "",
             "| data | users | bot_user | bot_sustained_rate | bot_cadence | shilling | most actions in any 60 min | "
             "lowest gaps' CV over the cadence window | largest shilling lift | shilling users, every account fresh "
             "(largest lift) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cv = f"{r['min_cv']:.3f}" if r["min_cv"] is not None else "no run that long"
        lines.append(f"| {r['data']} | {r['users']:,} | " + " | ".join(
            f"{r[k]['users']} ({r[k]['rows']:,})" for k in BOT_REASONS) + f" | {r['peak_hour']:,} | {cv} | "
            f"{fmt(r['shilling_peak_lift'])} | {r['shilling_users_every_account_fresh']} "
            f"({fmt(r['shilling_peak_lift_every_account_fresh'])}) |")
    lines += ["", "FilmTrust has no timestamps (every rating gets the ingest's default time: one action per user).",
              "The last column drops the shilling rule's fresh-account condition: in a daily batch every account's "
              "rows span at most a day, so the rule sees the rows as it would there.", ""]
    write_results("bot_rules", payload, lines)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
