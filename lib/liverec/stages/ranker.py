"""The ranker stages: ``build_ranker_examples`` (held-out labels on the serving candidate union, leak-free
features), ``train_ranker`` (Petastorm + TorchDistributor DDP, registered in MLflow) and ``promote_ranker``
(the champion gate of ``liverec.registry``)."""

from __future__ import annotations

import argparse
from typing import Any

from liverec import tables
from liverec.errors import InputError
from liverec.stages.base import (
    CHAMPION,
    RANKER_VERSION,
    SKIPPED_TAG,
    TRAINING,
    Context,
    Stage,
    empty_partition,
    latest,
    log_conf,
    require_silver,
    skip_reason,
    social,
    write,
)

# the ranker.* keys that shape the examples (logged with them)
EXAMPLE_KNOBS = ("label_split", "label_fraction", "negatives_per_user", "negatives_per_positive", "recent_items",
                 "validation_fraction", "seed", "impression_negatives", "impression_days", "impression_weight_clip")


def run_build_ranker_examples(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow
    from pyspark.sql import functions as F

    from liverec import catalog, cleaning, lakehouse, product, splits

    spark, settings, progress, conf, ds = ctx.spark, ctx.settings, ctx.progress, ctx.settings.ranker, ctx.ds
    if conf.label_split not in splits.PROTOCOLS:
        raise InputError(f"ranker.label_split must be one of {', '.join(splits.PROTOCOLS)}, got {conf.label_split!r}")
    if not 0 < conf.label_fraction < 1 or not 0 < conf.validation_fraction < 1:
        raise InputError(f"ranker.label_fraction and ranker.validation_fraction must be between 0 and 1, got "
                         f"{conf.label_fraction} and {conf.validation_fraction}")
    if conf.recent_items <= 0 or conf.negatives_per_user <= 0 or conf.negatives_per_positive <= 0:
        raise InputError("ranker.recent_items, ranker.negatives_per_user and ranker.negatives_per_positive must be "
                         "positive")
    events = require_silver(ctx)
    log_conf("ranker", conf, EXAMPLE_KNOBS)
    mlflow.log_params({"input_version.silver.events": lakehouse.version(spark, settings, tables.SILVER_EVENTS)})
    emb, emb_ds = latest(ctx, tables.ITEM_EMBEDDINGS)
    if emb is None:
        progress.info("no gold.item_embeddings up to this ds: content features are 0 (run embed_items first)")
    neighbors, _ = latest(ctx, tables.ITEM_NEIGHBORS)
    items = catalog.latest_items(spark, settings, ds)
    shown = _impression_negatives(ctx)
    try:
        made = product.make_examples(spark, events, items, emb, neighbors, social(ctx), settings,
                                     cleaning.id_key(settings), tables.checkpoint_path(settings, "ranker-history", ds),
                                     shown)
    except InputError as err:
        # too little data to learn from: say so and why, leave an empty partition for this ds (so no older
        # examples pass for today's), and let the pipeline go on with the baseline (train_ranker names the reason)
        progress.info(f"no ranker examples for ds={ds}: {err}")
        mlflow.set_tag(SKIPPED_TAG, str(err)[:5000])
        for table in (tables.RANKER_EXAMPLES, tables.RANKER_ITEMS):
            empty_partition(ctx, table)
        return {"examples": 0, "skipped": str(err), "skip_stages": ["train_ranker"]}
    progress.step("label split", made.history_events, held_out_pairs=made.held_pairs, split=conf.label_split,
                  cutoff=str(made.cutoff), ease=made.ease_fitted)
    if shown is not None:
        kept = made.rows.where(F.col("label") == 0).join(shown, ["user_id", "item_id"], "left_semi").groupBy(
            "split").count().collect()
        used = {r["split"]: r["count"] for r in kept}
        progress.step("impression negatives", sum(used.values()), train=used.get("train", 0),
                      valid=used.get("valid", 0), shown_pairs=shown.count())
        mlflow.log_metrics({"impression_negatives.train": used.get("train", 0)})
    progress.step("candidates", None, **{f"recall_{k}": round(v, 4) for k, v in made.recall.items()})
    mlflow.log_metrics({f"candidate_recall.{k}": v for k, v in made.recall.items()})
    v_items, n_vocab = write(ctx, tables.RANKER_ITEMS, made.vocab.withColumn("ds", F.lit(ds)))
    v_ex = lakehouse.overwrite_partition(spark, settings, tables.RANKER_EXAMPLES, made.rows.withColumn("ds", F.lit(ds)),
                                         {"ds": ds})
    written = lakehouse.read(spark, settings, tables.RANKER_EXAMPLES, v_ex).where(F.col("ds") == ds)
    counts = {(r["split"], r["label"]): r["count"] for r in written.groupBy("split", "label").count().collect()}
    n_rows = sum(counts.values())
    summary = {"examples": n_rows, "history_events": made.history_events, "held_out_pairs": made.held_pairs,
               "items": n_vocab, "ranker_examples_version": v_ex, "ranker_items_version": v_items,
               "embeddings_ds": emb_ds, **{f"candidate_recall_{k}": v for k, v in made.recall.items()},
               **{f"{sp}_{'positive' if lab else 'negative'}": n for (sp, lab), n in counts.items()}}
    progress.step("write gold.ranker_examples", n_rows, version=v_ex,
                  **{k: v for k, v in summary.items() if k.startswith(("train_", "valid_"))})
    return summary


def _impression_negatives(ctx: Context) -> Any:
    """What the users were shown and did not click in the last ``ranker.impression_days`` days of gold.feedback up to
    ds, with inverse-propensity weights (``examples.impression_negatives``): None when ``ranker.impression_negatives``
    is off or nothing was logged."""
    import datetime as dt

    from pyspark.sql import functions as F

    from liverec import lakehouse
    from liverec.ranker.examples import impression_negatives

    conf = ctx.settings.ranker
    if not conf.impression_negatives:
        return None
    if conf.impression_days <= 0 or not conf.impression_weight_clip >= 1:
        raise InputError(f"ranker.impression_days must be positive and ranker.impression_weight_clip at least 1, got "
                         f"{conf.impression_days} and {conf.impression_weight_clip}")
    if not lakehouse.exists(ctx.spark, ctx.settings, tables.FEEDBACK):
        ctx.progress.info("ranker.impression_negatives is on but there is no gold.feedback (collect_feedback): no "
                          "impression negatives")
        return None
    first = (dt.date.fromisoformat(ctx.ds) - dt.timedelta(days=conf.impression_days - 1)).isoformat()
    fb = lakehouse.read(ctx.spark, ctx.settings, tables.FEEDBACK).where((F.col("ds") >= first) & (F.col("ds") <= ctx.ds))
    return impression_negatives(fb, conf.impression_weight_clip).localCheckpoint()


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-processes", type=int, help="DDP processes (default: conf ranker.num_processes)")
    p.add_argument("--no-promote", action="store_true",
                   help="register the new version only; promote_ranker decides (as the Airflow training DAG does)")


def _promote(ctx: Context, version: str, valid: Any, scores: Any, model: Any) -> dict[str, Any]:
    """The champion gate for ``version`` (its ``scores`` of the validation rows ``valid``; ``model`` the loaded
    pyfunc, for the off-policy check when ``feedback.ope_gate`` is on); logged and tagged."""
    import mlflow

    from liverec import registry
    from liverec.stages.feedback import ope_check

    conf, n = ctx.settings.ranker, ctx.settings.recommend.top_n
    ope = None
    if ctx.settings.feedback.ope_gate:
        holder = registry.champion(conf.registered_model, conf.champion_alias)
        ope = ope_check(ctx, model, holder.tag if holder is not None and holder.version != str(version) else None)
        ctx.progress.step("off-policy check", ope["lists"], **{k: (round(v, 4) if isinstance(v, float) else v)
                                                                for k, v in ope.items() if k != "lists"})
    decision = registry.promote(conf.registered_model, conf.champion_alias, str(version), valid, scores, n, ope)
    mlflow.log_params({f"promotion.{k}": v for k, v in decision.items()})
    mlflow.log_metrics({f"promotion.{k}": float(v) for k, v in decision.items()
                        if isinstance(v, float) and k.endswith(f"_at_{n}")})
    ctx.progress.step("register", None, model=conf.registered_model, version=version,
                      promoted=decision["promoted"], reason=decision["reason"])
    return decision


def training_inputs(ctx: Context) -> tuple[Any, Any, str, int]:
    """(examples, vocabulary, their ds, the id embedding's width) of the newest gold.ranker_examples up to ds, checked
    for the feature set this release reads."""
    from pyspark.sql import functions as F

    from liverec import lakehouse
    from liverec.features import DENSE_FEATURES
    from liverec.ranker.examples import VALID_COLUMNS

    spark, settings, conf, ds = ctx.spark, ctx.settings, ctx.settings.ranker, ctx.ds
    if conf.val_k <= 0:
        raise InputError(f"ranker.val_k must be positive, got {conf.val_k}")
    ex_ds = lakehouse.latest_ds(spark, settings, tables.RANKER_EXAMPLES, ds)
    if ex_ds is None:
        raise InputError(f"gold.ranker_examples has no partition up to ds={ds}: run build_ranker_examples first "
                         "(it fails, naming the counts, when the data give no positive example)")
    rows = lakehouse.read(spark, settings, tables.RANKER_EXAMPLES).where(F.col("ds") == ex_ds)
    if rows.limit(1).count() == 0:
        raise InputError(f"gold.ranker_examples ds={ex_ds} is empty: build_ranker_examples found nothing to learn "
                         f"from ({skip_reason(ex_ds, 'build_ranker_examples')}); the nightly job publishes the "
                         "baseline meanwhile")
    vocab = lakehouse.read(spark, settings, tables.RANKER_ITEMS).where(F.col("ds") == ex_ds).cache()
    missing = [c for c in VALID_COLUMNS if c not in rows.columns]
    width = rows.select(F.size("dense")).first()
    if missing or width is None or width[0] != len(DENSE_FEATURES):
        raise InputError(f"gold.ranker_examples ds={ex_ds} was built by another version (dense features: "
                         f"{width[0] if width else 0}, expected {len(DENSE_FEATURES)}; missing columns: "
                         f"{missing or 'none'}): rerun build_ranker_examples for that ds")
    factor = vocab.where(F.col("als_factor").isNotNull()).select(F.size("als_factor")).first()
    id_dim = int(factor[0]) if factor else settings.als.rank
    log_conf("ranker", conf)
    return rows, vocab, ex_ds, id_dim


def register_trained(ctx: Context, args: argparse.Namespace, result: Any, rows: Any, vocab: Any) -> dict[str, Any]:
    """A trained ranker (``train.TrainResult``) logged to MLflow, checked as a pyfunc on the validation rows,
    registered and judged by the promotion gate (unless ``--no-promote``); the stage's summary."""
    import mlflow
    from pyspark.sql import functions as F

    from liverec import registry
    from liverec.ranker import pyfunc, train
    from liverec.ranker.examples import VALID_COLUMNS

    progress, conf = ctx.progress, ctx.settings.ranker
    train.log_history(result, conf.val_k)
    progress.step("train", result.train_examples, processes=result.num_processes, device=result.device,
                  epochs=len(result.history), best_epoch=result.best_epoch, best_val_ndcg=round(result.best_ndcg, 4),
                  lists_per_s=round(result.examples_per_s, 1))
    version_tags: dict[str, Any] = {}
    if result.privacy is not None:
        p = result.privacy
        mlflow.log_params({f"privacy.{k}": v for k, v in p.items() if k != "epsilon"})
        mlflow.log_metrics({"privacy.epsilon": p["epsilon"], "privacy.steps": p["steps"]})
        version_tags = dict(zip(registry.PRIVACY_TAGS, (p["epsilon"], p["delta"]), strict=True))
        progress.step("privacy", None, epsilon=round(p["epsilon"], 3), delta=p["delta"], target=p["target_epsilon"],
                      noise_multiplier=round(p["noise_multiplier"], 3), steps=p["steps"],
                      sample_rate=round(p["sample_rate"], 5))

    # the model as a pyfunc: check it scores the validation set as the training loop did, then register
    valid = rows.where(F.col("split") == "valid").select(*VALID_COLUMNS).toPandas()
    info, loaded, scores = pyfunc.log_and_check(result, vocab, conf.recent_items, valid, conf.val_k,
                                                  conf.variant_max_ndcg_loss, conf.export_variants)
    scorer = loaded.unwrap_python_model()
    progress.step("variants", None, default=scorer.variant, **(
        {"skipped": scorer.variants_skipped} if scorer.variants_skipped else
        {f"{v}_pairs_per_s": int(r["pairs_per_s"]) for v, r in scorer.variants.items()} |
        {f"{v}_ndcg": round(r[f"ndcg_at_{conf.val_k}"], 4) for v, r in scorer.variants.items()}))
    version = registry.register(info.model_uri, conf.registered_model, version_tags)
    if getattr(args, "no_promote", False):
        decision = {"promoted": False, "reason": "left to promote_ranker (--no-promote)"}
        progress.step("register", None, model=conf.registered_model, version=int(version), promoted=False,
                      reason=decision["reason"])
    else:
        decision = _promote(ctx, version, valid, scores, loaded)
    vocab.unpersist()
    return {"version": int(version), f"best_val_ndcg_at_{conf.val_k}": result.best_ndcg, "epochs": len(result.history),
            "train_examples_per_s": result.examples_per_s, "train_lists": result.train_examples,
            "valid_examples": result.valid_examples, **{f"promotion_{k}": v for k, v in decision.items()}}


def run_train_ranker(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    from liverec import lakehouse
    from liverec.ranker import train

    spark, settings, conf, ds = ctx.spark, ctx.settings, ctx.settings.ranker, ctx.ds
    world = getattr(args, "num_processes", None) or conf.num_processes
    if world <= 0:
        raise InputError(f"the number of processes must be positive, got {world}")
    rows, vocab, ex_ds, id_dim = training_inputs(ctx)
    mlflow.log_params({"examples_ds": ex_ds, "num_processes_used": world, "id_dim": id_dim,
                       "input_version.gold.ranker_examples": lakehouse.version(spark, settings,
                                                                                tables.RANKER_EXAMPLES)})
    result = train.fit(spark, rows, vocab, conf, id_dim, tables.petastorm_url(settings, ds), world)
    return register_trained(ctx, args, result, rows, vocab)


def _promote_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", help="registered version to judge (default: the newest)")


def run_promote_ranker(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow
    from pyspark.sql import functions as F

    from liverec import lakehouse, registry
    from liverec.ranker.examples import VALID_COLUMNS
    from liverec.ranker.pyfunc import score_examples

    spark, settings, conf = ctx.spark, ctx.settings, ctx.settings.ranker
    mv = registry.version_to_judge(conf.registered_model, getattr(args, "version", None))
    ex_ds = registry.run_params(mv.run_id).get("examples_ds")
    if ex_ds is None:
        raise InputError(f"{conf.registered_model} v{mv.version} was not logged by train_ranker (its run "
                         f"{mv.run_id} lacks examples_ds)")
    ctx.progress.step("candidate", None, version=mv.version, examples_ds=ex_ds)
    valid = (lakehouse.read(spark, settings, tables.RANKER_EXAMPLES)
             .where((F.col("ds") == ex_ds) & (F.col("split") == "valid")).select(*VALID_COLUMNS).toPandas())
    if valid.empty:
        raise InputError(f"gold.ranker_examples ds={ex_ds} has no validation rows to judge v{mv.version} on")
    model = mlflow.pyfunc.load_model(f"models:/{conf.registered_model}/{mv.version}")
    scores = score_examples(model, valid)
    mlflow.log_params({"candidate_version": mv.version, "candidate_run_id": mv.run_id, "examples_ds": ex_ds})
    decision = _promote(ctx, str(mv.version), valid, scores, model)
    return {f"promotion_{k}": v for k, v in decision.items()}


EXAMPLE_INPUTS = (tables.SILVER_EVENTS, tables.BRONZE_ITEMS, tables.BRONZE_SOCIAL, tables.ITEM_EMBEDDINGS,
                  tables.ITEM_NEIGHBORS, tables.FEEDBACK)
STAGES = (
    Stage("build_ranker_examples", "held-out labels, leak-free features and the candidate union -> "
          "gold.ranker_examples", reads=EXAMPLE_INPUTS, writes=(tables.RANKER_EXAMPLES, tables.RANKER_ITEMS),
          run=run_build_ranker_examples, dag=TRAINING),
    # in `liverec pipeline` train_ranker promotes what it trained; the training DAG leaves that to promote_ranker
    Stage("train_ranker", "Petastorm + TorchDistributor DDP training, MLflow registry and promotion gate",
          reads=(tables.RANKER_EXAMPLES, tables.RANKER_ITEMS), writes=(RANKER_VERSION, CHAMPION),
          run=run_train_ranker, add_arguments=_train_arguments, dag=TRAINING),
    Stage("promote_ranker", "champion gate: move the alias to a version that beats the baselines and the "
          "champion", reads=(RANKER_VERSION, tables.RANKER_EXAMPLES), writes=(CHAMPION,), run=run_promote_ranker,
          add_arguments=_promote_arguments, dag=TRAINING, pipeline=False),
)
