"""The pipeline's stages: each parses its own options and calls the library, nothing more.

A stage is ``add_arguments(parser)`` plus ``run(ctx, args) -> summary``; the command line
(``liverec run <stage>``) and the thin ``jobs/<stage>.py`` files both dispatch here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from liverec import als, catalog, cleaning, demo_data, evaluation, ingest, lakehouse, profiles, recommend, tables
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
            events=ingest.read_generic_events(spark, str(Path(out) / demo_data.DEMO_FILES["events"]), "csv"),
            items=ingest.read_generic_items(spark, str(Path(out) / demo_data.DEMO_FILES["items"]), "csv"),
            social=ingest.read_edges(spark, str(Path(out) / demo_data.DEMO_FILES["edges"])))
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


# --------------------------------------------------------------------------- profiles

def _no_args(p: argparse.ArgumentParser) -> None:
    del p  # only the common options


def _require_silver(ctx: Context) -> DataFrame:
    if not lakehouse.exists(ctx.spark, ctx.settings, tables.SILVER_EVENTS):
        raise InputError("silver.events does not exist yet: run the ingest and clean stages first")
    events = catalog.events_until(ctx.spark, ctx.settings, ctx.ds)
    if events.limit(1).count() == 0:
        raise InputError(f"silver.events has no rows up to ds={ctx.ds}: run clean for that date first")
    return events


def run_profiles(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    spark, settings, progress = ctx.spark, ctx.settings, ctx.progress
    events = _require_silver(ctx).cache()
    n_events = events.count()
    items = catalog.latest_items(spark, settings, ctx.ds)
    social = None
    if lakehouse.exists(spark, settings, tables.BRONZE_SOCIAL):
        social = lakehouse.read(spark, settings, tables.BRONZE_SOCIAL).where(F.col("ds") <= ctx.ds)
    progress.step("read silver.events", n_events)
    key = cleaning.id_key(settings)
    built = profiles.build_profiles(events, items, social, settings.profiles, settings.clean.event_weights, key)
    version = lakehouse.overwrite_partition(spark, settings, tables.USER_PROFILES, built.withColumn("ds", F.lit(ctx.ds)),
                                            {"ds": ctx.ds})
    rows = _written_rows(spark, settings, tables.USER_PROFILES)
    progress.step("write gold.user_profiles", rows, version=version)
    events.unpersist()
    return {"input_events": n_events, "profiles": rows, "user_profiles_version": version}


# --------------------------------------------------------------------------- ALS

def run_train_als(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import time

    import mlflow

    spark, settings, progress, conf = ctx.spark, ctx.settings, ctx.progress, ctx.settings.als
    _require_silver(ctx)
    inputs = {"silver.events": lakehouse.version(spark, settings, tables.SILVER_EVENTS)}
    events = catalog.events_until(spark, settings, ctx.ds, conf.window_days)
    pairs = als.strengths(events, conf, settings.clean.event_weights).cache()
    users, items = als.index_ids(pairs)
    users, items = users.cache(), items.cache()
    ratings = pairs.join(users, "user_id").join(items, "item_id").select("user_idx", "item_idx", "strength").cache()
    n_pairs, n_users, n_items = ratings.count(), users.count(), items.count()
    progress.step("strengths", n_pairs, users=n_users, items=n_items)
    mlflow.log_params({f"als.{k}": v for k, v in dataclasses.asdict(conf).items()})
    mlflow.log_params({f"input_version.{k}": v for k, v in inputs.items()})

    started = time.monotonic()
    checkpoints = tables.checkpoint_path(settings, "als", ctx.ds)
    model = als.fit(spark, ratings, conf, checkpoints)
    uf, itf = als.factor_frames(model, users, items)
    n_factors = uf.count()
    fit_seconds = time.monotonic() - started
    progress.step("fit", n_pairs, seconds=round(fit_seconds, 1), iterations=conf.max_iter, rank=conf.rank)

    run_id = mlflow.active_run().info.run_id
    model_dir = tables.model_path(settings, "als", ctx.ds)
    model.write().overwrite().save(model_dir)
    if "://" not in model_dir or model_dir.startswith("file://"):
        mlflow.log_artifacts(model_dir, "als_model")
    partition = {"ds": ctx.ds}
    tag = [F.lit(run_id).alias("model_run_id"), F.lit(ctx.ds).alias("ds")]
    v_users = lakehouse.overwrite_partition(spark, settings, tables.USER_FACTORS, uf.select("*", *tag), partition)
    progress.step("write gold.user_factors", n_factors, version=v_users)
    v_items = lakehouse.overwrite_partition(spark, settings, tables.ITEM_FACTORS, itf.select("*", *tag), partition)
    progress.step("write gold.item_factors", _written_rows(spark, settings, tables.ITEM_FACTORS), version=v_items)
    mlflow.log_params({"output_version.gold.user_factors": v_users, "output_version.gold.item_factors": v_items,
                       "model_path": model_dir})
    for df in (pairs, users, items, ratings):
        df.unpersist()
    return {"pairs": n_pairs, "users": n_users, "items": n_items, "fit_seconds": fit_seconds,
            "user_factors_version": v_users, "item_factors_version": v_items}


# --------------------------------------------------------------------------- recommend

def run_recommend(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    spark, settings, progress, ds = ctx.spark, ctx.settings, ctx.progress, ctx.ds
    events = _require_silver(ctx)
    profile_ds = lakehouse.latest_ds(spark, settings, tables.USER_PROFILES, ds)
    if profile_ds is None:
        raise InputError(f"gold.user_profiles has no partition up to ds={ds}: run build_profiles first")
    user_profiles = lakehouse.read(spark, settings, tables.USER_PROFILES).where(F.col("ds") == profile_ds)
    items = catalog.latest_items(spark, settings, ds)
    factor_ds = lakehouse.latest_ds(spark, settings, tables.USER_FACTORS, ds)
    uf = itf = run_id = None
    if factor_ds is None:
        progress.info("no ALS factors up to this ds: every user gets the popularity fallback")
    else:
        uf = lakehouse.read(spark, settings, tables.USER_FACTORS).where(F.col("ds") == factor_ds)
        itf = lakehouse.read(spark, settings, tables.ITEM_FACTORS).where(F.col("ds") == factor_ds)
        run_id = uf.select("model_run_id").first()["model_run_id"]
        mlflow.log_params({"als_factors_ds": factor_ds, "als_run_id": run_id})
    progress.step("read inputs", None, profiles_ds=profile_ds, factors_ds=factor_ds)
    recs = recommend.nightly(events, items, user_profiles, uf, itf, run_id, settings.recommend, ds)
    version = lakehouse.overwrite_partition(spark, settings, tables.RECOMMENDATIONS, recs, {"ds": ds})
    written = lakehouse.read(spark, settings, tables.RECOMMENDATIONS, version).where(F.col("ds") == ds)
    by_source = {r["source"]: r["count"] for r in written.groupBy("source").count().collect()}
    n_users = written.select("user_id").distinct().count()
    progress.step("write gold.recommendations", sum(by_source.values()), version=version, users=n_users,
                  **{f"from_{k}": v for k, v in sorted(by_source.items())})
    return {"rows": sum(by_source.values()), "users": n_users, "recommendations_version": version,
            **{f"rows_{k}": v for k, v in by_source.items()}}


# --------------------------------------------------------------------------- evaluate

def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=("random", "temporal", "both"), default="both",
                   help="per-user stratified random split, temporal cut-off, or both (default)")
    p.add_argument("--k", type=int, help="cut-off K (default: conf evaluate.k)")
    p.add_argument("--output", help="also write the results as JSON to this file")


def run_evaluate(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    spark, settings, progress = ctx.spark, ctx.settings, ctx.progress
    events = _require_silver(ctx).cache()
    n_events = events.count()
    k = getattr(args, "k", None) or settings.evaluate.k
    if k <= 0:
        raise InputError(f"--k must be positive, got {k}")
    split = getattr(args, "split", None) or "both"
    splits = ["random", "temporal"] if split == "both" else [split]
    progress.step("read silver.events", n_events)
    checkpoints = tables.checkpoint_path(settings, "eval", ctx.ds)
    results = []
    for name in splits:
        results += evaluation.run(spark, settings, events, [name], k, checkpoints)
        r = results[-1]
        progress.step(f"{name} split", r.test_pairs, users=r.test_users,
                      **{f"{m}_ndcg@{k}": round(v["ndcg"], 4) for m, v in r.results.items()})
    folder = Path(settings.evaluate.report_dir) / ctx.ds
    paths = evaluation.write_report(results, k, folder, f"liverec evaluation, ds {ctx.ds}")
    summary: dict[str, Any] = {"report": str(paths["markdown"])}
    for r in results:
        for model, m in r.results.items():
            for metric, value in m.items():
                summary[f"{r.split}.{model}.{metric}"] = value
    mlflow.log_artifacts(str(folder), "evaluation")
    out = getattr(args, "output", None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(paths["json"].read_text())
    progress.info(f"report: {paths['markdown']}")
    events.unpersist()
    return summary


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("ingest", "read a source into bronze.events / bronze.items / bronze.social", _ingest_args, run_ingest),
        Stage("clean", "bronze.events -> silver.events + silver.quarantine, with a row balance", _clean_args,
              run_clean),
        Stage("build_profiles", "silver.events (+ items, social) -> gold.user_profiles", _no_args, run_profiles),
        Stage("train_als", "implicit ALS -> gold.user_factors, gold.item_factors, logged to MLflow", _no_args,
              run_train_als),
        Stage("recommend_nightly", "top N per active user -> gold.recommendations (partition ds)", _no_args,
              run_recommend),
        Stage("evaluate", "hold-out evaluation of popularity and ALS -> Markdown report, plot, MLflow",
              _evaluate_args, run_evaluate),
    )
}
# the order `liverec pipeline` runs them in
PIPELINE = ("ingest", "clean", "build_profiles", "train_als", "recommend_nightly", "evaluate")
