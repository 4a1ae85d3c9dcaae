"""``collect_feedback``: the impressions the servers logged and the nightly lists of ds -> silver.impressions (each
once), and the impressions of ds with the events that followed them -> gold.feedback (``liverec.impressions``);
``evaluate_offpolicy``: other policies' value estimated from gold.feedback (``liverec.offpolicy``)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from liverec import tables
from liverec.errors import InputError
from liverec.stages.base import IMPRESSIONS_LANDING, NIGHTLY, OFFPOLICY_REPORT, Context, Stage, log_conf

QUERY_NAME = "liverec_collect_feedback"


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--landing", help="folder of impression files (default: conf feedback.landing, else "
                                     "<lakehouse_root>/_landing/impressions)")
    p.add_argument("--attribute-ds", help="the day whose impressions are joined to the events that followed them "
                                          "into gold.feedback (default: --ds). The nightly DAG passes the day before "
                                          "its ds: by then that day's attribution window (at most a day) has closed")


def shown_from(ds: str) -> dt.datetime:
    """When the nightly list of ``ds`` is shown: from the next midnight (UTC) on."""
    return dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC) + dt.timedelta(days=1)


def run_collect_feedback(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from liverec import impressions, lakehouse

    spark, settings, progress, ds, conf = ctx.spark, ctx.settings, ctx.progress, ctx.ds, ctx.settings.feedback
    if conf.attribution_seconds <= 0 or not conf.click_events:
        raise InputError(f"feedback.attribution_seconds must be positive and feedback.click_events not empty (got "
                         f"{conf.attribution_seconds}, {list(conf.click_events)})")
    log_conf("feedback", conf)
    landing = getattr(args, "landing", None) or tables.impressions_landing(settings)
    if "://" not in landing:
        landing = str(Path(landing).expanduser().resolve())
        Path(landing).mkdir(parents=True, exist_ok=True)  # the file source needs the folder to exist

    # 1. the new impression files, once each (the checkpoint remembers the files read), MERGEd on impression_id
    totals = {"landing_rows": 0, "invalid": 0, "online_new": 0}

    def batch(df: Any, batch_id: int) -> None:
        rows = impressions.typed(df).cache()
        try:
            ok = rows.where(impressions.valid())
            n, good = rows.count(), ok.count()
            result = impressions.merge(spark, settings, ok)
        finally:
            rows.unpersist()
        totals["landing_rows"] += n
        totals["invalid"] += n - good
        totals["online_new"] += result["inserted"]
        progress.info(f"impression batch {batch_id}: {n:,} rows, {n - good:,} invalid, {result['inserted']:,} new")

    query = (spark.readStream.schema(impressions.landing_schema()).json(landing)
             .writeStream.queryName(QUERY_NAME).foreachBatch(batch)
             .option("checkpointLocation", tables.impressions_checkpoint(settings))
             .trigger(availableNow=True).start())
    query.awaitTermination()
    progress.step("online impressions", totals["landing_rows"], new=totals["online_new"],
                  repeated=totals["landing_rows"] - totals["invalid"] - totals["online_new"], invalid=totals["invalid"])

    # 2. the nightly lists of ds, shown from the next midnight
    nightly_new = 0
    if lakehouse.exists(spark, settings, tables.RECOMMENDATIONS):
        recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS)
        nightly_new = impressions.merge(spark, settings, impressions.nightly(recs, ds, shown_from(ds)))["inserted"]
    progress.step("nightly impressions", nightly_new, shown_from=shown_from(ds).date().isoformat())

    # 3. the impressions of the attributed day with the events that followed them
    day = getattr(args, "attribute_ds", None) or ds
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        raise InputError(f"--attribute-ds must be a date (YYYY-MM-DD), got {day!r}") from None
    if day < ds and dt.timedelta(seconds=conf.attribution_seconds) > dt.date.fromisoformat(ds) - dt.date.fromisoformat(day):
        progress.info(f"feedback.attribution_seconds ({conf.attribution_seconds}) is longer than the days from "
                      f"{day} to {ds}: events after {ds} that fall in the window of {day}'s impressions are missed")
    if not lakehouse.exists(spark, settings, tables.SILVER_IMPRESSIONS):
        progress.info("no impressions yet: gold.feedback not written")
        return {**totals, "nightly_new": nightly_new, "feedback_rows": 0, "clicked": 0, "feedback_ds": day}
    shown = lakehouse.read(spark, settings, tables.SILVER_IMPRESSIONS).where(F.col("ds") == day)
    events = lakehouse.read_or_empty(spark, settings, tables.SILVER_EVENTS)
    rows = impressions.attribute(shown, events, conf.attribution_seconds, tuple(conf.click_events)).cache()
    try:
        n, clicked = rows.count(), rows.where(F.col("clicked")).count()
        version = lakehouse.overwrite_partition(spark, settings, tables.FEEDBACK, rows, {"ds": day})
    finally:
        rows.unpersist()
    progress.step("write gold.feedback", n, ds=day, clicked=clicked, click_rate=round(clicked / n, 4) if n else 0.0,
                  version=version)
    return {**totals, "nightly_new": nightly_new, "feedback_rows": n, "clicked": clicked, "feedback_ds": day}


def _policy(text: str) -> tuple[float, float]:
    """``T:SHARE`` -> (temperature, share)."""
    try:
        t, share = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a policy is TEMPERATURE:SHARE (e.g. 0:0 for the served list), got {text!r}") from None
    if t < 0 or not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"temperature >= 0 and 0 <= share <= 1, got {text!r}")
    return t, share


def _ope_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", action="append", type=_policy, default=None,
                   help="a policy to evaluate, TEMPERATURE:SHARE: the served list, with SHARE of the requests drawn "
                        "by Plackett-Luce at TEMPERATURE over the logged candidates (repeatable; default 0:0, the "
                        "served list without exploration)")


def logged_lists(lists: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """``impressions.replayable`` rows (pandas, one per answer) as the estimators' (lists x k) arrays, the answers of
    the most common k: reward, behaviour, shown, scores (the pools padded with -inf), z_shown, position."""
    import numpy as np

    if lists.empty:
        return {}, {"replayed": 0, "k": 0}
    sizes = lists["clicked"].map(len).to_numpy()
    k = int(np.bincount(sizes).argmax())
    lists = lists[sizes == k].reset_index(drop=True)
    m = int(lists["pool_scores"].map(len).max())
    scores = np.full((len(lists), m), -np.inf)
    for n, pool in enumerate(lists["pool_scores"]):  # one row per answer (a list), not per impression
        scores[n, :len(pool)] = pool
    shown = np.stack(lists["shown"].to_numpy()).astype(np.int64)
    arrays = {"reward": np.stack(lists["clicked"].to_numpy()), "behaviour": np.stack(lists["propensity"].to_numpy()),
              "shown": shown, "scores": scores, "z_shown": np.take_along_axis(scores, shown, axis=1),
              "position": np.tile(np.arange(1, k + 1), (len(lists), 1)), "lists": lists}
    return arrays, {"replayed": len(lists), "k": k}


def ope_check(ctx: Context, model: Any, policy: str | None) -> dict[str, Any]:
    """The promotion gate's off-policy check (``feedback.ope_gate``) of the ranker ``model`` (a loaded pyfunc): the
    online answers of the last ``feedback.ope_gate_days`` days up to ds that logged their pool's features, those
    ``policy`` served (the champion's tag; None = every policy), re-scored by ``model``, its SNIPS estimate of
    clicks per list as the server would serve it (``offpolicy.ranker_policy_value``) against the clicks per list
    those answers got. -> ``applied`` (False, with ``reason``, when there is too little to judge), ``passed``
    (the interval's lower bound is above the logged value), the numbers."""
    import numpy as np
    import pandas as pd
    from pyspark.sql import functions as F

    from liverec import impressions, lakehouse, offpolicy
    from liverec.features import DENSE_FEATURES
    from liverec.ranker.pyfunc import score_examples

    spark, settings, conf = ctx.spark, ctx.settings, ctx.settings.feedback
    if conf.ope_gate_days <= 0 or conf.ope_gate_min_lists <= 0:
        raise InputError(f"feedback.ope_gate_days and feedback.ope_gate_min_lists must be positive, got "
                         f"{conf.ope_gate_days} and {conf.ope_gate_min_lists}")
    first = (dt.date.fromisoformat(ctx.ds) - dt.timedelta(days=conf.ope_gate_days - 1)).isoformat()
    whose = f" served by {policy}" if policy else ""
    out: dict[str, Any] = {"applied": False, "from_ds": first, "policy": policy or "any", "lists": 0}
    if not lakehouse.exists(spark, settings, tables.FEEDBACK):
        return {**out, "reason": "no gold.feedback yet (collect_feedback)"}
    fb = lakehouse.read(spark, settings, tables.FEEDBACK).where((F.col("ds") >= first) & (F.col("ds") <= ctx.ds))
    if "pool_dense" not in fb.columns:
        return {**out, "reason": "gold.feedback predates logged pool features"}
    rows = impressions.replayable(fb, features=True)
    if policy:
        rows = rows.where(F.col("policy") == policy)
    arrays, counts = logged_lists(rows.toPandas())
    n = counts["replayed"]
    out["lists"] = n
    if n < conf.ope_gate_min_lists:
        return {**out, "reason": f"{n} replayable answers with logged features{whose} in {first}..{ctx.ds}, fewer "
                                 f"than feedback.ope_gate_min_lists ({conf.ope_gate_min_lists})"}
    lists = arrays["lists"]
    sizes = lists["pool"].map(len).to_numpy()
    dense = np.asarray([row for pool in lists["pool_dense"] for row in pool], dtype=np.float32)
    if dense.shape[1:] != (len(DENSE_FEATURES),):
        return {**out, "reason": f"the logged pools hold {dense.shape[1:]} features per candidate, this release "
                                 f"{len(DENSE_FEATURES)}"}
    frame = pd.DataFrame({"item_id": np.concatenate(lists["pool"].to_numpy()),
                          "recent_items": np.repeat(lists["recent_items"].to_numpy(), sizes), "dense": list(dense)})
    try:
        flat = np.asarray(score_examples(model, frame), dtype=np.float64)
    except (ValueError, KeyError, RuntimeError) as err:  # e.g. a model of another feature set
        return {**out, "reason": f"the new ranker cannot score the logged features: {err}"[:500]}
    scores = np.full(arrays["scores"].shape, -np.inf)
    scores[np.arange(scores.shape[1])[None, :] < sizes[:, None]] = flat  # row-major: each pool's scores in order
    est, logged = offpolicy.ranker_policy_value(arrays["reward"], arrays["behaviour"], arrays["shown"], scores,
                                                conf.exploration_temperature, conf.exploration_share,
                                                n_boot=conf.ope_bootstrap, confidence=conf.ope_confidence)
    return {**out, "applied": True, "passed": bool(est.ci_low > logged), "estimate": est.value,
            "ci_low": est.ci_low, "ci_high": est.ci_high, "ess": est.ess, "logged": logged,
            "confidence": conf.ope_confidence}


def run_evaluate_offpolicy(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import json

    import mlflow
    import numpy as np
    from pyspark.sql import functions as F

    from liverec import impressions, lakehouse, offpolicy

    spark, settings, progress, ds, conf = ctx.spark, ctx.settings, ctx.progress, ctx.ds, ctx.settings.feedback
    if not lakehouse.exists(spark, settings, tables.FEEDBACK):
        raise InputError("gold.feedback does not exist yet: run collect_feedback first")
    fb = lakehouse.read(spark, settings, tables.FEEDBACK).where((F.col("ds") == ds) & (F.col("surface") == "online"))
    answers = fb.select("request_id").distinct().count()
    # the replayable answers of one ds come to the driver as arrays (lists x k), one row per answer grouped in Spark:
    # the estimators' bootstrap resamples lists
    arrays, counts = logged_lists(impressions.replayable(fb).toPandas())
    counts = {"answers": answers, **counts}
    progress.step("logged answers", answers, replayed=counts["replayed"], k=counts["k"])
    if not arrays:
        raise InputError(f"no online answer of ds {ds} can be replayed: they carry their candidate pool only when "
                         "feedback.exploration_share and exploration_temperature are positive")
    r, b, sh, scores = arrays["reward"], arrays["behaviour"], arrays["shown"], arrays["scores"]
    beta = offpolicy.fit_click_model(arrays["z_shown"].ravel(), arrays["position"].ravel(), r.ravel())
    k = r.shape[1]
    finite = np.isfinite(scores)
    q_items = np.where(finite[:, None, :], offpolicy.click_model(beta, np.where(finite, scores, 0.0)[:, None, :],
                                                                  np.arange(1, k + 1)[None, :, None]), 0.0)
    q = np.take_along_axis(q_items, sh[:, :, None], axis=2)[:, :, 0]
    boot = {"n_boot": conf.ope_bootstrap, "confidence": conf.ope_confidence}
    report = {"ds": ds, **counts, "logged_clicks_per_list": float(r.sum(axis=1).mean()),
              "click_model": [float(x) for x in beta], "policies": []}
    progress.info(f"logged policy: {report['logged_clicks_per_list']:.4f} clicks per list over {len(r):,} lists")
    for t, share in (args.policy or [(0.0, 0.0)]):
        e = offpolicy.replay(scores, sh, t, share)
        qbar = offpolicy.replay_expected_rewards(scores, q_items, sh, t, share)
        name = f"T{t:g}_share{share:g}"
        out = {}
        for kind in offpolicy.POSITION_WEIGHTINGS:
            alpha = offpolicy.position_weights(k, kind)
            ests = [offpolicy.ips(r, b, e, alpha, **boot), offpolicy.clipped_ips(r, b, e, conf.ope_clip, alpha, **boot),
                    offpolicy.snips(r, b, e, alpha, **boot), offpolicy.cascade_dr(r, b, e, q, qbar, alpha, **boot)]
            out[kind] = [x.as_dict() for x in ests]
            for x in ests:
                mlflow.log_metrics({f"ope.{name}.{kind}.{x.name}.{m}": float(getattr(x, m))
                                    for m in ("value", "ci_low", "ci_high", "ess")})
            snips = ests[2]
            progress.info(f"policy {name} {kind}: " + ", ".join(f"{x.name} {x.value:.4f} [{x.ci_low:.4f}, "
                                                                  f"{x.ci_high:.4f}]" for x in ests)
                          + f" (ESS {snips.ess:,.0f})")
        report["policies"].append({"temperature": t, "share": share, "name": name, "estimates": out})
    folder = Path(settings.evaluate.report_dir) / ds
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "offpolicy.json").write_text(json.dumps(report, indent=1))
    mlflow.log_artifact(str(folder / "offpolicy.json"))
    progress.step("report", len(report["policies"]), path=str(folder / "offpolicy.json"))
    return {**counts, "logged_clicks_per_list": report["logged_clicks_per_list"]}


STAGES = (
    Stage("collect_feedback", "impression files + the nightly lists -> silver.impressions (each once, by id); the "
          "impressions of ds (or --attribute-ds) with the events that followed -> gold.feedback; not part of the pipeline",
          reads=(IMPRESSIONS_LANDING, tables.RECOMMENDATIONS, tables.SILVER_EVENTS, tables.SILVER_IMPRESSIONS),
          writes=(tables.SILVER_IMPRESSIONS, tables.FEEDBACK), run=run_collect_feedback, add_arguments=_arguments,
          dag=NIGHTLY, pipeline=False),
    Stage("evaluate_offpolicy", "gold.feedback of ds -> IPS, clipped IPS, SNIPS and cascade DR estimates (bootstrap "
          "intervals, ESS) of other policies replayed on the logged answers' candidates (MLflow, "
          "<report_dir>/<ds>/offpolicy.json); not part of the pipeline",
          reads=(tables.FEEDBACK,), writes=(OFFPOLICY_REPORT,), run=run_evaluate_offpolicy,
          add_arguments=_ope_arguments, pipeline=False),
)
