"""Every table's schema: the one place that says what a table holds."""

from __future__ import annotations

from pyspark.sql.types import (
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from liverec import tables


def _s(name: str, nullable: bool = True) -> StructField:
    return StructField(name, StringType(), nullable)


# bronze keeps what the source said, as strings: typing is the clean job's business, so a
# malformed value is quarantined with a reason instead of failing the read.
BRONZE_EVENTS = StructType([
    StructField("row_id", LongType(), False),  # unique within (ds, source): locates the raw row
    _s("event_id"), _s("user_id"), _s("item_id"), _s("event_type"), _s("value"), _s("ts"),
    _s("session_id"), _s("price"),
    _s("source_reject"),  # a source-specific reason to reject (e.g. non_product_code), else null
    _s("raw_record"),  # the raw line when the reader could not parse it, else null
    _s("input_file"),
    StructField("ingested_at", TimestampType(), False),
    _s("ds", False), _s("source", False),
])

BRONZE_ITEMS = StructType([
    _s("item_id", False), _s("title"),
    _s("category"),  # one or more category names separated by '|'
    _s("description"), _s("price"),
    StructField("ingested_at", TimestampType(), False),
    _s("ds", False), _s("source", False),
])

BRONZE_SOCIAL = StructType([
    _s("src"), _s("dst"), _s("weight"),
    _s("raw_record"),  # the raw line when it is not 'a b [weight]', else null
    StructField("ingested_at", TimestampType(), False),
    _s("ds", False), _s("source", False),
])

SILVER_EVENTS = StructType([
    _s("event_id", False),  # given by the source, else a hash of the row's content
    _s("user_id", False),  # HMAC-SHA256 pseudonym (hex); never the raw id
    _s("item_id", False),
    _s("event_type", False),
    StructField("value", DoubleType(), True),
    StructField("ts", TimestampType(), False),
    _s("session_id"),
    StructField("price", DoubleType(), True),
    _s("source", False),
    _s("ds", False),
])

SILVER_QUARANTINE = StructType([
    _s("reason", False),
    _s("detail"),
    _s("source", False),
    StructField("row_id", LongType(), False),  # with ds and source, finds the raw row in bronze.events
    _s("event_id"),
    _s("user_id"),  # pseudonymised like silver.events; the raw row stays in bronze
    _s("item_id"), _s("event_type"), _s("value"), _s("ts"), _s("session_id"), _s("price"),
    _s("ds", False),
])

SCHEMAS: dict[str, StructType] = {
    tables.BRONZE_EVENTS: BRONZE_EVENTS,
    tables.BRONZE_ITEMS: BRONZE_ITEMS,
    tables.BRONZE_SOCIAL: BRONZE_SOCIAL,
    tables.SILVER_EVENTS: SILVER_EVENTS,
    tables.SILVER_QUARANTINE: SILVER_QUARANTINE,
}
