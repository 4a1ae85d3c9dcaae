"""Offline evaluation: hold-out splits, models side by side, a Markdown report with a plot.

Two protocols:

- ``random``: per-user stratified random split of the user-item pairs (each user keeps
  1 - test_fraction of their items for training): the protocol of the published MovieLens tables.
- ``temporal``: a global cut-off at the (1 - test_fraction) quantile of event time; training sees only
  events before it, and the test set is each warm user's items after it that were new to them.

Every model scores all items it can, never an item the user trained on, and is judged on the test
items of users who have training data (``metrics.py`` holds the definitions).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from liverec import als, metrics, vectors
from liverec.config import AlsSettings, Settings

MODELS = ("popularity", "als")


@dataclass
class SplitResult:
    split: str
    train_pairs: int
    test_pairs: int
    test_users: int
    catalogue: int
    results: dict[str, dict[str, float]]
    als_fit_seconds: float


def random_split(pairs: DataFrame, test_fraction: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """Per-user stratified split of (user_id, item_id, ...) pairs; deterministic for a seed."""
    from pyspark.sql import Window

    order = Window.partitionBy("user_id").orderBy(F.xxhash64(F.lit(seed), "user_id", "item_id"), "item_id")
    ranked = pairs.withColumn("_r", F.row_number().over(order)).withColumn(
        "_n", F.count("*").over(Window.partitionBy("user_id")))
    keep = F.col("_r") <= F.round(F.col("_n") * (1.0 - test_fraction))
    return ranked.where(keep).drop("_r", "_n"), ranked.where(~keep).drop("_r", "_n")


def temporal_split(events: DataFrame, test_fraction: float) -> tuple[DataFrame, DataFrame, Any]:
    """Events before / from the cut-off; returns (train events, test events, cut-off timestamp)."""
    seconds = events.select(F.col("ts").cast("double").alias("t"))
    cutoff = seconds.approxQuantile("t", [1.0 - test_fraction], 0.001)[0]
    cut = F.timestamp_micros(F.lit(int(cutoff * 1e6)))
    return events.where(F.col("ts") < cut), events.where(F.col("ts") >= cut), cutoff


def evaluate_split(spark: SparkSession, split: str, train: DataFrame, test: DataFrame, als_conf: AlsSettings,
                   k: int, checkpoint_dir: str) -> SplitResult:
    """train: (user_id, item_id, strength); test: (user_id, item_id). Fits ALS and popularity on train."""
    import time

    train = train.select("user_id", "item_id", "strength").cache()
    test = test.select("user_id", "item_id").distinct().join(train.select("user_id").distinct(), "user_id")
    test = test.join(train.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti").cache()
    users, _ = als.index_ids(train)
    # index train and test items together: test-only items cannot be recommended but still count as relevant
    _, items = als.index_ids(train.select("user_id", "item_id").unionByName(test))
    users, items = users.cache(), items.cache()
    ratings = train.join(users, "user_id").join(items, "item_id").select("user_idx", "item_idx", "strength").cache()
    n_users = users.count()

    started = time.monotonic()
    model = als.fit(spark, ratings, als_conf, checkpoint_dir)
    item_vecs = model.itemFactors.select(F.col("id").alias("item_idx"), "features").cache()
    item_vecs.count()
    fit_seconds = time.monotonic() - started
    user_vecs = model.userFactors.select(F.col("id").alias("user_idx"), "features")

    seen = ratings.groupBy("user_idx").agg(F.collect_list("item_idx").alias("seen"))
    popularity = ratings.groupBy("item_idx").agg(F.countDistinct("user_idx").alias("users")).cache()
    recs = {
        "als": vectors.top_k(user_vecs, item_vecs, seen, k),
        "popularity": vectors.top_k(
            users.select("user_idx", F.array(F.lit(1.0)).alias("features")),
            popularity.select("item_idx", F.array(F.col("users").cast("float")).alias("features")), seen, k),
    }
    labels = (test.join(users, "user_id").join(items, "item_id").groupBy("user_idx")
              .agg(F.collect_list(F.col("item_idx").cast("double")).alias("label")))
    catalogue = ratings.select("item_idx").distinct().count()
    results = {}
    for name in MODELS:
        lists = labels.join(recs[name], "user_idx", "left").select(
            F.col("user_idx").alias("user"),
            F.coalesce(F.transform("items", lambda i: i.cast("double")), F.array().cast("array<double>"))
            .alias("prediction"), "label")
        results[name] = metrics.all_metrics(lists, k, catalogue, item_vecs, popularity, n_users)
    out = SplitResult(split, ratings.count(), test.count(), labels.count(), catalogue, results, fit_seconds)
    for df in (train, test, users, items, ratings, item_vecs, popularity):
        df.unpersist()
    return out


def run(spark: SparkSession, settings: Settings, events: DataFrame, splits: list[str], k: int,
        checkpoint_dir: str) -> list[SplitResult]:
    out = []
    weights = settings.clean.event_weights
    if "random" in splits:
        pairs = als.strengths(events, settings.als, weights)
        train, test = random_split(pairs, settings.evaluate.random_test_fraction, settings.evaluate.seed)
        out.append(evaluate_split(spark, "random", train, test, settings.als, k, checkpoint_dir))
    if "temporal" in splits:
        before, after, _ = temporal_split(events, settings.evaluate.temporal_test_fraction)
        train = als.strengths(before, settings.als, weights)
        out.append(evaluate_split(spark, "temporal", train, after.select("user_id", "item_id"), settings.als, k,
                                  checkpoint_dir))
    return out


METRIC_ORDER = ("ndcg", "precision", "recall", "map", "hit_rate", "coverage", "diversity", "novelty")


def write_report(results: list[SplitResult], k: int, folder: Path, title: str) -> dict[str, Path]:
    """Markdown report, PNG plot and JSON under ``folder``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": folder / "evaluation.md", "plot": folder / "evaluation.png", "json": folder / "evaluation.json"}
    lines = [f"# {title}", "", f"All metrics at K = {k}; definitions in `lib/liverec/metrics.py`.", ""]
    for r in results:
        lines += [f"## {r.split} split", "",
                  f"{r.train_pairs:,} training pairs, {r.test_pairs:,} test pairs, {r.test_users:,} test users, "
                  f"{r.catalogue:,} items in the catalogue; ALS fit {r.als_fit_seconds:.1f}s.", "",
                  "| model | " + " | ".join(METRIC_ORDER) + " |", "|---" * (len(METRIC_ORDER) + 1) + "|"]
        for model, m in r.results.items():
            lines.append(f"| {model} | " + " | ".join(f"{m[x]:.4f}" for x in METRIC_ORDER) + " |")
        lines.append("")
    lines.append(f"![metrics]({paths['plot'].name})")
    paths["markdown"].write_text("\n".join(lines) + "\n", encoding="utf-8")

    shown = ("ndcg", "precision", "recall", "map", "hit_rate", "coverage", "diversity")
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        width = 0.8 / max(len(r.results), 1)
        for j, (model, m) in enumerate(r.results.items()):
            ax.bar([i + j * width for i in range(len(shown))], [m[x] for x in shown], width, label=model)
        ax.set_xticks([i + width * (len(r.results) - 1) / 2 for i in range(len(shown))])
        ax.set_xticklabels([f"{x}@{k}" if x not in ("coverage", "diversity") else x for x in shown], rotation=30)
        ax.set_title(f"{r.split} split")
        ax.set_ylim(0, 1)
        ax.legend()
    fig.tight_layout()
    fig.savefig(paths["plot"], dpi=110)
    plt.close(fig)
    paths["json"].write_text(json.dumps([asdict(r) for r in results], indent=2, default=_finite) + "\n")
    return paths


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else str(x)
