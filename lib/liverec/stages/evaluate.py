"""``evaluate``: the published product beside popularity, ALS and EASE on held-out data (``liverec.evaluation``)
-> a Markdown report, a plot, JSON, the lists as Parquet, and MLflow."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from liverec import tables
from liverec.errors import InputError
from liverec.stages.base import EVALUATION_REPORT, NIGHTLY, Context, Stage, latest, require_silver, social


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    from liverec.splits import PROTOCOLS

    p.add_argument("--split", choices=(*PROTOCOLS, "both"),
                   help="per-user stratified random split, temporal cut-off, or both (default: conf evaluate.splits)")
    p.add_argument("--k", type=int, help="cut-off K (default: conf evaluate.k)")
    p.add_argument("--output", help="also write the results as JSON to this file")


def run_evaluate(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    from liverec import catalog, cleaning, evaluation

    spark, settings, progress = ctx.spark, ctx.settings, ctx.progress
    events = require_silver(ctx).cache()
    n_events = events.count()
    k = getattr(args, "k", None) or settings.evaluate.k
    if k <= 0:
        raise InputError(f"--k must be positive, got {k}")
    split = getattr(args, "split", None)
    names = list(evaluation.SPLITS) if split == "both" else [split] if split else list(settings.evaluate.splits)
    unknown = sorted(set(names) - set(evaluation.SPLITS))
    if unknown or not names:
        raise InputError(f"evaluate.splits: unknown split(s) {unknown or '(none given)'}; use "
                         f"{', '.join(evaluation.SPLITS)}")
    progress.step("read silver.events", n_events)
    checkpoints = tables.checkpoint_path(settings, "eval", ctx.ds)
    inputs = None
    if settings.evaluate.product:
        emb, _ = latest(ctx, tables.ITEM_EMBEDDINGS)
        neighbors, _ = latest(ctx, tables.ITEM_NEIGHBORS)
        inputs = evaluation.ProductInputs(catalog.latest_items(spark, settings, ctx.ds), emb, neighbors, social(ctx),
                                          cleaning.id_key(settings), ctx.ds, settings.scratch_dir)
    else:
        progress.info("evaluate.product is false: the published product is not evaluated, baselines only")
    results, lists = [], None
    for name in names:
        (r, found), = evaluation.run(spark, settings, events, [name], k, checkpoints, inputs,
                                     catalog.latest_items(spark, settings, ctx.ds).select("item_id", "categories"))
        results.append(r)
        lists = found if lists is None else lists.unionByName(found)
        progress.step(f"{name} split", r.test_pairs, users=r.test_users,
                      **{f"{m}_ndcg@{k}": round(v["ndcg"], 4) for m, v in r.results.items()})
        if "product" in r.notes:
            progress.info(f"  product: the ranker {r.notes['product'].get('ranker')}")
    folder = Path(settings.evaluate.report_dir) / ctx.ds
    paths = evaluation.write_report(results, k, folder, f"liverec evaluation, ds {ctx.ds}")
    lists.coalesce(1).write.mode("overwrite").partitionBy("split", "model").parquet(str(folder / "lists"))
    summary: dict[str, Any] = {"report": str(paths["markdown"])}
    for r in results:
        for model, m in r.results.items():
            for metric, value in m.items():
                summary[f"{r.split}.{model}.{metric}"] = value
    mlflow.log_artifacts(str(folder), "evaluation")
    out = getattr(args, "output", None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(paths["json"].read_text())
    progress.info(f"report: {paths['markdown']} (lists and test pairs: {folder / 'lists'})")
    events.unpersist()
    return summary


STAGES = (
    Stage("evaluate", "hold-out evaluation of the published product beside popularity, ALS and EASE -> "
          "Markdown report, plot, MLflow", reads=(tables.SILVER_EVENTS, tables.BRONZE_ITEMS, tables.BRONZE_SOCIAL,
                                                  tables.ITEM_EMBEDDINGS, tables.ITEM_NEIGHBORS),
          writes=(EVALUATION_REPORT,), run=run_evaluate, add_arguments=_evaluate_arguments, dag=NIGHTLY),
)
