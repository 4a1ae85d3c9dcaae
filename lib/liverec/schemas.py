"""Every table's schema: the one place that says what a table holds."""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
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

USER_PROFILES = StructType([
    _s("user_id", False),
    StructField("n_events", LongType(), False),
    StructField("event_counts", MapType(StringType(), LongType()), False),  # event_type -> events
    StructField("first_seen", TimestampType(), False),
    StructField("last_seen", TimestampType(), False),
    StructField("n_items", LongType(), False),  # distinct items interacted with
    # category -> recency-weighted share of the user's weighted events (sums to 1 where items have categories)
    StructField("category_affinity", MapType(StringType(), DoubleType()), True),
    StructField("top_categories", ArrayType(StringType()), True),  # by affinity, highest first
    StructField("recent_items", ArrayType(StringType()), False),  # last N distinct items, newest first
    StructField("friend_count", IntegerType(), False),
    StructField("friends_top_items", ArrayType(StringType()), True),  # friends' most weighted items
    # unit-length recency-weighted mean of the embeddings of the user's items (null without embeddings)
    StructField("content_vector", ArrayType(FloatType()), True),
    _s("ds", False),
])

USER_FACTORS = StructType([
    _s("user_id", False),
    StructField("user_idx", IntegerType(), False),  # ALS's integer id, valid within this ds
    StructField("features", ArrayType(FloatType()), False),
    _s("model_run_id", False),  # MLflow run of the ALS fit
    _s("ds", False),
])

ITEM_FACTORS = StructType([
    _s("item_id", False),
    StructField("item_idx", IntegerType(), False),
    StructField("features", ArrayType(FloatType()), False),
    _s("model_run_id", False),
    _s("ds", False),
])

EASE_WEIGHTS = StructType([  # the EASE model of a ds: row i of B (lib/liverec/ease.py), one row per item
    _s("item_id", False),
    StructField("item_idx", IntegerType(), False),  # the row's (and column's) position in B, valid within this ds
    StructField("weights", ArrayType(FloatType()), False),  # B[item_idx, :]: how much the item adds to each item
    StructField("reg_lambda", DoubleType(), False),
    _s("model_run_id", False),  # MLflow run of the fit
    _s("ds", False),
])

RECOMMENDATIONS = StructType([
    _s("user_id", False),
    StructField("rank", IntegerType(), False),  # 1 = best
    _s("item_id", False),
    StructField("score", DoubleType(), False),
    _s("reason", False),  # human-readable: why this item
    _s("source", False),  # ease | als | content | friends | popular_category | popular: what led to the item
    _s("model_run_id"),  # MLflow run that produced the model behind the score (null for popularity)
    _s("model_version", False),  # ranker:<name>/<version>, ease:<run id>, als:<run id>, content:..., popularity:<ds>
    _s("ds", False),
])

ITEM_EMBEDDINGS = StructType([
    _s("item_id", False),
    _s("text_hash", False),  # sha256 of model name + text: a rerun re-encodes only items whose hash changed
    _s("text_source", False),  # text (title/description with categories) | category (fallback: categories only)
    StructField("embedding", ArrayType(FloatType()), False),  # unit length
    _s("model", False),  # the encoder (conf embeddings.model)
    _s("ds", False),
])

ITEM_NEIGHBORS = StructType([
    _s("item_id", False),
    StructField("rank", IntegerType(), False),  # 1 = most similar
    _s("neighbor_id", False),
    StructField("similarity", DoubleType(), False),  # cosine of the text embeddings
    _s("model", False),
    _s("ds", False),
])

RANKER_EXAMPLES = StructType([
    _s("user_id", False),
    _s("item_id", False),
    StructField("label", DoubleType(), False),  # 1 = a held-out pair of the user (ranker.label_split)
    _s("split", False),  # train | valid (by a hash of the user id)
    StructField("n_labels", IntegerType(), False),  # the user's held-out pairs, candidates or not
    # positives and ranker.negatives_per_user drawn negatives: what training and the per-epoch validation read
    # (a validation user also keeps the other candidates, for the promotion gate's top N)
    StructField("sampled", BooleanType(), False),
    # a negative's weight in the sampled softmax: 1, or for a candidate the user was shown and did not click (an
    # impression of gold.feedback, ranker.impression_negatives) its inverse propensity, clipped
    StructField("weight", DoubleType(), True),
    StructField("sources", ArrayType(StringType()), False),  # the candidate sources that found the item
    StructField("als_rank", IntegerType(), True),  # rank in the user's ALS list (null beyond it)
    StructField("ease_rank", IntegerType(), True),  # rank in the user's EASE list (null beyond it)
    StructField("dense", ArrayType(FloatType()), False),  # liverec.ranker.examples.DENSE_FEATURES, in order
    StructField("recent_items", ArrayType(StringType()), True),  # the user's last items of the history
    StructField("item_idx", IntegerType(), False),  # in gold.ranker_items of the same ds (0 = unknown)
    StructField("recent_idx", ArrayType(IntegerType()), True),
    StructField("cutoff_ts", TimestampType(), False),  # the history's newest event (random) or the time cut
    _s("ds", False),
])

RANKER_ITEMS = StructType([  # the ranker's item vocabulary and its embedding tables' initial values
    _s("item_id", False),
    StructField("item_idx", IntegerType(), False),  # from 1; 0 is padding / unknown
    StructField("als_factor", ArrayType(FloatType()), True),  # ALS on the history before the cut-off
    StructField("text_embedding", ArrayType(FloatType()), True),
    _s("ds", False),
])

# one entry of gold.user_recent's list: the newest event of one item. Never null by contract, but declared
# nullable: Delta does not enforce NOT NULL inside arrays and refuses a schema that asks it to.
RECENT_ITEM = StructType([_s("item_id"), _s("event_type"), StructField("ts", TimestampType()), _s("event_id")])

USER_RECENT = StructType([  # kept fresh by stream_events (a MERGE per micro-batch); not partitioned
    _s("user_id", False),  # HMAC-SHA256 pseudonym, as in silver.events
    # at most stream.recent_items distinct items, newest first (ts, then event_id, descending); each item once,
    # with its newest event
    StructField("recent", ArrayType(RECENT_ITEM), False),
    StructField("updated_at", TimestampType(), False),  # when the last MERGE touched the row
])

SILVER_IMPRESSIONS = StructType([  # liverec.impressions: one row per shown item, each impression once
    _s("impression_id", False),  # <request_id>:<position>
    _s("request_id", False),  # an online answer's id, or nightly:<ds>:<user_id> for a nightly list
    _s("user_id"),  # HMAC-SHA256 pseudonym; null for a visitor
    _s("item_id", False),
    StructField("position", IntegerType(), False),  # 1 = first
    _s("policy"),  # what chose the list: the ranker's (or baseline's) version
    StructField("propensity", DoubleType(), False),  # P(the policy shows this list up to this position)
    StructField("score", DoubleType(), True),  # the policy's score of the item
    _s("surface", False),  # online | nightly
    StructField("explored", BooleanType(), True),  # the list was sampled by exploration (feedback.exploration_*)
    # on position 1 of an answer served with exploration on: the candidates it drew from (the served list first)
    # and their standardised scores, what evaluate_offpolicy replays other policies on; else null
    StructField("pool", ArrayType(StringType()), True),
    StructField("pool_scores", ArrayType(DoubleType()), True),
    # with them: each pool candidate's ranker features (DENSE_FEATURES order) and the recent items the ranker read,
    # what the promotion gate re-scores with a new ranker (liverec.stages.feedback.ope_check)
    StructField("pool_dense", ArrayType(ArrayType(FloatType())), True),
    StructField("recent_items", ArrayType(StringType()), True),
    StructField("ts", TimestampType(), False),  # when it was shown
    _s("ds", False),
])

FEEDBACK = StructType([  # silver.impressions of a ds with the events that followed (feedback.attribution_seconds)
    *SILVER_IMPRESSIONS.fields[:-1],
    StructField("clicked", BooleanType(), False),  # an attributed event is in feedback.click_events
    StructField("events", LongType(), False),  # events attributed to the impression
    StructField("first_event_ts", TimestampType(), True),
    StructField("reward", DoubleType(), False),  # 1.0 when clicked
    _s("ds", False),
])

FORGET_AUDIT = StructType([  # what each `liverec forget` removed, per table: counts, never an id
    _s("run_id", False),  # the forget run's MLflow run id
    StructField("at", TimestampType(), False),
    _s("target", False),  # a table name, or store:online / files:impressions
    StructField("users_requested", IntegerType(), False),
    StructField("rows_deleted", LongType(), False),
    StructField("vacuumed", BooleanType(), False),  # the table's files older than forget.vacuum_retain_hours removed
    _s("ds", False),
])

SCHEMAS: dict[str, StructType] = {
    tables.BRONZE_EVENTS: BRONZE_EVENTS,
    tables.BRONZE_ITEMS: BRONZE_ITEMS,
    tables.BRONZE_SOCIAL: BRONZE_SOCIAL,
    tables.SILVER_EVENTS: SILVER_EVENTS,
    tables.SILVER_QUARANTINE: SILVER_QUARANTINE,
    tables.USER_PROFILES: USER_PROFILES,
    tables.USER_FACTORS: USER_FACTORS,
    tables.ITEM_FACTORS: ITEM_FACTORS,
    tables.EASE_WEIGHTS: EASE_WEIGHTS,
    tables.RECOMMENDATIONS: RECOMMENDATIONS,
    tables.ITEM_EMBEDDINGS: ITEM_EMBEDDINGS,
    tables.ITEM_NEIGHBORS: ITEM_NEIGHBORS,
    tables.RANKER_EXAMPLES: RANKER_EXAMPLES,
    tables.RANKER_ITEMS: RANKER_ITEMS,
    tables.USER_RECENT: USER_RECENT,
    tables.SILVER_IMPRESSIONS: SILVER_IMPRESSIONS,
    tables.FEEDBACK: FEEDBACK,
    tables.FORGET_AUDIT: FORGET_AUDIT,
}
