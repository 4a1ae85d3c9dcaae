"""Every table's name and where it lives under ``lakehouse_root``: the one place that says so."""

from __future__ import annotations

from pathlib import Path

from liverec.config import Settings

BRONZE_EVENTS = "bronze.events"
BRONZE_ITEMS = "bronze.items"
BRONZE_SOCIAL = "bronze.social"
SILVER_EVENTS = "silver.events"
SILVER_QUARANTINE = "silver.quarantine"
USER_PROFILES = "gold.user_profiles"
USER_FACTORS = "gold.user_factors"
ITEM_FACTORS = "gold.item_factors"
EASE_WEIGHTS = "gold.ease_weights"
RECOMMENDATIONS = "gold.recommendations"
ITEM_EMBEDDINGS = "gold.item_embeddings"
ITEM_NEIGHBORS = "gold.item_neighbors"
RANKER_EXAMPLES = "gold.ranker_examples"
RANKER_ITEMS = "gold.ranker_items"
USER_RECENT = "gold.user_recent"
SILVER_IMPRESSIONS = "silver.impressions"
FEEDBACK = "gold.feedback"
FORGET_AUDIT = "gold.forget_audit"

ALL_TABLES = (BRONZE_EVENTS, BRONZE_ITEMS, BRONZE_SOCIAL, SILVER_EVENTS, SILVER_QUARANTINE, USER_PROFILES,
              USER_FACTORS, ITEM_FACTORS, EASE_WEIGHTS, RECOMMENDATIONS, ITEM_EMBEDDINGS, ITEM_NEIGHBORS,
              RANKER_EXAMPLES, RANKER_ITEMS, USER_RECENT, SILVER_IMPRESSIONS, FEEDBACK, FORGET_AUDIT)

# partition columns per table
PARTITIONS: dict[str, tuple[str, ...]] = {
    BRONZE_EVENTS: ("ds", "source"),
    BRONZE_ITEMS: ("ds", "source"),
    BRONZE_SOCIAL: ("ds", "source"),
    SILVER_EVENTS: ("ds",),
    SILVER_QUARANTINE: ("ds",),
    USER_PROFILES: ("ds",),
    USER_FACTORS: ("ds",),
    ITEM_FACTORS: ("ds",),
    EASE_WEIGHTS: ("ds",),
    RECOMMENDATIONS: ("ds",),
    ITEM_EMBEDDINGS: ("ds",),
    ITEM_NEIGHBORS: ("ds",),
    RANKER_EXAMPLES: ("ds",),
    RANKER_ITEMS: ("ds",),
    USER_RECENT: (),  # one row per user, kept fresh by the stream's MERGE
    SILVER_IMPRESSIONS: ("ds",),  # the impression's date
    FEEDBACK: ("ds",),
    FORGET_AUDIT: ("ds",),  # the date forget ran for
}

# the columns whose per-file min/max Delta keeps for data skipping, where its default (the first 32 columns) costs
# more than it can save: every reader of these tables selects by partition (ds, source), and the min/max of raw or
# pseudonymised ids and hashes skips nothing. () keeps the row count alone. Set when the table is created (Delta
# ignores the option on an existing table; `ALTER TABLE delta.`<path>` SET TBLPROPERTIES` changes an old one). On
# the 20M-event log, statistics were 27 s of silver.events' 78 s write (benchmarks/results/clean_ab_2026-12-07.md).
STATS_COLUMNS: dict[str, tuple[str, ...]] = {
    BRONZE_EVENTS: (),
    SILVER_EVENTS: ("ts",),
}

# the tables that hold a person's rows, and the columns that name them: raw ids in bronze (as the source gave them),
# HMAC pseudonyms everywhere else; what `liverec forget` deletes from (tests/test_forget.py checks that every table
# with a user column is listed)
PERSONAL: dict[str, tuple[tuple[str, ...], bool]] = {  # table -> (columns, raw ids)
    BRONZE_EVENTS: (("user_id",), True),
    BRONZE_SOCIAL: (("src", "dst"), True),
    SILVER_EVENTS: (("user_id",), False),
    SILVER_QUARANTINE: (("user_id",), False),
    USER_PROFILES: (("user_id",), False),
    USER_FACTORS: (("user_id",), False),
    RECOMMENDATIONS: (("user_id",), False),
    RANKER_EXAMPLES: (("user_id",), False),
    USER_RECENT: (("user_id",), False),
    SILVER_IMPRESSIONS: (("user_id",), False),
    FEEDBACK: (("user_id",), False),
}


def model_path(settings: Settings, name: str, ds: str) -> str:
    """Where a Spark ML model of a run date is saved (beside the tables, so every executor can reach it)."""
    return f"{settings.lakehouse_root.rstrip('/')}/models/{name}/ds={ds}"


def checkpoint_path(settings: Settings, purpose: str, ds: str) -> str:
    """Spark checkpoint folder of one job run (ALS lineage cuts), under the scratch folder."""
    return f"{settings.scratch_dir.rstrip('/')}/checkpoints/{purpose}-{ds}"


def stream_checkpoint(settings: Settings) -> str:
    """The stream_events checkpoint: conf ``stream.checkpoint``, else ``<lakehouse_root>/_checkpoints/stream_events``."""
    if settings.stream.checkpoint:
        return settings.stream.checkpoint
    return f"{settings.lakehouse_root.rstrip('/')}/_checkpoints/stream_events"


def impressions_landing(settings: Settings) -> str:
    """Where servers write impression files: conf ``feedback.landing``, else ``<lakehouse_root>/_landing/impressions``
    (``off``: impressions are not logged)."""
    if settings.feedback.landing:
        return settings.feedback.landing
    return f"{settings.lakehouse_root.rstrip('/')}/_landing/impressions"


def impressions_checkpoint(settings: Settings) -> str:
    """collect_feedback's Structured Streaming checkpoint: which impression files it has read."""
    return f"{settings.lakehouse_root.rstrip('/')}/_checkpoints/collect_feedback"


def online_store_url(settings: Settings) -> str:
    """The online feature store: conf ``online.store``, else SQLite at ``<lakehouse_root>/_online/store.sqlite``
    (the lakehouse must then be a local folder)."""
    if settings.online.store:
        return settings.online.store
    root = settings.lakehouse_root.rstrip("/")
    if "://" in root and not root.startswith("file://"):
        raise ValueError(f"lakehouse_root {root} is not a local folder: set online.store to a redis:// or "
                         "sqlite:////abs/path URL the servers and the stream job can all reach")
    return f"sqlite:///{root.removeprefix('file://')}/_online/store.sqlite"


def petastorm_url(settings: Settings, ds: str) -> str:
    """URL of the folder Petastorm materialises training data in (under the scratch folder)."""
    scratch = settings.scratch_dir.rstrip("/")
    if "://" in scratch:
        return f"{scratch}/petastorm/{ds}"
    return Path(scratch, "petastorm", ds).resolve().as_uri()


def table_path(settings: Settings, table: str) -> str:
    """``<lakehouse_root>/<layer>/<name>`` for a table name such as ``silver.events``."""
    if table not in PARTITIONS:
        raise KeyError(f"unknown table {table!r}; known: {', '.join(ALL_TABLES)}")
    layer, name = table.split(".", 1)
    return f"{settings.lakehouse_root.rstrip('/')}/{layer}/{name}"
