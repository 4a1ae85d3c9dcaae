"""``collect_feedback``: the impressions the servers logged and the nightly lists of ds -> silver.impressions (each
once), and the impressions of ds with the events that followed them -> gold.feedback (``liverec.impressions``)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from liverec import tables
from liverec.errors import InputError
from liverec.stages.base import IMPRESSIONS_LANDING, Context, Stage, log_conf

QUERY_NAME = "liverec_collect_feedback"


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--landing", help="folder of impression files (default: conf feedback.landing, else "
                                     "<lakehouse_root>/_landing/impressions)")


def shown_from(ds: str) -> dt.datetime:
    """When the nightly list of ``ds`` is shown: from the next midnight (UTC) on."""
    return dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC) + dt.timedelta(days=1)


def run_collect_feedback(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from liverec import impressions, lakehouse

    spark, settings, progress, ds, conf = ctx.spark, ctx.settings, ctx.progress, ctx.ds, ctx.settings.feedback
    if conf.attribution_seconds <= 0 or not conf.click_events:
        raise InputError(f"feedback.attribution_seconds must be positive and feedback.click_events not empty (got "
                         f"{conf.attribution_seconds}, {list(conf.click_events)})")
    log_conf("feedback", conf)
    landing = getattr(args, "landing", None) or tables.impressions_landing(settings)
    if "://" not in landing:
        landing = str(Path(landing).expanduser().resolve())
        Path(landing).mkdir(parents=True, exist_ok=True)  # the file source needs the folder to exist

    # 1. the new impression files, once each (the checkpoint remembers the files read), MERGEd on impression_id
    totals = {"landing_rows": 0, "invalid": 0, "online_new": 0}

    def batch(df: Any, batch_id: int) -> None:
        rows = impressions.typed(df).cache()
        try:
            ok = rows.where(impressions.valid())
            n, good = rows.count(), ok.count()
            result = impressions.merge(spark, settings, ok)
        finally:
            rows.unpersist()
        totals["landing_rows"] += n
        totals["invalid"] += n - good
        totals["online_new"] += result["inserted"]
        progress.info(f"impression batch {batch_id}: {n:,} rows, {n - good:,} invalid, {result['inserted']:,} new")

    query = (spark.readStream.schema(impressions.landing_schema()).json(landing)
             .writeStream.queryName(QUERY_NAME).foreachBatch(batch)
             .option("checkpointLocation", tables.impressions_checkpoint(settings))
             .trigger(availableNow=True).start())
    query.awaitTermination()
    progress.step("online impressions", totals["landing_rows"], new=totals["online_new"],
                  repeated=totals["landing_rows"] - totals["invalid"] - totals["online_new"], invalid=totals["invalid"])

    # 2. the nightly lists of ds, shown from the next midnight
    nightly_new = 0
    if lakehouse.exists(spark, settings, tables.RECOMMENDATIONS):
        recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS)
        nightly_new = impressions.merge(spark, settings, impressions.nightly(recs, ds, shown_from(ds)))["inserted"]
    progress.step("nightly impressions", nightly_new, shown_from=shown_from(ds).date().isoformat())

    # 3. the impressions of ds with the events that followed them
    if not lakehouse.exists(spark, settings, tables.SILVER_IMPRESSIONS):
        progress.info("no impressions yet: gold.feedback not written")
        return {**totals, "nightly_new": nightly_new, "feedback_rows": 0, "clicked": 0}
    shown = lakehouse.read(spark, settings, tables.SILVER_IMPRESSIONS).where(F.col("ds") == ds)
    events = lakehouse.read_or_empty(spark, settings, tables.SILVER_EVENTS)
    rows = impressions.attribute(shown, events, conf.attribution_seconds, tuple(conf.click_events)).cache()
    try:
        n, clicked = rows.count(), rows.where(F.col("clicked")).count()
        version = lakehouse.overwrite_partition(spark, settings, tables.FEEDBACK, rows, {"ds": ds})
    finally:
        rows.unpersist()
    progress.step("write gold.feedback", n, clicked=clicked, click_rate=round(clicked / n, 4) if n else 0.0,
                  version=version)
    return {**totals, "nightly_new": nightly_new, "feedback_rows": n, "clicked": clicked}


STAGES = (
    Stage("collect_feedback", "impression files + the nightly lists -> silver.impressions (each once, by id); the "
          "impressions of ds with the events that followed -> gold.feedback; not part of the pipeline",
          reads=(IMPRESSIONS_LANDING, tables.RECOMMENDATIONS, tables.SILVER_EVENTS, tables.SILVER_IMPRESSIONS),
          writes=(tables.SILVER_IMPRESSIONS, tables.FEEDBACK), run=run_collect_feedback, add_arguments=_arguments,
          pipeline=False),
)
