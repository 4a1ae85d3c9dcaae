"""Reading and writing the Delta tables named in :mod:`liverec.tables`, with their schemas."""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from liverec import schemas, tables
from liverec.config import Settings


def conform(df: DataFrame, table: str) -> DataFrame:
    """Select the table's columns in order, cast to its types; a missing column is a bug, so it raises."""
    schema = schemas.SCHEMAS[table]
    missing = [f.name for f in schema.fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"{table}: DataFrame lacks columns {missing}")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def exists(spark: SparkSession, settings: Settings, table: str) -> bool:
    return DeltaTable.isDeltaTable(spark, tables.table_path(settings, table))


def read(spark: SparkSession, settings: Settings, table: str, version: int | None = None) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(tables.table_path(settings, table))


def read_or_empty(spark: SparkSession, settings: Settings, table: str) -> DataFrame:
    if exists(spark, settings, table):
        return read(spark, settings, table)
    return spark.createDataFrame([], schemas.SCHEMAS[table])


def version(spark: SparkSession, settings: Settings, table: str) -> int | None:
    """The table's latest Delta version, or None when it does not exist yet."""
    if not exists(spark, settings, table):
        return None
    return DeltaTable.forPath(spark, tables.table_path(settings, table)).history(1).collect()[0]["version"]


def stats_options(table: str) -> dict[str, str]:
    """The Delta writer options that set ``tables.STATS_COLUMNS`` on a table being created ({} for the others)."""
    columns = tables.STATS_COLUMNS.get(table)
    if columns is None:
        return {}
    if not columns:
        return {"delta.dataSkippingNumIndexedCols": "0"}
    return {"delta.dataSkippingStatsColumns": ",".join(columns)}


def _predicate(partition: dict[str, str]) -> str:
    def quote(v: str) -> str:
        return "'" + v.replace("'", "''") + "'"

    return " AND ".join(f"{k} = {quote(v)}" for k, v in partition.items())


def overwrite_partition(
    spark: SparkSession, settings: Settings, table: str, df: DataFrame, partition: dict[str, str],
    condition: str | None = None,
) -> int:
    """Replace exactly the rows of ``partition`` (e.g. one ds) in one Delta transaction.

    Rows of other partitions are untouched, so rerunning a date replaces that date alone. ``condition``
    (SQL) narrows what is replaced further: with ``source <> 'stream'`` the rows of the partition that
    match it are replaced and the others kept (Delta refuses a written row that does not match). Returns
    the new table version.
    """
    data = conform(df, table)
    for key, value in partition.items():
        data = data.where(F.col(key) == value)  # never let a row escape its partition
    # mergeSchema: a column added to a table's schema in a later release is added to the existing table
    writer = (data.write.format("delta").option("mergeSchema", "true").options(**stats_options(table))
              .partitionBy(*tables.PARTITIONS[table]))
    path = tables.table_path(settings, table)
    if exists(spark, settings, table):
        where = _predicate(partition) + (f" AND ({condition})" if condition else "")
        writer.mode("overwrite").option("replaceWhere", where).save(path)
    else:
        writer.mode("append").save(path)
    return version(spark, settings, table)  # type: ignore[return-value]


def append(spark: SparkSession, settings: Settings, table: str, df: DataFrame,
           txn: tuple[str, int] | None = None) -> None:
    """Append ``df`` to ``table`` (created when missing) in one Delta transaction.

    ``txn = (app_id, version)`` makes the append idempotent (Delta's ``txnAppId`` / ``txnVersion``): Delta
    skips it when the table already holds a commit of that app id with this version or a later one, so a
    micro-batch that Spark re-executes after a crash is not appended twice.
    """
    writer = (conform(df, table).write.format("delta").mode("append").option("mergeSchema", "true")
              .options(**stats_options(table)).partitionBy(*tables.PARTITIONS[table]))
    if txn is not None:
        writer = writer.option("txnAppId", txn[0]).option("txnVersion", int(txn[1]))
    writer.save(tables.table_path(settings, table))


def latest_ds(spark: SparkSession, settings: Settings, table: str, ds: str) -> str | None:
    """The newest ds partition of ``table`` not after ``ds`` (None when there is none)."""
    if not exists(spark, settings, table):
        return None
    return read(spark, settings, table).where(F.col("ds") <= ds).agg(F.max("ds")).collect()[0][0]
