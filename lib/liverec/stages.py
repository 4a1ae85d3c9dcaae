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

from liverec import (
    als,
    catalog,
    cleaning,
    demo_data,
    embeddings,
    evaluation,
    ingest,
    lakehouse,
    profiles,
    recommend,
    streaming,
    tables,
)
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
    p.add_argument("--default-ts", help="time (ISO-8601 or epoch seconds) of every event of a log without timestamps "
                                        "(--source events: the ts column may then be absent; filmtrust: default the "
                                        "run date, 00:00 UTC)")


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
        data = ingest.Ingested(events=ingest.read_generic_events(spark, args.input, args.format,
                                                                 getattr(args, "default_ts", None)))
        if args.items:
            data.items = ingest.read_generic_items(spark, args.items, None)
    elif source == "movielens":
        data = ingest.read_movielens(spark, args.input)
    elif source == "online_retail":
        data = ingest.read_online_retail(spark, args.input, settings.scratch_dir)
    elif source == "filmtrust":
        default_ts = getattr(args, "default_ts", None) or f"{ctx.ds}T00:00:00"
        progress.info(f"FilmTrust has no timestamps: every rating gets ts={default_ts} (--default-ts to choose); "
                      "evaluate it with --split random")
        data = ingest.read_filmtrust(spark, args.input, default_ts)
    elif source == "otto":
        data = ingest.read_otto(spark, args.input)
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

    # already seen: the other dates, and what the stream appended to this one (an event that both the stream
    # and the nightly dump delivered is kept once, as the stream's row)
    others: DataFrame | None = None
    if lakehouse.exists(spark, settings, tables.SILVER_EVENTS):
        others = (lakehouse.read(spark, settings, tables.SILVER_EVENTS)
                  .where((F.col("ds") != ds) | (F.col("source") == streaming.STREAM_SOURCE)).select("event_id"))
    classified = cleaning.classify(bronze, settings, ds, others).persist(StorageLevel.MEMORY_AND_DISK)
    kept, quarantined, duplicates, reasons = cleaning.count_statuses(classified)
    balance = cleaning.Balance(input_rows, kept, quarantined, duplicates, reasons)
    progress.step("classify", input_rows, kept=kept, quarantined=quarantined, duplicates=duplicates)
    progress.info(balance.line())
    for reason, rows in reasons.items():
        progress.info(f"  quarantine {reason}: {rows:,}")
    if not balance.holds:
        raise BalanceError(f"{balance.line()}: rows would be lost; nothing was written")

    # the date's rows from this batch path are replaced; the rows stream_events appended to it are kept
    partition, batch_rows = {"ds": ds}, streaming.NOT_STREAM
    before = {t: lakehouse.version(spark, settings, t) for t in (tables.SILVER_EVENTS, tables.SILVER_QUARANTINE)}
    v_silver = lakehouse.overwrite_partition(spark, settings, tables.SILVER_EVENTS,
                                             cleaning.silver_rows(classified, key, ds), partition, batch_rows)
    progress.step("write silver.events", kept, version=v_silver)
    v_quar = lakehouse.overwrite_partition(spark, settings, tables.SILVER_QUARANTINE,
                                           cleaning.quarantine_rows(classified, key, ds), partition, batch_rows)
    progress.step("write silver.quarantine", quarantined, version=v_quar)
    classified.unpersist()

    # the committed versions must hold exactly what was counted; otherwise roll both back
    got_silver = lakehouse.count_partition(spark, settings, tables.SILVER_EVENTS, partition, v_silver, batch_rows)
    got_quar = lakehouse.count_partition(spark, settings, tables.SILVER_QUARANTINE, partition, v_quar, batch_rows)
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


# --------------------------------------------------------------------------- embeddings

def _embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true",
                   help="re-encode every item (default: only items whose text or model changed since the last run)")


def _latest_partition(ctx: Context, table: str) -> tuple[DataFrame | None, str | None]:
    """A gold table's newest partition up to ds, and its ds (None, None when there is none)."""
    part_ds = lakehouse.latest_ds(ctx.spark, ctx.settings, table, ctx.ds)
    if part_ds is None:
        return None, None
    return lakehouse.read(ctx.spark, ctx.settings, table).where(F.col("ds") == part_ds), part_ds


def _social(ctx: Context) -> DataFrame | None:
    if not lakehouse.exists(ctx.spark, ctx.settings, tables.BRONZE_SOCIAL):
        return None
    return lakehouse.read(ctx.spark, ctx.settings, tables.BRONZE_SOCIAL).where(F.col("ds") <= ctx.ds)


def latest_embeddings(ctx: Context) -> tuple[DataFrame | None, str | None]:
    """gold.item_embeddings' newest partition up to ds, and its ds (None, None when there is none)."""
    return _latest_partition(ctx, tables.ITEM_EMBEDDINGS)


def run_embed_items(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import time

    import mlflow

    spark, settings, progress, conf, ds = ctx.spark, ctx.settings, ctx.progress, ctx.settings.embeddings, ctx.ds
    if conf.batch_size <= 0 or conf.neighbors <= 0 or conf.max_chars <= 0:
        raise InputError("embeddings.batch_size, embeddings.neighbors and embeddings.max_chars must be positive")
    texts = embeddings.item_texts(catalog.latest_items(spark, settings, ds), conf).cache()
    n_items = texts.count()
    if n_items == 0:  # e.g. OTTO or FilmTrust, which carry no item data: the pipeline goes on without content
        progress.info(f"bronze.items has no items up to ds={ds}: no item embeddings are written, so content "
                      "candidates and features are off (ingest a source with items, or events with --items, for them)")
        texts.unpersist()
        return {"items": 0, "encoded": 0, "skipped": True}
    by_source = {r["text_source"]: r["count"] for r in texts.groupBy("text_source").count().collect()}
    no_text = by_source.get(None, 0)
    progress.step("item texts", n_items, with_text=by_source.get(embeddings.TEXT_SOURCE_TEXT, 0),
                  category_fallback=by_source.get(embeddings.TEXT_SOURCE_CATEGORY, 0), no_text_skipped=no_text)
    mlflow.log_params({f"embeddings.{k}": v for k, v in dataclasses.asdict(conf).items()})

    previous, prev_ds = (None, None) if getattr(args, "full", False) else latest_embeddings(ctx)
    to_encode, reused = embeddings.plan_incremental(texts.where(F.col("text").isNotNull()), previous)
    n_encode, n_reused = to_encode.count(), reused.count()
    partitions = max(1, min(conf.partitions or spark.sparkContext.defaultParallelism, n_encode or 1))
    started = time.monotonic()
    encoded = embeddings.encode(to_encode, conf, partitions).persist(StorageLevel.MEMORY_AND_DISK)
    encoded.count()
    seconds = time.monotonic() - started
    failed = encoded.where(F.col("embedding").isNull()).count()
    rate = n_encode / seconds if seconds > 0 and n_encode else 0.0
    progress.step("encode", n_encode, seconds=round(seconds, 1), items_per_s=round(rate, 1), reused=n_reused,
                  reused_from_ds=prev_ds, failed=failed, tasks=partitions)

    tag = [F.lit(conf.model).alias("model"), F.lit(ds).alias("ds")]
    vectors_ = encoded.where(F.col("embedding").isNotNull()).unionByName(reused).select("*", *tag)
    v_emb = lakehouse.overwrite_partition(spark, settings, tables.ITEM_EMBEDDINGS, vectors_, {"ds": ds})
    n_vectors = _written_rows(spark, settings, tables.ITEM_EMBEDDINGS)
    progress.step("write gold.item_embeddings", n_vectors, version=v_emb)
    encoded.unpersist()
    texts.unpersist()

    written = lakehouse.read(spark, settings, tables.ITEM_EMBEDDINGS, v_emb).where(F.col("ds") == ds)
    near = embeddings.neighbors(written, conf.neighbors).select("*", *tag)
    v_near = lakehouse.overwrite_partition(spark, settings, tables.ITEM_NEIGHBORS, near, {"ds": ds})
    n_near = _written_rows(spark, settings, tables.ITEM_NEIGHBORS)
    progress.step("write gold.item_neighbors", n_near, version=v_near, k=conf.neighbors)
    summary = {"items": n_items, "encoded": n_encode, "reused": n_reused, "no_text_skipped": no_text,
               "category_fallback": by_source.get(embeddings.TEXT_SOURCE_CATEGORY, 0), "failed": failed,
               "vectors": n_vectors, "encode_seconds": seconds, "items_per_second": rate, "neighbor_rows": n_near,
               "item_embeddings_version": v_emb, "item_neighbors_version": v_near}
    if failed:
        progress.info(f"{failed} items got no finite vector from the encoder and have no row in gold.item_embeddings")
    return summary


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
    emb, _ = latest_embeddings(ctx)
    if emb is None:
        progress.info("no gold.item_embeddings up to this ds: profiles get no content vector (run embed_items)")
    built = profiles.build_profiles(events, items, social, settings.profiles, settings.clean.event_weights, key,
                                    emb)
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


# --------------------------------------------------------------------------- EASE

def run_train_ease(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import time

    import mlflow

    from liverec import ease

    spark, settings, progress, conf = ctx.spark, ctx.settings, ctx.progress, ctx.settings.ease
    _require_silver(ctx)
    partition = {"ds": ctx.ds}
    mlflow.log_params({f"ease.{k}": v for k, v in dataclasses.asdict(conf).items()})
    if not conf.enabled:
        progress.info("ease.enabled is false: no EASE model (an empty gold.ease_weights partition for this ds)")
        v = lakehouse.overwrite_partition(spark, settings, tables.EASE_WEIGHTS, _empty_ease(spark), partition)
        return {"skipped": True, "ease_weights_version": v}
    events = catalog.events_until(spark, settings, ctx.ds, settings.als.window_days)
    pairs = als.strengths(events, settings.als, settings.clean.event_weights).select("user_id", "item_id").cache()
    started = time.monotonic()
    try:
        model, rows = ease.fit(pairs, conf.reg_lambda, conf.max_items)
    except InputError as err:
        if "ease.max_items" not in str(err):
            raise
        progress.info(f"EASE skipped: {err}")  # the pipeline goes on without it (ALS is the baseline)
        v = lakehouse.overwrite_partition(spark, settings, tables.EASE_WEIGHTS, _empty_ease(spark), partition)
        return {"skipped": True, "ease_weights_version": v}
    rows.unpersist()
    seconds = time.monotonic() - started
    progress.step("fit", model.pairs, users=model.users, items=len(model.item_ids), seconds=round(seconds, 1),
                  reg_lambda=conf.reg_lambda)
    run_id = mlflow.active_run().info.run_id
    out = ease.model_frame(spark, model).select("*", F.lit(conf.reg_lambda).alias("reg_lambda"),
                                                F.lit(run_id).alias("model_run_id"), F.lit(ctx.ds).alias("ds"))
    v = lakehouse.overwrite_partition(spark, settings, tables.EASE_WEIGHTS, out, partition)
    progress.step("write gold.ease_weights", len(model.item_ids), version=v)
    pairs.unpersist()
    return {"pairs": model.pairs, "users": model.users, "items": len(model.item_ids), "fit_seconds": seconds,
            "ease_weights_version": v}


def _empty_ease(spark: SparkSession) -> DataFrame:
    from liverec import schemas

    return spark.createDataFrame([], schemas.EASE_WEIGHTS)


def latest_ease(ctx: Context) -> tuple[Any, str | None, str | None]:
    """(EaseModel or None, its ds, its MLflow run id) from gold.ease_weights' newest partition up to ds; an
    empty partition (EASE skipped or off) is no model."""
    from liverec import ease

    rows, part_ds = _latest_partition(ctx, tables.EASE_WEIGHTS)
    if rows is None:
        return None, None, None
    first = rows.select("model_run_id", "reg_lambda").first()
    if first is None:
        return None, part_ds, None
    return ease.from_frame(rows, float(first["reg_lambda"])), part_ds, first["model_run_id"]


# --------------------------------------------------------------------------- recommend

def _factors(ctx: Context) -> tuple[DataFrame | None, DataFrame | None, str | None, str | None]:
    """(user factors, item factors, their ds, ALS run id) of the newest gold.user_factors partition up to ds;
    Nones when there is none or it is empty."""
    uf, factor_ds = _latest_partition(ctx, tables.USER_FACTORS)
    if uf is None:
        return None, None, None, None
    first = uf.select("model_run_id").first()
    if first is None:  # an empty partition: no ALS model for this ds
        return None, None, factor_ds, None
    itf = lakehouse.read(ctx.spark, ctx.settings, tables.ITEM_FACTORS).where(F.col("ds") == factor_ds)
    return uf, itf, factor_ds, first["model_run_id"]


def run_recommend(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    from liverec import product, ranking
    from liverec.ranker.registry import BEST_BASELINE_TAG

    spark, settings, progress, ds = ctx.spark, ctx.settings, ctx.progress, ctx.ds
    conf = settings.recommend
    if conf.top_n <= 0 or conf.mmr_pool < 0 or not 0.0 <= conf.mmr_lambda <= 1.0:
        raise InputError(f"recommend.top_n must be positive, mmr_pool >= 0 and mmr_lambda in [0, 1] "
                         f"(got {conf.top_n}, {conf.mmr_pool}, {conf.mmr_lambda})")
    events = _require_silver(ctx).cache()  # read by every candidate source and the fallback chain
    user_profiles, profile_ds = _latest_partition(ctx, tables.USER_PROFILES)
    if user_profiles is None:
        raise InputError(f"gold.user_profiles has no partition up to ds={ds}: run build_profiles first")
    items = catalog.latest_items(spark, settings, ds)
    uf, itf, factor_ds, run_id = _factors(ctx)
    if uf is None:
        progress.info("no ALS factors up to this ds: users get EASE, content or popularity without the ranker")
    else:
        mlflow.log_params({"als_factors_ds": factor_ds, "als_run_id": run_id})
    ease_model, ease_ds, ease_run = latest_ease(ctx)
    if ease_model is None:
        progress.info("no EASE model up to this ds (run train_ease): no EASE candidates, ALS is the baseline")
    emb, emb_ds = latest_embeddings(ctx)
    if emb is None:
        progress.info("no gold.item_embeddings up to this ds: no content candidates (run embed_items)")
    neighbors, _ = _latest_partition(ctx, tables.ITEM_NEIGHBORS)
    champion = ranking.champion(settings.ranker.registered_model, settings.ranker.champion_alias)
    measured = ranking.registered_tag(settings.ranker.registered_model, BEST_BASELINE_TAG)
    baseline = product.choose_baseline(conf.baseline, measured, ease_model)
    progress.step("read inputs", None, profiles_ds=profile_ds, factors_ds=factor_ds, ease_ds=ease_ds,
                  embeddings_ds=emb_ds, ranker=champion.tag if champion else None, baseline=baseline)
    mlflow.log_params({f"recommend.{k}": v for k, v in dataclasses.asdict(conf).items()})
    mlflow.log_params({"ranker_model_version": champion.tag if champion else "none",
                       "ranker_run_id": champion.run_id if champion else None, "baseline_used": baseline,
                       "ease_ds": ease_ds})

    note = ""
    if champion is None:
        note = " (no champion ranker)"
        progress.info(f"no {settings.ranker.registered_model}@{settings.ranker.champion_alias} in the registry (none "
                      f"trained, or none beat the baselines): the {baseline} baseline ranks, and the rows say so")
    elif uf is None:
        note = " (champion ranker needs ALS factors)"
        progress.info("the champion ranker needs ALS factors (run train_als): falling back without it")
    users = recommend.active_users(events, conf.active_days).cache()
    published = product.publish(spark, events, users, items, user_profiles, uf, itf, run_id, ease_model, ease_run,
                                emb, neighbors, _social(ctx), settings, cleaning.id_key(settings), champion,
                                baseline, ds, note, f"content:{settings.embeddings.model}@{emb_ds}")
    if published.candidates:
        progress.step("candidates", sum(published.candidates.values()),
                      **{f"from_{k}": v for k, v in sorted(published.candidates.items())})
        mlflow.log_params({f"candidates.{k}": v for k, v in published.candidates.items()})
    version = lakehouse.overwrite_partition(spark, settings, tables.RECOMMENDATIONS, published.rows, {"ds": ds})
    written = lakehouse.read(spark, settings, tables.RECOMMENDATIONS, version).where(F.col("ds") == ds)
    by_source = {r["source"]: r["count"] for r in written.groupBy("source").count().collect()}
    ranked_rows = written.where(F.col("model_version").startswith("ranker:")).count()
    n_users = written.select("user_id").distinct().count()
    progress.step("write gold.recommendations", sum(by_source.values()), version=version, users=n_users,
                  ranked_rows=ranked_rows, **{f"from_{k}": v for k, v in sorted(by_source.items())})
    users.unpersist()
    events.unpersist()
    return {"rows": sum(by_source.values()), "users": n_users, "recommendations_version": version,
            "ranked_rows": ranked_rows, "ranker": champion.tag if champion else None, "baseline": baseline,
            **{f"rows_{k}": v for k, v in by_source.items()}}


# --------------------------------------------------------------------------- ranker

def run_build_ranker_examples(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    from liverec import product, splits

    spark, settings, progress, conf, ds = ctx.spark, ctx.settings, ctx.progress, ctx.settings.ranker, ctx.ds
    if conf.label_split not in splits.PROTOCOLS:
        raise InputError(f"ranker.label_split must be one of {', '.join(splits.PROTOCOLS)}, got {conf.label_split!r}")
    if not 0 < conf.label_fraction < 1 or not 0 < conf.validation_fraction < 1:
        raise InputError(f"ranker.label_fraction and ranker.validation_fraction must be between 0 and 1, got "
                         f"{conf.label_fraction} and {conf.validation_fraction}")
    if conf.recent_items <= 0 or conf.negatives_per_user <= 0 or conf.negatives_per_positive <= 0:
        raise InputError("ranker.recent_items, ranker.negatives_per_user and ranker.negatives_per_positive must be "
                         "positive")
    events = _require_silver(ctx)
    mlflow.log_params({f"ranker.{k}": v for k, v in dataclasses.asdict(conf).items()
                       if k in ("label_split", "label_fraction", "negatives_per_user", "negatives_per_positive",
                                "recent_items", "validation_fraction", "seed")})
    mlflow.log_params({"input_version.silver.events": lakehouse.version(spark, settings, tables.SILVER_EVENTS)})
    emb, emb_ds = latest_embeddings(ctx)
    if emb is None:
        progress.info("no gold.item_embeddings up to this ds: content features are 0 (run embed_items first)")
    neighbors, _ = _latest_partition(ctx, tables.ITEM_NEIGHBORS)
    items = catalog.latest_items(spark, settings, ds)
    try:
        made = product.make_examples(spark, events, items, emb, neighbors, _social(ctx), settings,
                                     cleaning.id_key(settings), tables.checkpoint_path(settings, "ranker-history", ds))
    except InputError as err:
        # too little data to learn from: say so and why, leave an empty partition for this ds (so no older
        # examples pass for today's), and let the pipeline go on with the baseline (train_ranker names the reason)
        progress.info(f"no ranker examples for ds={ds}: {err}")
        mlflow.set_tag(SKIPPED_TAG, str(err)[:5000])
        from liverec import schemas

        for table in (tables.RANKER_EXAMPLES, tables.RANKER_ITEMS):
            lakehouse.overwrite_partition(spark, settings, table, spark.createDataFrame([], schemas.SCHEMAS[table]),
                                          {"ds": ds})
        return {"examples": 0, "skipped": str(err), "skip_stages": ["train_ranker"]}
    progress.step("label split", made.history_events, held_out_pairs=made.held_pairs, split=conf.label_split,
                  cutoff=str(made.cutoff), ease=made.ease_fitted)
    progress.step("candidates", None, **{f"recall_{k}": round(v, 4) for k, v in made.recall.items()})
    mlflow.log_metrics({f"candidate_recall.{k}": v for k, v in made.recall.items()})
    v_items = lakehouse.overwrite_partition(spark, settings, tables.RANKER_ITEMS,
                                            made.vocab.withColumn("ds", F.lit(ds)), {"ds": ds})
    n_vocab = _written_rows(spark, settings, tables.RANKER_ITEMS)
    progress.step("write gold.ranker_items", n_vocab, version=v_items)
    v_ex = lakehouse.overwrite_partition(spark, settings, tables.RANKER_EXAMPLES, made.rows.withColumn("ds", F.lit(ds)),
                                         {"ds": ds})
    written = lakehouse.read(spark, settings, tables.RANKER_EXAMPLES, v_ex).where(F.col("ds") == ds)
    counts = {(r["split"], r["label"]): r["count"] for r in written.groupBy("split", "label").count().collect()}
    n_rows = sum(counts.values())
    summary = {"examples": n_rows, "history_events": made.history_events, "held_out_pairs": made.held_pairs,
               "items": n_vocab, "ranker_examples_version": v_ex, "ranker_items_version": v_items,
               "embeddings_ds": emb_ds, **{f"candidate_recall_{k}": v for k, v in made.recall.items()},
               **{f"{sp}_{'positive' if lab else 'negative'}": n for (sp, lab), n in counts.items()}}
    progress.step("write gold.ranker_examples", n_rows, version=v_ex,
                  **{k: v for k, v in summary.items() if k.startswith(("train_", "valid_"))})
    return summary


SKIPPED_TAG = "liverec.skipped"  # MLflow tag: why a stage wrote nothing


def _skip_reason(ds: str, stage: str = "build_ranker_examples") -> str:
    """The reason the newest run of ``stage`` for ``ds`` gave for writing nothing (MLflow tag SKIPPED_TAG)."""
    import mlflow

    from liverec.tracking import DS_TAG, STAGE_TAG

    runs = mlflow.search_runs(filter_string=f"tags.`{STAGE_TAG}` = '{stage}' and tags.`{DS_TAG}` = '{ds}'",
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    if runs and SKIPPED_TAG in runs[0].data.tags:
        return f"its run {runs[0].info.run_id}: {runs[0].data.tags[SKIPPED_TAG]}"
    return "see its progress line and MLflow run"


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-processes", type=int, help="DDP processes (default: conf ranker.num_processes)")
    p.add_argument("--no-promote", action="store_true",
                   help="register the new version only; promote_ranker decides (as the Airflow training DAG does)")


VALID_COLUMNS = ("user_id", "item_id", "label", "n_labels", "sampled", "als_rank", "ease_rank", "dense",
                 "recent_items")


def _promote(ctx: Context, version: str, valid: Any, scores: Any) -> dict[str, Any]:
    """The champion gate for ``version`` (its ``scores`` of the validation rows ``valid``); logged and tagged."""
    import mlflow

    from liverec.ranker import registry

    conf = ctx.settings.ranker
    decision = registry.promote(conf.registered_model, conf.champion_alias, str(version), valid, scores,
                                ctx.settings.recommend.top_n)
    mlflow.log_params({f"promotion.{k}": v for k, v in decision.items()})
    mlflow.log_metrics({f"promotion.{k}": float(v) for k, v in decision.items()
                        if isinstance(v, float) and k.endswith(f"_at_{ctx.settings.recommend.top_n}")})
    mlflow.MlflowClient().set_model_version_tag(conf.registered_model, str(version), "promotion", decision["reason"])
    ctx.progress.step("register", None, model=conf.registered_model, version=version,
                      promoted=decision["promoted"], reason=decision["reason"])
    return decision


def run_train_ranker(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    from liverec.features import DENSE_FEATURES
    from liverec.ranker import registry, train

    spark, settings, progress, conf, ds = ctx.spark, ctx.settings, ctx.progress, ctx.settings.ranker, ctx.ds
    world = getattr(args, "num_processes", None) or conf.num_processes
    if world <= 0:
        raise InputError(f"the number of processes must be positive, got {world}")
    ex_ds = lakehouse.latest_ds(spark, settings, tables.RANKER_EXAMPLES, ds)
    if ex_ds is None:
        raise InputError(f"gold.ranker_examples has no partition up to ds={ds}: run build_ranker_examples first "
                         "(it fails, naming the counts, when the data give no positive example)")
    rows = lakehouse.read(spark, settings, tables.RANKER_EXAMPLES).where(F.col("ds") == ex_ds)
    if rows.limit(1).count() == 0:
        raise InputError(f"gold.ranker_examples ds={ex_ds} is empty: build_ranker_examples found nothing to learn "
                         f"from ({_skip_reason(ex_ds)}); the nightly job publishes the baseline meanwhile")
    vocab = lakehouse.read(spark, settings, tables.RANKER_ITEMS).where(F.col("ds") == ex_ds).cache()
    missing = [c for c in VALID_COLUMNS if c not in rows.columns]
    width = rows.select(F.size("dense")).first()
    if missing or width is None or width[0] != len(DENSE_FEATURES):
        raise InputError(f"gold.ranker_examples ds={ex_ds} was built by another version (dense features: "
                         f"{width[0] if width else 0}, expected {len(DENSE_FEATURES)}; missing columns: "
                         f"{missing or 'none'}): rerun build_ranker_examples for that ds")
    factor = vocab.where(F.col("als_factor").isNotNull()).select(F.size("als_factor")).first()
    id_dim = int(factor[0]) if factor else settings.als.rank
    mlflow.log_params({f"ranker.{k}": v for k, v in dataclasses.asdict(conf).items()})
    mlflow.log_params({"examples_ds": ex_ds, "num_processes_used": world, "id_dim": id_dim,
                       "input_version.gold.ranker_examples": lakehouse.version(spark, settings,
                                                                                tables.RANKER_EXAMPLES)})
    result = train.fit(spark, rows, vocab, conf, id_dim, tables.petastorm_url(settings, ds), world)
    train.log_history(result)
    progress.step("train", result.train_examples, processes=world, device=result.device, epochs=len(result.history),
                  best_epoch=result.best_epoch, best_val_ndcg=round(result.best_ndcg, 4),
                  lists_per_s=round(result.examples_per_s, 1))

    # the model as a pyfunc: check it scores the validation set as the training loop did, then register
    valid = rows.where(F.col("split") == "valid").select(*VALID_COLUMNS).toPandas()
    info, pyfunc, scores = registry.log_and_check(result, vocab, conf.recent_items, valid)
    version = mlflow.register_model(info.model_uri, conf.registered_model).version
    if getattr(args, "no_promote", False):
        decision = {"promoted": False, "reason": "left to promote_ranker (--no-promote)"}
        progress.step("register", None, model=conf.registered_model, version=version, promoted=False,
                      reason=decision["reason"])
    else:
        decision = _promote(ctx, str(version), valid, scores)
    vocab.unpersist()
    return {"version": version, "best_val_ndcg_at_10": result.best_ndcg, "epochs": len(result.history),
            "train_examples_per_s": result.examples_per_s, "train_lists": result.train_examples,
            "valid_examples": result.valid_examples, **{f"promotion_{k}": v for k, v in decision.items()}}


def _promote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", help="registered version to judge (default: the newest)")


def run_promote_ranker(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    spark, settings, conf = ctx.spark, ctx.settings, ctx.settings.ranker
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name='{conf.registered_model}'")
    if not versions:
        raise InputError(f"no version of {conf.registered_model} is registered: run train_ranker first")
    wanted = getattr(args, "version", None)
    if wanted is None:
        mv = max(versions, key=lambda v: int(v.version))
    else:
        found = [v for v in versions if str(v.version) == str(wanted)]
        if not found:
            raise InputError(f"{conf.registered_model} has no version {wanted} (newest: "
                             f"{max(int(v.version) for v in versions)})")
        mv = found[0]
    run = client.get_run(mv.run_id)
    ex_ds = run.data.params.get("examples_ds")
    if ex_ds is None:
        raise InputError(f"{conf.registered_model} v{mv.version} was not logged by train_ranker (its run "
                         f"{mv.run_id} lacks examples_ds)")
    ctx.progress.step("candidate", None, version=mv.version, examples_ds=ex_ds)
    valid = (lakehouse.read(spark, settings, tables.RANKER_EXAMPLES)
             .where((F.col("ds") == ex_ds) & (F.col("split") == "valid")).select(*VALID_COLUMNS).toPandas())
    if valid.empty:
        raise InputError(f"gold.ranker_examples ds={ex_ds} has no validation rows to judge v{mv.version} on")
    from liverec.ranker.registry import pyfunc_frame

    model = mlflow.pyfunc.load_model(f"models:/{conf.registered_model}/{mv.version}")
    scores = model.predict(pyfunc_frame(valid))["score"].to_numpy()
    mlflow.log_params({"candidate_version": mv.version, "candidate_run_id": mv.run_id, "examples_ds": ex_ds})
    decision = _promote(ctx, str(mv.version), valid, scores)
    return {f"promotion_{k}": v for k, v in decision.items()}


# --------------------------------------------------------------------------- online

def run_publish_online(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import os

    import mlflow

    from liverec import online, ranking

    spark, settings, progress, ds, oconf = ctx.spark, ctx.settings, ctx.progress, ctx.ds, ctx.settings.online
    if oconf.candidates <= 0 or not 1 <= oconf.default_k <= oconf.max_k or oconf.max_session <= 0:
        raise InputError(f"online.candidates and online.max_session must be positive and 1 <= online.default_k <= "
                         f"online.max_k (got {oconf.candidates}, {oconf.max_session}, {oconf.default_k}, "
                         f"{oconf.max_k})")
    from liverec import product
    from liverec.ranker.registry import BEST_BASELINE_TAG

    champion = ranking.champion(settings.ranker.registered_model, settings.ranker.champion_alias)
    events = _require_silver(ctx).cache()
    found = {t: _latest_partition(ctx, t) for t in (tables.USER_PROFILES, tables.USER_FACTORS, tables.ITEM_FACTORS,
                                                   tables.RECOMMENDATIONS)}
    for table, stage in ((tables.USER_PROFILES, "build_profiles"), (tables.ITEM_FACTORS, "train_als"),
                         (tables.RECOMMENDATIONS, "recommend_nightly")):
        if found[table][0] is None:
            raise InputError(f"{table} has no partition up to ds={ds}: run {stage} first")
    emb, emb_ds = latest_embeddings(ctx)
    neighbors, _ = _latest_partition(ctx, tables.ITEM_NEIGHBORS)
    items = catalog.latest_items(spark, settings, ds)
    ease_model, _, _ = latest_ease(ctx)
    baseline = None
    if champion is None:  # as the nightly job: the best baseline ranks (its score is one of the dense features)
        baseline = product.choose_baseline(settings.recommend.baseline, ranking.registered_tag(
            settings.ranker.registered_model, BEST_BASELINE_TAG), ease_model)
        progress.info(f"no {settings.ranker.registered_model}@{settings.ranker.champion_alias} in the registry: the "
                      f"online scorer ranks by the {baseline} baseline's score")
    ranker_tag = champion.tag if champion else f"baseline:{baseline}"
    arrays, meta = online.build_bundle(
        spark, events, items, found[tables.USER_PROFILES][0], found[tables.USER_FACTORS][0],
        found[tables.ITEM_FACTORS][0], ease_model, emb, neighbors, _social(ctx), found[tables.RECOMMENDATIONS][0],
        settings, cleaning.id_key(settings), ds)
    meta.update(ranker_version=ranker_tag, baseline=baseline,
                inputs={t: d for t, (_, d) in found.items()} | {"embeddings": emb_ds})
    size_mb = sum(a.nbytes for a in arrays.values()) / 2**20
    progress.step("bundle", len(meta["item_ids"]), users=len(meta["user_ids"]), seen_pairs=len(arrays["seen_idx"]),
                  nightly_rows=len(arrays["nightly_idx"]), arrays_mb=round(size_mb, 1), ranker=ranker_tag)
    info = online.log_online_model(arrays, meta, champion.uri if champion else None,
                                   os.path.join(settings.scratch_dir, "online"))
    version = str(mlflow.register_model(info.model_uri, oconf.registered_model).version)

    # smoke requests through the logged model: a known user without a session, a visitor with one click
    scorer = mlflow.pyfunc.load_model(info.model_uri).unwrap_python_model().scorer
    known = scorer.recommend(online.Request(0, [], None, oconf.default_k)) if meta["user_ids"] else []
    first = int(arrays["popular"][0])
    etype, weight = max(settings.clean.event_weights.items(), key=lambda kv: kv[1])  # a configured type
    visitor = scorer.recommend(online.Request(None, [online.Event(first, etype, 0.0, float(weight))], None,
                                              oconf.default_k))
    if not visitor or (meta["user_ids"] and not known):
        raise InputError(f"{oconf.registered_model} v{version} answered a smoke request with nothing "
                         f"(known user: {len(known)} rows, visitor: {len(visitor)}); the alias was not moved")
    client = mlflow.MlflowClient()
    for k, v in {"ds": ds, "ranker": ranker_tag, "items": len(meta["item_ids"]),
                 "users": len(meta["user_ids"])}.items():
        client.set_model_version_tag(oconf.registered_model, version, k, str(v))
    client.set_registered_model_alias(oconf.registered_model, oconf.alias, version)
    progress.step("register", None, model=oconf.registered_model, version=version, alias=oconf.alias,
                  smoke_known=len(known), smoke_visitor=len(visitor))
    events.unpersist()
    return {"version": version, "items": len(meta["item_ids"]), "users": len(meta["user_ids"]),
            "arrays_mb": size_mb, "seen_pairs": len(arrays["seen_idx"])}


# --------------------------------------------------------------------------- evaluate

def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=(*evaluation.SPLITS, "both"),
                   help="per-user stratified random split, temporal cut-off, or both (default: conf evaluate.splits)")
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
    split = getattr(args, "split", None)
    names = list(evaluation.SPLITS) if split == "both" else [split] if split else list(settings.evaluate.splits)
    unknown = sorted(set(names) - set(evaluation.SPLITS))
    if unknown or not names:
        raise InputError(f"evaluate.splits: unknown split(s) {unknown or '(none given)'}; use "
                         f"{', '.join(evaluation.SPLITS)}")
    progress.step("read silver.events", n_events)
    checkpoints = tables.checkpoint_path(settings, "eval", ctx.ds)
    inputs = None
    if settings.evaluate.product:
        emb, _ = latest_embeddings(ctx)
        neighbors, _ = _latest_partition(ctx, tables.ITEM_NEIGHBORS)
        inputs = evaluation.ProductInputs(catalog.latest_items(spark, settings, ctx.ds), emb, neighbors, _social(ctx),
                                          cleaning.id_key(settings), ctx.ds, settings.scratch_dir)
    else:
        progress.info("evaluate.product is false: the published product is not evaluated, baselines only")
    results, lists = [], None
    for name in names:
        (r, found), = evaluation.run(spark, settings, events, [name], k, checkpoints, inputs)
        results.append(r)
        lists = found if lists is None else lists.unionByName(found)
        progress.step(f"{name} split", r.test_pairs, users=r.test_users,
                      **{f"{m}_ndcg@{k}": round(v["ndcg"], 4) for m, v in r.results.items()})
        if "product" in r.notes:
            progress.info(f"  product: the ranker {r.notes['product'].get('ranker')}")
    folder = Path(settings.evaluate.report_dir) / ctx.ds
    paths = evaluation.write_report(results, k, folder, f"liverec evaluation, ds {ctx.ds}")
    lists.coalesce(1).write.mode("overwrite").partitionBy("split", "model").parquet(str(folder / "lists"))
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
    progress.info(f"report: {paths['markdown']} (lists and test pairs: {folder / 'lists'})")
    events.unpersist()
    return summary


# --------------------------------------------------------------------------- streaming

def _stream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true",
                   help="process the files in the landing folder now (trigger availableNow), then exit")
    p.add_argument("--landing", help="folder of new event files (default: conf stream.landing)")
    p.add_argument("--timeout", type=float, help="stop after this many seconds (default: run until stopped)")


def run_stream_events(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    """Structured Streaming from the landing folder; each micro-batch's ds is its UTC processing date
    (``--ds`` only names the MLflow run)."""
    import time

    import mlflow
    from mlflow.entities import Metric

    landing = getattr(args, "landing", None) or ctx.settings.stream.landing
    if "://" not in landing:
        landing = str(Path(landing).expanduser().resolve())
    timeout = getattr(args, "timeout", None)
    if timeout is not None and timeout <= 0:
        raise InputError(f"--timeout must be positive, got {timeout}")
    cleaning.id_key(ctx.settings)  # no key, no start
    run_id, client = mlflow.active_run().info.run_id, mlflow.MlflowClient()

    def log(result: streaming.BatchResult, seconds: float) -> None:  # runs on the query's thread: no active run
        now = int(time.time() * 1000)
        values = {"rows_in": result.rows_in, "kept": result.kept, "quarantined": result.quarantined,
                  "duplicates": result.duplicates, "users_merged": result.users_merged, "seconds": seconds}
        client.log_batch(run_id, metrics=[Metric(f"micro_batch.{k}", float(v), now, result.batch_id)
                                          for k, v in values.items()])

    state = streaming.StreamState(ctx.progress, on_batch=log)
    mlflow.log_params({f"stream.{k}": v for k, v in dataclasses.asdict(ctx.settings.stream).items()}
                      | {"stream.landing_used": landing, "stream.checkpoint_used":
                         tables.stream_checkpoint(ctx.settings)})
    return streaming.run(ctx.spark, ctx.settings, landing, bool(getattr(args, "once", False)), timeout, state)


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("ingest", "read a source into bronze.events / bronze.items / bronze.social", _ingest_args, run_ingest),
        Stage("clean", "bronze.events -> silver.events + silver.quarantine, with a row balance", _clean_args,
              run_clean),
        Stage("embed_items", "item text -> gold.item_embeddings (sentence encoder) + gold.item_neighbors",
              _embed_args, run_embed_items),
        Stage("build_profiles", "silver.events (+ items, social) -> gold.user_profiles", _no_args, run_profiles),
        Stage("train_als", "implicit ALS -> gold.user_factors, gold.item_factors, logged to MLflow", _no_args,
              run_train_als),
        Stage("train_ease", "EASE item-item model (Gram matrix in Spark, closed form) -> gold.ease_weights",
              _no_args, run_train_ease),
        Stage("build_ranker_examples", "held-out labels, leak-free features and the candidate union -> "
              "gold.ranker_examples", _no_args, run_build_ranker_examples),
        Stage("train_ranker", "Petastorm + TorchDistributor DDP training, MLflow registry and promotion gate",
              _train_args, run_train_ranker),
        Stage("promote_ranker", "champion gate: move the alias to a version that beats the baselines and the "
              "champion", _promote_args, run_promote_ranker),
        Stage("recommend_nightly", "candidates -> champion ranker (or the best baseline) -> MMR -> top N per "
              "active user -> gold.recommendations (partition ds)", _no_args, run_recommend),
        Stage("publish_online", "gold tables + champion ranker -> the liverec-online pyfunc, registered with "
              "the online alias (serve it with `liverec serve`)", _no_args, run_publish_online),
        Stage("evaluate", "hold-out evaluation of the published product beside popularity, ALS and EASE -> "
              "Markdown report, plot, MLflow",
              _evaluate_args, run_evaluate),
        Stage("stream_events", "Structured Streaming: new landing files -> silver.events / quarantine + "
              "gold.user_recent (MERGE per micro-batch); not part of the pipeline", _stream_args, run_stream_events),
    )
}
# the order `liverec pipeline` runs them in
PIPELINE = ("ingest", "clean", "embed_items", "build_profiles", "train_als", "train_ease", "build_ranker_examples",
            "train_ranker", "recommend_nightly", "publish_online", "evaluate")
