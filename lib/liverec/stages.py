"""The pipeline's stages: each parses its own options and calls the library, nothing more.

A stage is ``add_arguments(parser)`` plus ``run(ctx, args) -> summary``; the command line
(``liverec run <stage>``) and the thin ``jobs/<stage>.py`` files both dispatch here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from liverec import cleaning, demo_data, ingest, lakehouse, tables
from liverec.config import Settings
from liverec.errors import BalanceError, InputError
from liverec.progress import Progress


@dataclass
class Context:
    spark: SparkSession
    settings: Settings
    ds: str
    progress: Progress


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Context, argparse.Namespace], dict[str, Any]]


def _written_rows(spark: SparkSession, settings: Settings, table: str) -> int:
    """Rows the last commit wrote, from Delta's own operation metrics (no extra scan)."""
    from delta.tables import DeltaTable

    last = DeltaTable.forPath(spark, tables.table_path(settings, table)).history(1).collect()[0]
    return int((last["operationMetrics"] or {}).get("numOutputRows", 0))


# --------------------------------------------------------------------------- generate

def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", help="folder to write the demo log into (default: conf demo.output_dir)")
    p.add_argument("--events", type=int, help="number of events before dirt (default: conf demo.events)")
    p.add_argument("--users", type=int, help="number of users (default: conf demo.users)")
    p.add_argument("--items", type=int, help="number of items (default: conf demo.items)")


def run_generate(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    conf = ctx.settings.demo
    changes = {k: getattr(args, k) for k in ("events", "users", "items") if getattr(args, k, None) is not None}
    for key, value in changes.items():
        if value <= 0:
            raise InputError(f"--{key} must be positive, got {value}")
    conf = dataclasses.replace(conf, **changes)
    output = getattr(args, "output", None) or conf.output_dir
    manifest = demo_data.generate(ctx.spark, conf, output)
    ctx.progress.step("generate", manifest["rows_written"], clean_events=manifest["clean_events"],
                      items=manifest["items"], edges=manifest["edges"])
    ctx.progress.info(f"demo log in {output} (dirt: {json.dumps(manifest['dirt'])})")
    return {"output": output, **{f"dirt_{k}": v for k, v in manifest["dirt"].items()},
            "clean_events": manifest["clean_events"], "rows_written": manifest["rows_written"]}


# --------------------------------------------------------------------------- ingest

def _ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, choices=ingest.SOURCES, help="what kind of input this is")
    p.add_argument("--input", help="input file or folder (for demo: where to generate; default conf demo.output_dir)")
    p.add_argument("--items", help="with --source events: an items file (item_id, title, category, description, price)")
    p.add_argument("--format", choices=ingest.FORMATS, help="input format when the file name does not tell")


def run_ingest(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    spark, settings, progress = ctx.spark, ctx.settings, ctx.progress
    source = args.source
    if source != "demo" and not args.input:
        raise InputError(f"--input is required for --source {source}")
    if source == "demo":
        out = args.input or settings.demo.output_dir
        if not (Path(out) / "manifest.json").is_file():
            run_generate(ctx, argparse.Namespace(output=out, events=None, users=None, items=None))
        data = ingest.Ingested(
            events=ingest.read_generic_events(spark, str(Path(out) / "events"), "csv"),
            items=ingest.read_generic_items(spark, str(Path(out) / "items"), "csv"),
            social=ingest.read_edges(spark, str(Path(out) / "edges")))
    elif source == "events":
        data = ingest.Ingested(events=ingest.read_generic_events(spark, args.input, args.format))
        if args.items:
            data.items = ingest.read_generic_items(spark, args.items, None)
    elif source == "movielens":
        data = ingest.read_movielens(spark, args.input)
    elif source == "online_retail":
        data = ingest.read_online_retail(spark, args.input, settings.scratch_dir)
    else:  # edges
        data = ingest.Ingested(social=ingest.read_edges(spark, args.input))
    progress.step("read")  # every input was checked above; nothing has been written yet

    summary: dict[str, Any] = {"source": source}
    partition = {"ds": ctx.ds, "source": source}
    for table, df in ((tables.BRONZE_EVENTS, data.events), (tables.BRONZE_ITEMS, data.items),
                      (tables.BRONZE_SOCIAL, data.social)):
        if df is None:
            continue
        version = lakehouse.overwrite_partition(spark, settings, table, ingest.to_bronze(df, ctx.ds, source),
                                                partition)
        rows = _written_rows(spark, settings, table)
        progress.step(f"write {table}", rows, version=version)
        summary[f"{table}_rows"] = rows
        summary[f"{table}_version"] = version
    return summary


# --------------------------------------------------------------------------- clean

def _clean_args(p: argparse.ArgumentParser) -> None:
    del p  # clean takes only the common options (--ds picks the bronze rows to clean)


def run_clean(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    spark, settings, progress, ds = ctx.spark, ctx.settings, ctx.progress, ctx.ds
    key = cleaning.id_key(settings)
    if not lakehouse.exists(spark, settings, tables.BRONZE_EVENTS):
        raise InputError("bronze.events does not exist yet: run the ingest stage first")
    bronze = lakehouse.read(spark, settings, tables.BRONZE_EVENTS).where(F.col("ds") == ds)
    input_rows = bronze.count()
    if input_rows == 0:
        raise InputError(f"bronze.events has no rows for ds={ds}: run ingest with --ds {ds} first")
    progress.step("read bronze.events", input_rows)

    others: DataFrame | None = None
    if lakehouse.exists(spark, settings, tables.SILVER_EVENTS):
        others = lakehouse.read(spark, settings, tables.SILVER_EVENTS).where(F.col("ds") != ds).select("event_id")
    classified = cleaning.classify(bronze, settings, ds, others).persist(StorageLevel.MEMORY_AND_DISK)
    kept, quarantined, duplicates, reasons = cleaning.count_statuses(classified)
    balance = cleaning.Balance(input_rows, kept, quarantined, duplicates, reasons)
    progress.step("classify", input_rows, kept=kept, quarantined=quarantined, duplicates=duplicates)
    progress.info(balance.line())
    for reason, rows in reasons.items():
        progress.info(f"  quarantine {reason}: {rows:,}")
    if not balance.holds:
        raise BalanceError(f"{balance.line()}: rows would be lost; nothing was written")

    partition = {"ds": ds}
    before = {t: lakehouse.version(spark, settings, t) for t in (tables.SILVER_EVENTS, tables.SILVER_QUARANTINE)}
    v_silver = lakehouse.overwrite_partition(spark, settings, tables.SILVER_EVENTS,
                                             cleaning.silver_rows(classified, key, ds), partition)
    progress.step("write silver.events", kept, version=v_silver)
    v_quar = lakehouse.overwrite_partition(spark, settings, tables.SILVER_QUARANTINE,
                                           cleaning.quarantine_rows(classified, key, ds), partition)
    progress.step("write silver.quarantine", quarantined, version=v_quar)
    classified.unpersist()

    # the committed versions must hold exactly what was counted; otherwise roll both back
    got_silver = lakehouse.count_partition(spark, settings, tables.SILVER_EVENTS, partition, v_silver)
    got_quar = lakehouse.count_partition(spark, settings, tables.SILVER_QUARANTINE, partition, v_quar)
    if (got_silver, got_quar) != (kept, quarantined):
        _restore(spark, settings, before)
        raise BalanceError(f"written rows silver {got_silver:,} / quarantine {got_quar:,} differ from counted "
                           f"{kept:,} / {quarantined:,}; both tables were restored to their previous versions")
    progress.step("verify written counts", got_silver + got_quar)
    return {"input_rows": input_rows, "kept": kept, "quarantined": quarantined, "duplicates": duplicates,
            "balance_holds": balance.holds, **{f"quarantine_{r}": n for r, n in reasons.items()},
            "silver_events_version": v_silver, "silver_quarantine_version": v_quar}


def _restore(spark: SparkSession, settings: Settings, before: dict[str, int | None]) -> None:
    from delta.tables import DeltaTable

    for table, version in before.items():
        path = tables.table_path(settings, table)
        if version is None:
            continue  # a table this run created: its only version is the suspect one; leave it for inspection
        DeltaTable.forPath(spark, path).restoreToVersion(version)


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("ingest", "read a source into bronze.events / bronze.items / bronze.social", _ingest_args, run_ingest),
        Stage("clean", "bronze.events -> silver.events + silver.quarantine, with a row balance", _clean_args,
              run_clean),
    )
}
# the order `liverec pipeline` runs them in
PIPELINE = ("ingest", "clean")
