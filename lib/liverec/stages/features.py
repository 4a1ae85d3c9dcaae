"""The feature stages: ``embed_items`` (item text -> sentence-encoder vectors and their nearest neighbours) and
``build_profiles`` (events, items, friends and content -> one profile row per user)."""

from __future__ import annotations

import argparse
from typing import Any

from liverec import tables
from liverec.errors import InputError
from liverec.stages.base import (
    NIGHTLY,
    Context,
    Stage,
    latest,
    log_conf,
    require_silver,
    social,
    write,
)


def _embed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true",
                   help="re-encode every item (default: only items whose text or model changed since the last run)")


def run_embed_items(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import time

    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from liverec import catalog, embeddings, lakehouse

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
    log_conf("embeddings", conf)

    previous, prev_ds = (None, None) if getattr(args, "full", False) else latest(ctx, tables.ITEM_EMBEDDINGS)
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
    v_emb, n_vectors = write(ctx, tables.ITEM_EMBEDDINGS, vectors_)
    encoded.unpersist()
    texts.unpersist()

    written = lakehouse.read(spark, settings, tables.ITEM_EMBEDDINGS, v_emb).where(F.col("ds") == ds)
    near = embeddings.neighbors(written, conf.neighbors).select("*", *tag)
    v_near, n_near = write(ctx, tables.ITEM_NEIGHBORS, near, k=conf.neighbors)
    summary = {"items": n_items, "encoded": n_encode, "reused": n_reused, "no_text_skipped": no_text,
               "category_fallback": by_source.get(embeddings.TEXT_SOURCE_CATEGORY, 0), "failed": failed,
               "vectors": n_vectors, "encode_seconds": seconds, "items_per_second": rate, "neighbor_rows": n_near,
               "item_embeddings_version": v_emb, "item_neighbors_version": v_near}
    if failed:
        progress.info(f"{failed} items got no finite vector from the encoder and have no row in gold.item_embeddings")
    return summary


def run_build_profiles(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from liverec import catalog, cleaning, profiles

    settings = ctx.settings
    events = require_silver(ctx).cache()
    n_events = events.count()
    items = catalog.latest_items(ctx.spark, settings, ctx.ds)
    ctx.progress.step("read silver.events", n_events)
    emb, _ = latest(ctx, tables.ITEM_EMBEDDINGS)
    if emb is None:
        ctx.progress.info("no gold.item_embeddings up to this ds: profiles get no content vector (run embed_items)")
    built = profiles.build_profiles(events, items, social(ctx), settings.profiles, settings.clean.event_weights,
                                    cleaning.id_key(settings), emb)
    version, rows = write(ctx, tables.USER_PROFILES, built.withColumn("ds", F.lit(ctx.ds)))
    events.unpersist()
    return {"input_events": n_events, "profiles": rows, "user_profiles_version": version}


STAGES = (
    Stage("embed_items", "item text -> gold.item_embeddings (sentence encoder) + gold.item_neighbors",
          reads=(tables.BRONZE_ITEMS, tables.ITEM_EMBEDDINGS), writes=(tables.ITEM_EMBEDDINGS, tables.ITEM_NEIGHBORS),
          run=run_embed_items, add_arguments=_embed_arguments, dag=NIGHTLY),
    Stage("build_profiles", "silver.events (+ items, social) -> gold.user_profiles",
          reads=(tables.SILVER_EVENTS, tables.BRONZE_ITEMS, tables.BRONZE_SOCIAL, tables.ITEM_EMBEDDINGS),
          writes=(tables.USER_PROFILES,), run=run_build_profiles, dag=NIGHTLY),
)
