"""Every table's name and where it lives under ``lakehouse_root``: the one place that says so."""

from __future__ import annotations

from liverec.config import Settings

BRONZE_EVENTS = "bronze.events"
BRONZE_ITEMS = "bronze.items"
BRONZE_SOCIAL = "bronze.social"
SILVER_EVENTS = "silver.events"
SILVER_QUARANTINE = "silver.quarantine"

ALL_TABLES = (BRONZE_EVENTS, BRONZE_ITEMS, BRONZE_SOCIAL, SILVER_EVENTS, SILVER_QUARANTINE)

# partition columns per table
PARTITIONS: dict[str, tuple[str, ...]] = {
    BRONZE_EVENTS: ("ds", "source"),
    BRONZE_ITEMS: ("ds", "source"),
    BRONZE_SOCIAL: ("ds", "source"),
    SILVER_EVENTS: ("ds",),
    SILVER_QUARANTINE: ("ds",),
}


def table_path(settings: Settings, table: str) -> str:
    """``<lakehouse_root>/<layer>/<name>`` for a table name such as ``silver.events``."""
    if table not in PARTITIONS:
        raise KeyError(f"unknown table {table!r}; known: {', '.join(ALL_TABLES)}")
    layer, name = table.split(".", 1)
    return f"{settings.lakehouse_root.rstrip('/')}/{layer}/{name}"
