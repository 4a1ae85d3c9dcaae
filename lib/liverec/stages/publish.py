"""The publishing stages: ``recommend_nightly`` (every active user's top N -> gold.recommendations) and
``publish_online`` (the day's tables and the champion packed into the registered online model)."""

from __future__ import annotations

import argparse
from typing import Any

from liverec import tables
from liverec.errors import BalanceError, InputError
from liverec.stages.base import (
    CHAMPION,
    NIGHTLY,
    ONLINE_MODEL,
    ONLINE_STORE,
    Context,
    Stage,
    committed_rows,
    latest,
    latest_ease,
    latest_factors,
    log_conf,
    require_latest,
    require_silver,
    restore,
    social,
)


def _baseline(ctx: Context, ease_model: Any) -> str:
    """The baseline that ranks without a champion: recommend.baseline, or the one the gate measured best."""
    from liverec import product, registry

    measured = registry.registered_tag(ctx.settings.ranker.registered_model, registry.BEST_BASELINE_TAG)
    return product.choose_baseline(ctx.settings.recommend.baseline, measured, ease_model)


def run_recommend(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow
    from pyspark.sql import functions as F

    from liverec import catalog, cleaning, fallback, lakehouse, policy, product, registry
    from liverec.diversity import RERANKERS
    from liverec.ranker import compiled

    spark, settings, progress, ds = ctx.spark, ctx.settings, ctx.progress, ctx.ds
    conf = settings.recommend
    if conf.top_n <= 0 or conf.mmr_pool < 0 or not 0.0 <= conf.mmr_lambda <= 1.0 \
            or not 0.0 <= conf.calibration_lambda <= 1.0 or conf.reranker not in RERANKERS:
        raise InputError(f"recommend.top_n must be positive, mmr_pool >= 0, mmr_lambda and calibration_lambda in "
                         f"[0, 1] and reranker one of {', '.join(RERANKERS)} (got {conf.top_n}, {conf.mmr_pool}, "
                         f"{conf.mmr_lambda}, {conf.calibration_lambda}, {conf.reranker!r})")
    if settings.ranker.score_threads < 0:
        raise InputError(f"ranker.score_threads must be >= 0 (0 = torch's default), got {settings.ranker.score_threads}")
    compiled.check_variant(settings.ranker.scoring_variant)
    events = require_silver(ctx).cache()  # read by every candidate source and the fallback chain
    user_profiles, profile_ds = latest(ctx, tables.USER_PROFILES)
    if user_profiles is None:
        raise InputError(f"gold.user_profiles has no partition up to ds={ds}: run build_profiles first")
    items = catalog.latest_items(spark, settings, ds)
    blocked = policy.load(settings.policy, items)  # before any work: a bad policy file stops the job here
    uf, itf, factor_ds, run_id = latest_factors(ctx)
    if uf is None:
        progress.info("no ALS factors up to this ds: users get EASE, content or popularity without the ranker")
    else:
        mlflow.log_params({"als_factors_ds": factor_ds, "als_run_id": run_id})
    ease_model, ease_ds, ease_run = latest_ease(ctx)
    if ease_model is None:
        progress.info("no EASE model up to this ds (run train_ease): no EASE candidates, ALS is the baseline")
    emb, emb_ds = latest(ctx, tables.ITEM_EMBEDDINGS)
    if emb is None:
        progress.info("no gold.item_embeddings up to this ds: no content candidates (run embed_items)")
    neighbors, _ = latest(ctx, tables.ITEM_NEIGHBORS)
    champion = registry.champion(settings.ranker.registered_model, settings.ranker.champion_alias)
    baseline = _baseline(ctx, ease_model)
    progress.step("read inputs", None, profiles_ds=profile_ds, factors_ds=factor_ds, ease_ds=ease_ds,
                  embeddings_ds=emb_ds, ranker=champion.tag if champion else None, baseline=baseline)
    log_conf("recommend", conf)
    log_conf("policy", settings.policy)
    mlflow.log_params(blocked.metrics())
    if len(blocked):
        progress.step("content policy", len(blocked), by_item=blocked.by_item, by_category=blocked.by_category)
    mlflow.log_params({"ranker_model_version": champion.tag if champion else "none",
                       "ranker_run_id": champion.run_id if champion else None, "baseline_used": baseline,
                       "ease_ds": ease_ds})

    note = ""
    if champion is None:
        note = " (no champion ranker)"
        progress.info(f"no {settings.ranker.registered_model}@{settings.ranker.champion_alias} in the registry (none "
                      f"trained, or none beat the baselines): the {baseline} baseline ranks, and the rows say so")
    elif uf is None:
        note = " (champion ranker needs ALS factors)"
        progress.info("the champion ranker needs ALS factors (run train_als): falling back without it")
    users = fallback.active_users(events, conf.active_days).cache()
    published = product.publish(spark, events, users, items, user_profiles, uf, itf, run_id, ease_model, ease_run,
                                emb, neighbors, social(ctx), settings, cleaning.id_key(settings), champion,
                                baseline, ds, note, f"content:{settings.embeddings.model}@{emb_ds}", progress,
                                blocked)
    if published.candidates:
        mlflow.log_params({f"candidates.{k}": v for k, v in published.candidates.items()})
    if published.popularity is not None:  # the DP release's cost, beside the rows whose model_version names it
        mlflow.log_params(published.popularity.metadata())
        progress.info(f"popularity released with epsilon {published.popularity.epsilon:g} (discrete Laplace, scale "
                      f"{published.popularity.scale:g}, at most {published.popularity.max_items} items per user)")
    # the day's rows (top_n per user) materialised once: counted here, then written, never read back
    rows = published.rows.localCheckpoint()
    counts = rows.groupBy("source").agg(
        F.count("*").alias("rows"), F.sum(F.col("model_version").startswith(registry.RANKED_PREFIX).cast("long"))
        .alias("ranked")).collect()
    by_source = {r["source"]: r["rows"] for r in counts}
    ranked_rows = sum(int(r["ranked"] or 0) for r in counts)
    n_users = rows.select("user_id").distinct().count()
    leaked = policy.leaks(rows, blocked)
    if leaked:  # a bug, never a published row
        raise BalanceError(f"{leaked:,} of the day's rows hold an item the content policy blocks: nothing was "
                           "published")
    before = lakehouse.version(spark, settings, tables.RECOMMENDATIONS)
    version = lakehouse.overwrite_partition(spark, settings, tables.RECOMMENDATIONS, rows, {"ds": ds})
    written = committed_rows(ctx, tables.RECOMMENDATIONS, before, version)
    if written != sum(by_source.values()):  # as clean does: the table goes back, nothing half-published stays
        restore(ctx, {tables.RECOMMENDATIONS: before})
        raise BalanceError(f"gold.recommendations version {version} wrote {written:,} rows, "
                           f"{sum(by_source.values()):,} were counted: the table is restored to version {before}")
    progress.step("write gold.recommendations", sum(by_source.values()), version=version, users=n_users,
                  ranked_rows=ranked_rows, **{f"from_{k}": v for k, v in sorted(by_source.items())})
    users.unpersist()
    events.unpersist()
    return {"rows": sum(by_source.values()), "users": n_users, "recommendations_version": version,
            "ranked_rows": ranked_rows, "ranker": champion.tag if champion else None, "baseline": baseline,
            **{f"rows_{k}": v for k, v in by_source.items()}}


def run_publish_online(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import os
    import time

    import mlflow

    from liverec import catalog, cleaning, online, policy, registry

    spark, settings, progress, ds, oconf = ctx.spark, ctx.settings, ctx.progress, ctx.ds, ctx.settings.online
    if oconf.candidates <= 0 or not 1 <= oconf.default_k <= oconf.max_k or oconf.max_session <= 0:
        raise InputError(f"online.candidates and online.max_session must be positive and 1 <= online.default_k <= "
                         f"online.max_k (got {oconf.candidates}, {oconf.max_session}, {oconf.default_k}, "
                         f"{oconf.max_k})")
    from liverec.ranker import compiled

    compiled.check_variant(settings.ranker.scoring_variant)
    champion = registry.champion(settings.ranker.registered_model, settings.ranker.champion_alias)
    events = require_silver(ctx).cache()
    found = {t: require_latest(ctx, t, stage) for t, stage in (
        (tables.USER_PROFILES, "build_profiles"), (tables.ITEM_FACTORS, "train_als"),
        (tables.RECOMMENDATIONS, "recommend_nightly"))}
    found[tables.USER_FACTORS] = latest(ctx, tables.USER_FACTORS)
    emb, emb_ds = latest(ctx, tables.ITEM_EMBEDDINGS)
    neighbors, _ = latest(ctx, tables.ITEM_NEIGHBORS)
    items = catalog.latest_items(spark, settings, ds)
    ease_model, _, _ = latest_ease(ctx)
    baseline = None
    if champion is None:  # as the nightly job: the best baseline ranks (its score is one of the dense features)
        baseline = _baseline(ctx, ease_model)
        progress.info(f"no {settings.ranker.registered_model}@{settings.ranker.champion_alias} in the registry: the "
                      f"online scorer ranks by the {baseline} baseline's score")
    ranker_tag = champion.tag if champion else f"baseline:{baseline}"
    arrays, meta, records = online.build_bundle(
        spark, events, items, found[tables.USER_PROFILES][0], found[tables.USER_FACTORS][0],
        found[tables.ITEM_FACTORS][0], ease_model, emb, neighbors, social(ctx), found[tables.RECOMMENDATIONS][0],
        settings, cleaning.id_key(settings), ds)
    order = (tables.USER_PROFILES, tables.USER_FACTORS, tables.ITEM_FACTORS, tables.RECOMMENDATIONS)
    meta.update(ranker_version=ranker_tag, baseline=baseline, ranker_variant=settings.ranker.scoring_variant,
                inputs={t: found[t][1] for t in order} | {"embeddings": emb_ds})
    size_mb = sum(a.nbytes for a in arrays.values()) / 2**20
    n_blocked = int(arrays["blocked"].sum())  # the content policy's items in the served catalogue
    progress.step("bundle", len(meta["item_ids"]), arrays_mb=round(size_mb, 1), ranker=ranker_tag,
                  policy_blocked=n_blocked)
    mlflow.log_param(policy.ITEMS_BLOCKED, n_blocked)

    # the per-user records into the online store: a new generation for ds, visible at once when complete
    from liverec.online_store import StoreUnavailable, redacted

    store = online.open_online_store(meta)
    started = time.monotonic()
    records = records.persist()
    sample = records.first()
    try:
        written = store.publish(ds, ((r["user_id"], r["value"].encode()) for r in records.toLocalIterator()))
    except StoreUnavailable as err:
        raise InputError(f"the online store cannot be written ({err}); nothing was published and the "
                         f"{oconf.registered_model} alias was not moved: start it or set online.store") from None
    store_seconds = time.monotonic() - started
    generation = store.generations()[-1]
    progress.step("online store", written, store=redacted(meta["store_url"]), generation=generation,
                  seconds=round(store_seconds, 1))

    info = online.log_online_model(arrays, meta, champion.uri if champion else None,
                                   os.path.join(settings.scratch_dir, "online"))
    version = registry.register(info.model_uri, oconf.registered_model)

    # smoke requests through the logged model: a known user without a session, a visitor with one click
    scorer = mlflow.pyfunc.load_model(info.model_uri).unwrap_python_model().scorer
    known = []
    if sample is not None:
        user = online.UserState.decode(sample["user_id"], sample["value"].encode(), scorer.index,
                                       scorer.embeddings.shape[1])
        known = scorer.recommend(online.Request(user, [], None, oconf.default_k))
    first = int(arrays["popular"][0])
    etype, weight = max(settings.clean.event_weights.items(), key=lambda kv: kv[1])  # a configured type
    visitor = scorer.recommend(online.Request(None, [online.Event(first, etype, 0.0, float(weight))], None,
                                              oconf.default_k))
    if not visitor or (sample is not None and not known):
        raise InputError(f"{oconf.registered_model} v{version} answered a smoke request with nothing "
                         f"(known user: {len(known)} rows, visitor: {len(visitor)}); the alias was not moved")
    registry.tag_version(oconf.registered_model, version, {"ds": ds, "ranker": ranker_tag,
                                                           "items": len(meta["item_ids"]), "users": written,
                                                           "store_generation": generation})
    registry.move_alias(oconf.registered_model, oconf.alias, version)
    progress.step("register", None, model=oconf.registered_model, version=version, alias=oconf.alias,
                  smoke_known=len(known), smoke_visitor=len(visitor))
    records.unpersist()
    events.unpersist()
    store.close()
    return {"version": version, "items": len(meta["item_ids"]), "users": written, "arrays_mb": size_mb,
            "store_seconds": store_seconds}


NIGHTLY_INPUTS = (tables.SILVER_EVENTS, tables.BRONZE_ITEMS, tables.BRONZE_SOCIAL, tables.USER_PROFILES,
                  tables.USER_FACTORS, tables.ITEM_FACTORS, tables.EASE_WEIGHTS, tables.ITEM_EMBEDDINGS,
                  tables.ITEM_NEIGHBORS, CHAMPION)
STAGES = (
    Stage("recommend_nightly", "candidates -> champion ranker (or the best baseline) -> MMR -> top N per "
          "active user -> gold.recommendations (partition ds)", reads=NIGHTLY_INPUTS,
          writes=(tables.RECOMMENDATIONS,), run=run_recommend, dag=NIGHTLY),
    Stage("publish_online", "gold tables + champion ranker -> the users' records in the online store (a new "
          "generation for ds) and the liverec-online pyfunc, registered with the online alias (serve it with "
          "`liverec serve`)", reads=(*NIGHTLY_INPUTS, tables.RECOMMENDATIONS),
          writes=(ONLINE_STORE, ONLINE_MODEL), run=run_publish_online, dag=NIGHTLY),
)
