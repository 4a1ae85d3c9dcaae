"""MovieLens 100K for the benchmarks: events as the batch core reads them, items with genre lists, and
the packaged MiniLM's title + genre embeddings computed in Spark."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pyspark.sql import functions as F

from liverec import embeddings, metrics, readers
from liverec.cleaning import parse_ts


def load(spark, settings, data_dir: str):
    """(events, items, item_emb): events (user_id, item_id, event_type, value, ts), cached; items (item_id,
    title, categories, description); item_emb (item_id, embedding, ..., categories), cached and counted."""
    data = readers.read_movielens(spark, str(Path(data_dir) / "ml-100k"))
    events = data.events.select("user_id", "item_id", "event_type", F.col("value").cast("double").alias("value"),
                                parse_ts(F.col("ts")).alias("ts")).cache()
    cats = F.filter(F.split(F.coalesce(F.col("category"), F.lit("")), r"\|"), lambda c: c != "")
    items = data.items.select("item_id", "title", cats.alias("categories"), "description")
    texts = embeddings.item_texts(items, settings.embeddings).where(F.col("text").isNotNull())
    item_emb = (embeddings.encode(texts, settings.embeddings, 2).join(items.select("item_id", "categories"), "item_id")
                .cache())
    item_emb.count()
    return events, items, item_emb


def ndcg_of(spark, ranked: pd.DataFrame, test: pd.DataFrame, k: int = 10) -> dict[str, float]:
    """ranked: user_id, item_id, score (any number per user); test: user_id, item_id."""
    ids = {i: n for n, i in enumerate(sorted(set(ranked["item_id"]) | set(test["item_id"])))}
    top = (ranked.sort_values(["user_id", "score"], ascending=[True, False]).groupby("user_id").head(k)
           .groupby("user_id")["item_id"].apply(lambda s: [float(ids[i]) for i in s]))
    labels = test.groupby("user_id")["item_id"].apply(lambda s: [float(ids[i]) for i in s])
    rows = [(u, top.get(u, []), lab) for u, lab in labels.items()]
    lists = spark.createDataFrame(rows, "user string, prediction array<double>, label array<double>")
    return metrics.accuracy(lists, k)
