"""``stream_events``: Structured Streaming of new landing files into silver.events / silver.quarantine and
gold.user_recent (``liverec.streaming``), one MERGE per micro-batch; run on its own, not in the pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from liverec import tables
from liverec.errors import InputError
from liverec.stages.base import LANDING, ONLINE_STORE, Context, Stage, log_conf


def _stream_arguments(p: argparse.ArgumentParser) -> None:
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

    from liverec import cleaning, streaming

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
    log_conf("stream", ctx.settings.stream)
    mlflow.log_params({"stream.landing_used": landing, "stream.checkpoint_used": tables.stream_checkpoint(ctx.settings)})
    return streaming.run(ctx.spark, ctx.settings, landing, bool(getattr(args, "once", False)), timeout, state)


STAGES = (
    Stage("stream_events", "Structured Streaming: new landing files -> silver.events / quarantine, the online "
          "store's recent events + gold.user_recent (per micro-batch); not part of the pipeline",
          reads=(LANDING, tables.SILVER_EVENTS),
          writes=(tables.SILVER_EVENTS, tables.SILVER_QUARANTINE, ONLINE_STORE, tables.USER_RECENT),
          run=run_stream_events,
          add_arguments=_stream_arguments, pipeline=False),
)
