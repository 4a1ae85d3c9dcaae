"""What every stage shares: the ``Stage`` declaration, the run ``Context``, and the steps stages repeat
(find an input's newest partition, write a partition and say how many rows, log a config section, roll
tables back). A stage module declares its ``Stage`` objects and keeps only its own logic.

Nothing here imports Spark at module level: the Airflow DAG files import the declarations to derive their
task dependencies, and the scheduler needs no Spark for that.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from liverec import tables
from liverec.errors import InputError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from liverec.config import Settings
    from liverec.progress import Progress

# what a stage reads or writes besides the Delta tables of liverec.tables
INPUT_FILES = "files:input"  # the raw log, catalogue or edge list ingest is pointed at
LANDING = "files:landing"  # the streaming landing folder (stream.landing)
IMPRESSIONS_LANDING = "files:impressions"  # the servers' impression files (feedback.landing)
RANKER_VERSION = "model:ranker"  # a new registered version of ranker.registered_model
CHAMPION = "model:ranker@champion"  # the ranker.champion_alias of ranker.registered_model
ONLINE_MODEL = "model:online"  # online.registered_model@online.alias
ONLINE_STORE = "store:online"  # the online feature store (online.store): users' records and recent events
EVALUATION_REPORT = "report:evaluation"  # evaluate.report_dir/<ds>
OFFPOLICY_REPORT = "report:offpolicy"  # evaluate.report_dir/<ds>/offpolicy.json

# the Airflow DAGs a stage can be a task of (airflow_dags/liverec_<dag>.py)
NIGHTLY, TRAINING = "nightly", "training"


@dataclass
class Context:
    spark: SparkSession
    settings: Settings
    ds: str
    progress: Progress


def no_arguments(p: argparse.ArgumentParser) -> None:
    del p  # the stage takes only the common options (--conf, --set, --ds)


@dataclass(frozen=True)
class Stage:
    """One stage: its command-line options, what it reads and writes (table names of ``liverec.tables`` or the
    resources above), and ``run(ctx, args) -> summary``. The pipeline order, the Airflow DAGs' dependencies,
    ``liverec stages`` and the README's stage table are derived from these declarations."""

    name: str
    help: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    run: Callable[[Context, argparse.Namespace], dict[str, Any]]
    add_arguments: Callable[[argparse.ArgumentParser], None] = no_arguments
    job: str = ""  # jobs/<job>.py (default: the stage's name)
    dag: str | None = None  # NIGHTLY, TRAINING or None (not scheduled)
    pipeline: bool = True  # part of `liverec pipeline`

    @property
    def job_file(self) -> str:
        return self.job or self.name


# --------------------------------------------------------------------------- shared steps

def written_rows(ctx: Context, table: str, version: int | None = None) -> int:
    """Rows a commit of ``table`` wrote (``version``, default the last), from Delta's own operation metrics (no
    scan of the data; another writer's later commits, the stream's appends say, do not get in the way)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from liverec import lakehouse

    history = DeltaTable.forPath(ctx.spark, tables.table_path(ctx.settings, table))
    if version is None:
        commit = history.history(1).collect()[0]
    else:
        newest = lakehouse.version(ctx.spark, ctx.settings, table)
        commit = history.history(int(newest) - version + 1).where(F.col("version") == version).collect()[0]
    return int((commit["operationMetrics"] or {}).get("numOutputRows", 0))


def committed_rows(ctx: Context, table: str, before: int | None, after: int | None) -> int:
    """Rows a write that left ``table`` at version ``after`` (from ``before``) committed: its commit's metrics, 0 when
    it made no commit (Delta commits nothing for an overwrite without rows)."""
    return 0 if after is None or after == before else written_rows(ctx, table, after)


def write(ctx: Context, table: str, df: DataFrame, partition: dict[str, str] | None = None,
          rows: int | None = None, **extra: Any) -> tuple[int, int]:
    """Overwrite ``partition`` (default: this ds) of ``table`` with ``df``; one progress line with the rows
    written (``rows`` when the caller counted them, else Delta's commit metrics). Returns (version, rows)."""
    from liverec import lakehouse

    version = lakehouse.overwrite_partition(ctx.spark, ctx.settings, table, df, partition or {"ds": ctx.ds})
    rows = written_rows(ctx, table) if rows is None else rows
    ctx.progress.step(f"write {table}", rows, version=version, **extra)
    return version, rows


def empty_partition(ctx: Context, table: str) -> int:
    """An empty partition of ``table`` for this ds (a stage that had nothing to write: no older rows pass
    for today's); its version."""
    from liverec import lakehouse, schemas

    empty = ctx.spark.createDataFrame([], schemas.SCHEMAS[table])
    return lakehouse.overwrite_partition(ctx.spark, ctx.settings, table, empty, {"ds": ctx.ds})


def latest(ctx: Context, table: str) -> tuple[DataFrame | None, str | None]:
    """A table's newest partition up to ds, and its ds (None, None when there is none)."""
    from pyspark.sql import functions as F

    from liverec import lakehouse

    part_ds = lakehouse.latest_ds(ctx.spark, ctx.settings, table, ctx.ds)
    if part_ds is None:
        return None, None
    return lakehouse.read(ctx.spark, ctx.settings, table).where(F.col("ds") == part_ds), part_ds


def require_latest(ctx: Context, table: str, stage: str) -> tuple[DataFrame, str]:
    """``latest``, or an InputError naming the stage that writes ``table``."""
    rows, part_ds = latest(ctx, table)
    if rows is None:
        raise InputError(f"{table} has no partition up to ds={ctx.ds}: run {stage} first")
    return rows, part_ds


def require_silver(ctx: Context) -> DataFrame:
    """silver.events of every date up to ds; an InputError when there are none."""
    from liverec import catalog, lakehouse

    if not lakehouse.exists(ctx.spark, ctx.settings, tables.SILVER_EVENTS):
        raise InputError("silver.events does not exist yet: run the ingest and clean stages first")
    events = catalog.events_until(ctx.spark, ctx.settings, ctx.ds)
    if events.limit(1).count() == 0:
        raise InputError(f"silver.events has no rows up to ds={ctx.ds}: run clean for that date first")
    return events


def social(ctx: Context) -> DataFrame | None:
    """bronze.social up to ds (None when no edges were ingested)."""
    from pyspark.sql import functions as F

    from liverec import lakehouse

    if not lakehouse.exists(ctx.spark, ctx.settings, tables.BRONZE_SOCIAL):
        return None
    return lakehouse.read(ctx.spark, ctx.settings, tables.BRONZE_SOCIAL).where(F.col("ds") <= ctx.ds)


def latest_ease(ctx: Context) -> tuple[Any, str | None, str | None]:
    """(EaseModel or None, its ds, its MLflow run id) from gold.ease_weights' newest partition up to ds; an
    empty partition (EASE skipped or off) is no model."""
    from liverec import ease

    rows, part_ds = latest(ctx, tables.EASE_WEIGHTS)
    if rows is None:
        return None, None, None
    first = rows.select("model_run_id", "reg_lambda").first()
    if first is None:
        return None, part_ds, None
    return ease.from_frame(rows, float(first["reg_lambda"])), part_ds, first["model_run_id"]


def latest_factors(ctx: Context) -> tuple[DataFrame | None, DataFrame | None, str | None, str | None]:
    """(user factors, item factors, their ds, ALS run id) of the newest gold.user_factors partition up to ds;
    Nones when there is none or it is empty."""
    from pyspark.sql import functions as F

    from liverec import lakehouse

    uf, factor_ds = latest(ctx, tables.USER_FACTORS)
    if uf is None:
        return None, None, None, None
    first = uf.select("model_run_id").first()
    if first is None:  # an empty partition: no ALS model for this ds
        return None, None, factor_ds, None
    itf = lakehouse.read(ctx.spark, ctx.settings, tables.ITEM_FACTORS).where(F.col("ds") == factor_ds)
    return uf, itf, factor_ds, first["model_run_id"]


def log_conf(section: str, conf: Any, keys: tuple[str, ...] | None = None) -> None:
    """Log a config section (a settings dataclass) as MLflow params ``<section>.<key>``."""
    import mlflow

    mlflow.log_params({f"{section}.{k}": v for k, v in dataclasses.asdict(conf).items() if keys is None or k in keys})


def restore(ctx: Context, before: dict[str, int | None]) -> None:
    """Put each table back to its version in ``before`` (a table this run created is left for inspection)."""
    from delta.tables import DeltaTable

    for table, version in before.items():
        if version is not None:
            DeltaTable.forPath(ctx.spark, tables.table_path(ctx.settings, table)).restoreToVersion(version)


SKIPPED_TAG = "liverec.skipped"  # MLflow tag: why a stage wrote nothing


def skip_reason(ds: str, stage: str) -> str:
    """The reason the newest run of ``stage`` for ``ds`` gave for writing nothing (MLflow tag SKIPPED_TAG)."""
    import mlflow

    from liverec.tracking import DS_TAG, STAGE_TAG

    runs = mlflow.search_runs(filter_string=f"tags.`{STAGE_TAG}` = '{stage}' and tags.`{DS_TAG}` = '{ds}'",
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    if runs and SKIPPED_TAG in runs[0].data.tags:
        return f"its run {runs[0].info.run_id}: {runs[0].data.tags[SKIPPED_TAG]}"
    return "see its progress line and MLflow run"
