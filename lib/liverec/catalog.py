"""The item catalogue as later stages see it: the newest bronze row per item, categories as a list."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from liverec import lakehouse, tables
from liverec.config import Settings


def latest_items(spark: SparkSession, settings: Settings, ds: str | None = None) -> DataFrame:
    """item_id, title, categories (array), description, price: one row per item, from the newest ds."""
    if not lakehouse.exists(spark, settings, tables.BRONZE_ITEMS):
        return spark.createDataFrame([], "item_id string, title string, categories array<string>, "
                                         "description string, price double")
    items = lakehouse.read(spark, settings, tables.BRONZE_ITEMS)
    if ds is not None:
        items = items.where(F.col("ds") <= ds)
    newest = Window.partitionBy("item_id").orderBy(F.col("ds").desc(), F.col("ingested_at").desc())
    items = items.withColumn("_n", F.row_number().over(newest)).where(F.col("_n") == 1)
    cats = F.filter(F.transform(F.split(F.coalesce(F.col("category"), F.lit("")), r"\|"), lambda c: F.trim(c)),
                    lambda c: c != "")
    return items.select("item_id", "title", cats.alias("categories"), "description",
                        F.col("price").try_cast("double").alias("price"))


def events_until(spark: SparkSession, settings: Settings, ds: str, window_days: int = 0) -> DataFrame:
    """silver.events of every date up to ``ds``; with ``window_days`` only the last N days of event time."""
    return within_days(lakehouse.read(spark, settings, tables.SILVER_EVENTS).where(F.col("ds") <= ds), window_days)


def within_days(events: DataFrame, window_days: int) -> DataFrame:
    """The events of the last ``window_days`` days of event time (all of them when 0)."""
    if window_days > 0:
        newest = events.agg(F.max("ts")).collect()[0][0]
        if newest is not None:
            events = events.where(F.col("ts") > F.lit(newest) - F.expr(f"INTERVAL {int(window_days)} DAYS"))
    return events


def event_weight(weights: dict[str, float]) -> F.Column:
    """The configured weight of each event's type (types not configured weigh 0)."""
    mapping = F.create_map(*[x for k, v in weights.items() for x in (F.lit(k), F.lit(float(v)))])
    return F.coalesce(mapping[F.col("event_type")], F.lit(0.0))


def decay(ts: F.Column, reference: F.Column, half_life_days: float) -> F.Column:
    """0.5 ** (age / half-life); 1 when the half-life is 0 (no decay)."""
    if half_life_days <= 0:
        return F.lit(1.0)
    age_days = (reference.cast("double") - ts.cast("double")) / 86400.0
    return F.pow(F.lit(0.5), F.greatest(age_days, F.lit(0.0)) / half_life_days)
