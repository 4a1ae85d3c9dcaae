"""``forget``: delete people's rows everywhere liverec holds them (``liverec.forget``), audit the counts, mark the
models trained on their data for retraining."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from liverec import tables
from liverec.errors import InputError
from liverec.stages.base import (
    IMPRESSIONS_LANDING,
    LANDING,
    ONLINE_MODEL,
    ONLINE_STORE,
    RANKER_VERSION,
    Context,
    Stage,
)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", required=True, help="file of the ids to forget, one per line (# comments allowed)")
    p.add_argument("--pseudonymised", action="store_true",
                   help="the ids are pseudonyms (as silver and gold hold them), not the sources' raw ids")


def run_forget(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    from liverec import cleaning, forget, lakehouse, registry

    spark, settings, progress, ds = ctx.spark, ctx.settings, ctx.progress, ctx.ds
    hours = settings.forget.vacuum_retain_hours
    if hours < 0:
        raise InputError(f"forget.vacuum_retain_hours must be >= 0, got {hours}")
    key = cleaning.id_key(settings)
    users = forget.pseudonyms(forget.read_ids(args.users), key, bool(args.pseudonymised))
    progress.step("users to forget", len(users))
    deleted: dict[str, int] = {}
    vacuumed: set[str] = set()
    for table in tables.PERSONAL:
        if not lakehouse.exists(spark, settings, table):
            continue
        deleted[table] = forget.delete_from_table(spark, settings, table, users, key)
        if deleted[table]:
            forget.vacuum(spark, settings, table, hours)
            vacuumed.add(table)
        progress.step(f"delete from {table}", deleted[table], vacuumed=table in vacuumed)
    deleted[forget.ONLINE_STORE] = forget.delete_from_store(settings, users)
    progress.step("delete from the online store", deleted[forget.ONLINE_STORE])
    deleted[forget.IMPRESSION_FILES] = forget.scrub_impression_files(tables.impressions_landing(settings), users)
    progress.step("impression files not yet collected", deleted[forget.IMPRESSION_FILES])
    deleted[forget.EVENT_FILES] = forget.scrub_event_files(settings.stream.landing, users, key, settings.stream.format)
    progress.step("event files in the streaming landing folder", deleted[forget.EVENT_FILES],
                  folder=settings.stream.landing)

    run_id, now = mlflow.active_run().info.run_id, dt.datetime.now(dt.UTC).replace(tzinfo=None)
    audit = spark.createDataFrame(
        [(run_id, now, target, len(users), int(n), target in vacuumed, ds) for target, n in deleted.items()],
        "run_id string, at timestamp, target string, users_requested int, rows_deleted long, vacuumed boolean, "
        "ds string")
    lakehouse.append(spark, settings, tables.FORGET_AUDIT, audit)
    total = sum(deleted.values())
    tagged = 0
    if total:
        tagged = registry.mark_for_retraining((settings.ranker.registered_model, settings.online.registered_model),
                                              f"forget run {run_id} at {now.isoformat()}Z")
    progress.step("audit", len(deleted), rows_deleted=total, model_versions_marked=tagged)
    return {"users_requested": len(users), "rows_deleted": total, "model_versions_marked": tagged,
            **{f"deleted.{t}": n for t, n in deleted.items()}}


STAGES = (
    Stage("forget", "delete the people in --users from every table, the online store, the waiting impression "
          "files and the streaming landing folder's event files (Delta DELETE + VACUUM), a count per place in "
          "gold.forget_audit, the models trained on their data marked for retraining; not part of the pipeline",
          reads=(*tables.PERSONAL,), writes=(*tables.PERSONAL, ONLINE_STORE, IMPRESSIONS_LANDING, LANDING,
                                              tables.FORGET_AUDIT, RANKER_VERSION, ONLINE_MODEL),
          run=run_forget, add_arguments=_arguments, pipeline=False),
)
