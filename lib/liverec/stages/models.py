"""The baseline models: ``train_als`` (implicit ALS -> user and item factors) and ``train_ease`` (EASE's
item-item weights, the Gram matrix built in Spark and solved in closed form)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from liverec import tables
from liverec.errors import InputError
from liverec.stages.base import NIGHTLY, Context, Stage, empty_partition, log_conf, require_silver, write


def run_train_als(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow
    from pyspark.sql import functions as F

    from liverec import als, catalog, lakehouse

    spark, settings, progress, conf = ctx.spark, ctx.settings, ctx.progress, ctx.settings.als
    require_silver(ctx)
    inputs = {"silver.events": lakehouse.version(spark, settings, tables.SILVER_EVENTS)}
    events = catalog.events_until(spark, settings, ctx.ds, conf.window_days)
    pairs = als.strengths(events, conf, settings.clean.event_weights).cache()
    users, items = als.index_ids(pairs)
    users, items = users.cache(), items.cache()
    ratings = pairs.join(users, "user_id").join(items, "item_id").select("user_idx", "item_idx", "strength").cache()
    n_pairs, n_users, n_items = ratings.count(), users.count(), items.count()
    progress.step("strengths", n_pairs, users=n_users, items=n_items)
    log_conf("als", conf)
    mlflow.log_params({f"input_version.{k}": v for k, v in inputs.items()})

    started = time.monotonic()
    model = als.fit(spark, ratings, conf, tables.checkpoint_path(settings, "als", ctx.ds))
    uf, itf = als.factor_frames(model, users, items)
    n_factors = uf.count()
    fit_seconds = time.monotonic() - started
    progress.step("fit", n_pairs, seconds=round(fit_seconds, 1), iterations=conf.max_iter, rank=conf.rank)

    run_id = mlflow.active_run().info.run_id
    model_dir = tables.model_path(settings, "als", ctx.ds)
    model.write().overwrite().save(model_dir)
    if "://" not in model_dir or model_dir.startswith("file://"):
        mlflow.log_artifacts(model_dir, "als_model")
    tag = [F.lit(run_id).alias("model_run_id"), F.lit(ctx.ds).alias("ds")]
    v_users, _ = write(ctx, tables.USER_FACTORS, uf.select("*", *tag), rows=n_factors)
    v_items, _ = write(ctx, tables.ITEM_FACTORS, itf.select("*", *tag))
    mlflow.log_params({"output_version.gold.user_factors": v_users, "output_version.gold.item_factors": v_items,
                       "model_path": model_dir})
    for df in (pairs, users, items, ratings):
        df.unpersist()
    return {"pairs": n_pairs, "users": n_users, "items": n_items, "fit_seconds": fit_seconds,
            "user_factors_version": v_users, "item_factors_version": v_items}


def run_train_ease(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow
    from pyspark.sql import functions as F

    from liverec import als, catalog, ease

    spark, settings, progress, conf = ctx.spark, ctx.settings, ctx.progress, ctx.settings.ease
    require_silver(ctx)
    log_conf("ease", conf)
    if not conf.enabled:
        progress.info("ease.enabled is false: no EASE model (an empty gold.ease_weights partition for this ds)")
        return {"skipped": True, "ease_weights_version": empty_partition(ctx, tables.EASE_WEIGHTS)}
    events = catalog.events_until(spark, settings, ctx.ds, settings.als.window_days)
    pairs = als.strengths(events, settings.als, settings.clean.event_weights).select("user_id", "item_id").cache()
    started = time.monotonic()
    try:
        model, rows = ease.fit(pairs, conf.reg_lambda, conf.max_items)
    except InputError as err:
        if "ease.max_items" not in str(err):
            raise
        progress.info(f"EASE skipped: {err}")  # the pipeline goes on without it (ALS is the baseline)
        return {"skipped": True, "ease_weights_version": empty_partition(ctx, tables.EASE_WEIGHTS)}
    rows.unpersist()
    seconds = time.monotonic() - started
    progress.step("fit", model.pairs, users=model.users, items=len(model.item_ids), seconds=round(seconds, 1),
                  reg_lambda=conf.reg_lambda)
    run_id = mlflow.active_run().info.run_id
    out = ease.model_frame(spark, model).select("*", F.lit(conf.reg_lambda).alias("reg_lambda"),
                                                F.lit(run_id).alias("model_run_id"), F.lit(ctx.ds).alias("ds"))
    v, _ = write(ctx, tables.EASE_WEIGHTS, out, rows=len(model.item_ids))
    pairs.unpersist()
    return {"pairs": model.pairs, "users": model.users, "items": len(model.item_ids), "fit_seconds": seconds,
            "ease_weights_version": v}


STAGES = (
    Stage("train_als", "implicit ALS -> gold.user_factors, gold.item_factors, logged to MLflow",
          reads=(tables.SILVER_EVENTS,), writes=(tables.USER_FACTORS, tables.ITEM_FACTORS), run=run_train_als,
          dag=NIGHTLY),
    Stage("train_ease", "EASE item-item model (Gram matrix in Spark, closed form) -> gold.ease_weights",
          reads=(tables.SILVER_EVENTS,), writes=(tables.EASE_WEIGHTS,), run=run_train_ease, dag=NIGHTLY),
)
