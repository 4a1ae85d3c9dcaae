"""Offline evaluation: hold-out splits, the published product beside the baselines, a Markdown report with
a plot.

Two protocols (``liverec.splits``):

- ``random``: per-user stratified random split of the user-item pairs (each user keeps
  1 - test_fraction of their items for training): the protocol of the published MovieLens tables.
- ``temporal``: a global cut-off at the (1 - test_fraction) quantile of event time; training sees only
  events before it, and the test set is each warm user's items after it that were new to them.

Models, all fitted on the split's training events only:

- ``product``: what liverec publishes, through the stages' own library calls (``liverec.product``):
  profiles, ALS and EASE on the training events, the ranker trained on examples built from them by the
  production example builder (``ranker.label_split``), the promotion gate's comparison with the
  baselines on its validation users, then the nightly path for the test users: the ranked path if the
  ranker won, the best baseline's chain if not (exactly what recommend_nightly would publish);
- ``popularity``, ``als`` and ``ease`` (EASE, when the catalogue is at most ``ease.max_items``).

Every model scores all items it can, never an item the user trained on, and is judged on the test
items of users who have training data (``metrics.py`` holds the definitions). The report folder also
keeps each model's lists and the test pairs (``lists/``, ``truth/``: Parquet), so any number in the report
can be recomputed from them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from liverec import als, candidates, ease, metrics, product, profiles, splits, vectors
from liverec.config import Settings
from liverec.errors import InputError

MODELS = ("product", "popularity", "als", "ease")
SPLITS = splits.PROTOCOLS


@dataclass
class SplitResult:
    split: str
    train_pairs: int
    test_pairs: int
    test_users: int
    catalogue: int
    results: dict[str, dict[str, float]]
    als_fit_seconds: float
    notes: dict[str, Any] = field(default_factory=dict)  # what the product did: ranker or baseline, gate numbers


@dataclass
class ProductInputs:
    """What the publishing path reads besides events: the catalogue, embeddings, neighbours, social edges."""

    items: DataFrame
    item_embeddings: DataFrame | None
    neighbors: DataFrame | None
    social: DataFrame | None
    key: bytes
    ds: str
    scratch: str  # checkpoints and the Petastorm cache


def _lists(recs: DataFrame, users: DataFrame, items: DataFrame) -> DataFrame:
    """(user_idx, items array<int>) of ranked rows (user_id, rank, item_id) by the evaluation's indices; an item
    outside the index (never seen in training or test) keeps its place as -1, relevant to nobody."""
    rows = (recs.join(users, "user_id").join(items, "item_id", "left")
            .select("user_idx", "rank", F.coalesce("item_idx", F.lit(-1)).alias("item_idx")))
    return rows.groupBy("user_idx").agg(F.sort_array(F.collect_list(F.struct("rank", "item_idx"))).alias("l")) \
        .select("user_idx", F.transform("l", lambda x: x["item_idx"]).alias("items"))


def _ease_recs(spark: SparkSession, model: ease.EaseModel, train: DataFrame, users: DataFrame, k: int) -> DataFrame:
    """(user_id, rank, item_id) of EASE's top k for ``users``."""
    return candidates.ease_lists(spark, model, train.select("user_id", "item_id"), users, k).select(
        "user_id", "rank", "item_id")


def _product(spark: SparkSession, settings: Settings, split: str, train_events: DataFrame, test_users: DataFrame,
             uf: DataFrame, itf: DataFrame, ease_model: ease.EaseModel | None, inputs: ProductInputs
             ) -> tuple[DataFrame, dict[str, Any]]:
    """(user_id, rank, item_id) rows the publishing path gives ``test_users`` from ``train_events`` alone, and
    notes on what it did (the gate's numbers, the candidate recall, ranker or baseline)."""
    import mlflow

    from liverec import policy, registry, tables
    from liverec.ranker import pyfunc, train
    from liverec.ranker.examples import VALID_COLUMNS

    conf = settings.ranker
    prof = profiles.build_profiles(train_events, inputs.items, inputs.social, settings.profiles,
                                   settings.clean.event_weights, inputs.key, inputs.item_embeddings).localCheckpoint()
    notes: dict[str, Any] = {}
    ranker = None
    best = product.choose_baseline(settings.recommend.baseline, None, ease_model)
    try:
        made = product.make_examples(spark, train_events, inputs.items, inputs.item_embeddings, inputs.neighbors,
                                     inputs.social, settings, inputs.key,
                                     f"{inputs.scratch}/checkpoints/eval-ranker-{split}-{inputs.ds}")
    except InputError as err:
        notes["ranker"] = f"not trained: {err}"
    else:
        notes["label_candidate_recall"] = made.recall
        rows = made.rows.cache()
        factor = made.vocab.where(F.col("als_factor").isNotNull()).select(F.size("als_factor")).first()
        result = train.fit(spark, rows, made.vocab, conf, int(factor[0]) if factor else settings.als.rank,
                           tables.petastorm_url(settings, f"eval-{split}-{inputs.ds}"))
        valid = rows.where(F.col("split") == "valid").select(*VALID_COLUMNS).toPandas()
        ids = made.vocab.select("item_id", "item_idx").toPandas()
        vocab = dict(zip(ids["item_id"], ids["item_idx"].astype(int).tolist(), strict=True))
        info = pyfunc.log_model(result.shape, result.state, vocab, conf.recent_items,
                                pyfunc.pyfunc_frame(valid.head(5)), name=f"product_ranker_{split}")
        scores = pyfunc.score_examples(mlflow.pyfunc.load_model(info.model_uri), valid)
        quality = metrics.list_quality(valid, scores, settings.recommend.top_n, registry.BASELINES)
        baselines = {m: v for m, v in quality.items() if m != "ranker"}
        measured = max(baselines, key=baselines.get) if baselines else None
        best = product.choose_baseline(settings.recommend.baseline, measured, ease_model)
        wins = not baselines or quality["ranker"] > max(baselines.values())
        notes["gate"] = quality
        notes["ranker"] = "ranked the product (beat the baselines on its validation users)" if wins else \
            f"lost to the {measured} baseline on its validation users: the product is the {best} baseline"
        if wins:
            ranker = registry.Champion("evaluation", split, mlflow.active_run().info.run_id, info.model_uri)
        rows.unpersist()
    # the ranker trained here is logged without compiled variants: it scores with eager PyTorch whatever
    # ranker.scoring_variant asks of the registered versions
    from liverec.ranker import compiled

    eager = replace(settings, ranker=replace(settings.ranker, scoring_variant=compiled.TORCH))
    published = product.publish(spark, train_events, test_users, inputs.items, prof, uf, itf, None, ease_model, None,
                                inputs.item_embeddings, inputs.neighbors, inputs.social, eager, inputs.key, ranker,
                                best, inputs.ds, blocked=policy.load(settings.policy, inputs.items))
    recs = published.rows.select("user_id", "rank", "item_id", "source").localCheckpoint()
    notes["sources"] = {r["source"]: r["count"] for r in recs.groupBy("source").count().collect()}
    notes["baseline"] = best
    return recs.select("user_id", "rank", "item_id"), notes


def evaluate_split(spark: SparkSession, settings: Settings, split: str, train_events: DataFrame, test: DataFrame,
                   k: int, checkpoint_dir: str, inputs: ProductInputs | None = None,
                   categories: DataFrame | None = None) -> tuple[SplitResult, DataFrame]:
    """train_events: the split's training events; test: held-out (user_id, item_id). Returns the result and
    every model's lists (model, user_id, rank, item_id) for the report folder. ``inputs`` None leaves the
    product out; ``categories`` (item_id, categories) adds the calibration metric."""
    als_conf = settings.als
    train_events = train_events.cache()
    train = als.strengths(train_events, als_conf, settings.clean.event_weights).cache()
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
    test_users = test.select("user_id").distinct().cache()
    test_idx = test_users.join(users, "user_id").select("user_idx")
    lists = {
        "als": vectors.top_k(user_vecs.join(test_idx, "user_idx"), item_vecs, seen, k).select("user_idx", "items"),
        "popularity": vectors.top_k(
            test_idx.select("user_idx", F.array(F.lit(1.0)).alias("features")),
            popularity.select("item_idx", F.array(F.col("users").cast("float")).alias("features")), seen, k)
        .select("user_idx", "items"),
    }
    notes: dict[str, Any] = {}
    ease_model = None
    if settings.ease.enabled:
        try:
            ease_model, ease_rows = ease.fit(train.select("user_id", "item_id"), settings.ease.reg_lambda,
                                             settings.ease.max_items)
            ease_rows.unpersist()
        except InputError as err:
            notes["ease"] = f"left out: {err}"
    ranked: dict[str, DataFrame] = {}
    if ease_model is not None:
        ranked["ease"] = _ease_recs(spark, ease_model, train, test_users, k)
    if inputs is not None:
        uf, itf = als.factor_frames(model, users, items)
        ranked["product"], product_notes = _product(spark, settings, split, train_events, test_users, uf, itf,
                                                    ease_model, inputs)
        notes.update(product=product_notes)
    for name, recs in ranked.items():
        lists[name] = _lists(recs.where(F.col("rank") <= k), users, items)
    labels = (test.join(users, "user_id").join(items, "item_id").groupBy("user_idx")
              .agg(F.collect_list(F.col("item_idx").cast("double")).alias("label")))
    catalogue = ratings.select("item_idx").distinct().count()
    history = ratings.select(F.col("user_idx").alias("user"), "item_idx")
    item_cats = None
    if categories is not None:
        item_cats = categories.join(items, "item_id").select("item_idx", "categories").cache()
    results = {}
    for name in [m for m in MODELS if m in lists]:
        scored = labels.join(lists[name], "user_idx", "left").select(
            F.col("user_idx").alias("user"),
            F.coalesce(F.transform("items", lambda i: i.cast("double")), F.array().cast("array<double>"))
            .alias("prediction"), "label")
        results[name] = metrics.all_metrics(scored, k, catalogue, item_vecs, popularity, n_users, history, item_cats)
    if item_cats is not None:
        item_cats.unpersist()
    ids = items.select("item_idx", "item_id")
    out_lists = None
    for name in results:
        part = (lists[name].join(users, "user_idx").select("user_id", F.posexplode("items").alias("p", "item_idx"))
                .join(ids, "item_idx", "left")
                .select(F.lit(name).alias("model"), "user_id", (F.col("p") + 1).alias("rank"), "item_id"))
        out_lists = part if out_lists is None else out_lists.unionByName(part)
    out = SplitResult(split, ratings.count(), test.count(), labels.count(), catalogue, results, fit_seconds, notes)
    out_lists = out_lists.withColumn("split", F.lit(split)).localCheckpoint()
    truth = test.select(F.lit(split).alias("split"), "user_id", "item_id").localCheckpoint()
    for df in (train_events, train, test, users, items, ratings, item_vecs, popularity, test_users):
        df.unpersist()
    return out, out_lists.unionByName(truth.select("split", F.lit("truth").alias("model"), "user_id",
                                                   F.lit(0).alias("rank"), "item_id"))


def run(spark: SparkSession, settings: Settings, events: DataFrame, split_names: list[str], k: int,
        checkpoint_dir: str, inputs: ProductInputs | None = None, categories: DataFrame | None = None
        ) -> list[tuple[SplitResult, DataFrame]]:
    conf = settings.evaluate
    out = []
    for name in split_names:
        fraction = conf.random_test_fraction if name == "random" else conf.temporal_test_fraction
        train, held, _ = splits.holdout(events, name, fraction, conf.seed)
        out.append(evaluate_split(spark, settings, name, train, held, k, checkpoint_dir, inputs, categories))
    return out


METRIC_ORDER = ("ndcg", "precision", "recall", "map", "hit_rate", "coverage", "diversity", "novelty")
# exposure and calibration (liverec.metrics): their own table and plot row
EXPOSURE_ORDER = ("exposure_gini", "tail_exposure", "tail_interactions", "avg_popularity", "calibration_kl",
                  "category_exposure_gap")


def write_report(results: list[SplitResult], k: int, folder: Path, title: str) -> dict[str, Path]:
    """Markdown report, PNG plot and JSON under ``folder``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": folder / "evaluation.md", "plot": folder / "evaluation.png", "json": folder / "evaluation.json"}
    lines = [f"# {title}", "", f"All metrics at K = {k}; definitions in `lib/liverec/metrics.py`. `product` is what "
             "the publishing path gives the test users when it sees the training part only (lib/liverec/evaluation.py).",
             ""]
    for r in results:
        lines += [f"## {r.split} split", "",
                  f"{r.train_pairs:,} training pairs, {r.test_pairs:,} test pairs, {r.test_users:,} test users, "
                  f"{r.catalogue:,} items in the catalogue; ALS fit {r.als_fit_seconds:.1f}s.", "",
                  "| model | " + " | ".join(METRIC_ORDER) + " |", "|---" * (len(METRIC_ORDER) + 1) + "|"]
        for model, m in r.results.items():
            lines.append(f"| {model} | " + " | ".join(f"{m[x]:.4f}" for x in METRIC_ORDER) + " |")
        lines += ["", "Exposure and calibration (position-discounted exposure; the tail is the catalogue outside the "
                  "top 20% by training popularity, tail_interactions its share of the training interactions; "
                  "calibration_kl: KL of each user's training category mix to their list's, lower is closer; "
                  "category_exposure_gap: total variation distance between the categories' shares of exposure and "
                  "of the training interactions):", "",
                  "| model | " + " | ".join(EXPOSURE_ORDER) + " |", "|---" * (len(EXPOSURE_ORDER) + 1) + "|"]
        for model, m in r.results.items():
            lines.append(f"| {model} | " + " | ".join(f"{m[x]:.4f}" if x in m else "-" for x in EXPOSURE_ORDER) + " |")
        lines.append("")
        prod = r.notes.get("product")
        if prod:
            lines.append(f"Product: the ranker {prod.get('ranker', '')}; rows by source "
                         f"{json.dumps(prod.get('sources', {}))}.")
            if "gate" in prod:
                lines.append("Gate on the ranker's validation users (NDCG@N of the top N): " + ", ".join(
                    f"{m} {v:.4f}" for m, v in prod["gate"].items()) + ".")
            if "label_candidate_recall" in prod:
                lines.append("Share of the ranker's held-out labels its candidates found: " + ", ".join(
                    f"{m} {v:.3f}" for m, v in prod["label_candidate_recall"].items()) + ".")
            lines.append("")
        if "ease" in r.notes:
            lines += [f"EASE {r.notes['ease']}", ""]
    lines.append(f"![metrics]({paths['plot'].name})")
    paths["markdown"].write_text("\n".join(lines) + "\n", encoding="utf-8")

    shown = ("ndcg", "precision", "recall", "map", "hit_rate", "coverage", "diversity")
    fig, axes = plt.subplots(2, len(results), figsize=(6 * len(results), 8), squeeze=False)
    for col, r in enumerate(results):
        width = 0.8 / max(len(r.results), 1)
        for ax, names, title in ((axes[0][col], shown, "accuracy and beyond"),
                                 (axes[1][col], EXPOSURE_ORDER, "exposure and calibration")):
            for j, (model, m) in enumerate(r.results.items()):
                ax.bar([i + j * width for i in range(len(names))], [m.get(x, 0.0) for x in names], width, label=model)
            ax.set_xticks([i + width * (len(r.results) - 1) / 2 for i in range(len(names))])
            ax.set_xticklabels([f"{x}@{k}" if x not in ("coverage", "diversity", "tail_interactions") else x
                                for x in names], rotation=30)
            ax.set_title(f"{r.split} split: {title}")
            if names is shown:
                ax.set_ylim(0, 1)
            ax.legend()
    fig.tight_layout()
    fig.savefig(paths["plot"], dpi=110)
    plt.close(fig)
    paths["json"].write_text(json.dumps([asdict(r) for r in results], indent=2, default=_finite) + "\n")
    return paths


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else str(x)
