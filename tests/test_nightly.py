"""The published table and the evaluation, on the shared demo chain (conftest's demo_pipeline): ranked by the
champion (scores, reasons), the baselines without one (EASE against numpy, ALS), the fallback chain for users the
models do not know, the evaluation's product row against its own lists."""

from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from liverec import als, catalog, fallback, lakehouse, tables, tracking
from liverec.cli import main
from tests.conftest import cli_args, restored

NO_RANKER = ["--set", "ranker.champion_alias=nobody"]  # the baseline chain, as without a champion
ALS_CHAIN = [*NO_RANKER, "--set", "recommend.baseline=als"]


def _check_lists(spark, settings, recs, ds):
    """n rows per active user, ranks 1..n, nothing the user has seen."""
    n = settings.recommend.top_n
    per_user = recs.groupBy("user_id").agg(F.count("*").alias("n"), F.sort_array(F.collect_list("rank")).alias("r"))
    assert per_user.where((F.col("n") != n) | (F.col("r") != F.sequence(F.lit(1), F.lit(n)))).count() == 0
    events = catalog.events_until(spark, settings, ds)
    assert recs.join(events.select("user_id", "item_id"), ["user_id", "item_id"]).count() == 0  # nothing seen
    assert per_user.count() == fallback.active_users(events, settings.recommend.active_days).count() > 0


@pytest.mark.slow
def test_pipeline_ranks_with_the_champion(spark, demo_pipeline):
    """The pipeline's nightly job ranked every active user with the champion ranker: the rows name its
    version and run, their scores are the champion's own scores of the candidates' features, and each
    reason names what led to the item."""
    settings = demo_pipeline
    ds = "2026-11-02"
    recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS).where(F.col("ds") == ds).cache()
    _check_lists(spark, settings, recs, ds)
    client = mlflow.MlflowClient(settings.tracking_uri())
    name, alias = settings.ranker.registered_model, settings.ranker.champion_alias
    champ = client.get_model_version_by_alias(name, alias)
    assert {tuple(r) for r in recs.select("model_version", "model_run_id").distinct().collect()} == {
        (f"ranker:{name}/{champ.version}", champ.run_id)}
    sources = {r[0] for r in recs.select("source").distinct().collect()}
    assert {"content", "ease"} <= sources <= {"als", "ease", "content", "friends", "popular_category"}
    prefixes = {"als": ("Because you showed interest in", "People with tastes like yours"),
                "content": ('Similar to "',), "friends": ("Your friend ",), "ease": ("Because you chose ",),
                "popular_category": ("Popular lately in ",)}
    for source, starts in prefixes.items():
        cond = F.lit(False)
        for start in starts:
            cond = cond | F.col("reason").startswith(start)
        assert recs.where((F.col("source") == source) & ~cond).count() == 0, source
    # a content reason names one of the user's recent items; a category reason one of its favourites
    profile = lakehouse.read(spark, settings, tables.USER_PROFILES).where(F.col("ds") == ds)
    items = catalog.latest_items(spark, settings, ds)
    recent = profile.select("user_id", F.explode(F.slice("recent_items", 1, settings.recommend.neighbor_history))
                            .alias("hist"))
    named = recent.join(items.select(F.col("item_id").alias("hist"), "title"), "hist").select(
        "user_id", F.concat(F.lit('Similar to "'), "title", F.lit('", which you chose')).alias("reason"))
    content = recs.where(F.col("source") == "content")
    assert content.count() > 0 and content.join(named, ["user_id", "reason"], "left_anti").count() == 0
    favourite = profile.select("user_id", F.explode(F.slice("top_categories", 1,
                                                            settings.recommend.fallback_categories)).alias("c"))
    cats = recs.where(F.col("source") == "popular_category").join(favourite, "user_id").where(
        F.col("reason") == F.concat(F.lit("Popular lately in "), "c", F.lit(", one of your favourite categories")))
    assert cats.select("user_id", "item_id").distinct().count() == recs.where(
        F.col("source") == "popular_category").count()
    # an EASE reason names an item of the user's history
    events = catalog.events_until(spark, settings, ds)
    chosen = events.select("user_id", "item_id").distinct().join(
        items.select("item_id", "title"), "item_id").select(
        "user_id", F.concat(F.lit('Because you chose "'), "title", F.lit('"')).alias("reason"))
    ease_rows = recs.where(F.col("source") == "ease")
    assert ease_rows.count() > 0 and ease_rows.join(chosen, ["user_id", "reason"], "left_anti").count() == 0

    # the stored scores are the champion's, as the executors computed them: the same features scored on the driver
    from liverec import candidates, features
    from liverec.cleaning import id_key
    from liverec.ranker.pyfunc import pyfunc_frame
    from liverec.stages.base import Context, latest_ease

    uf = lakehouse.read(spark, settings, tables.USER_FACTORS).where(F.col("ds") == ds)
    itf = lakehouse.read(spark, settings, tables.ITEM_FACTORS).where(F.col("ds") == ds)
    emb = lakehouse.read(spark, settings, tables.ITEM_EMBEDDINGS).where(F.col("ds") == ds)
    nb = lakehouse.read(spark, settings, tables.ITEM_NEIGHBORS).where(F.col("ds") == ds)
    social = lakehouse.read(spark, settings, tables.BRONZE_SOCIAL)
    ease_model, _, _ = latest_ease(Context(spark, settings, ds, None))
    f = features.features_from(spark, events, profile, uf, itf, ease_model, items, emb, social, settings,
                               id_key(settings))
    some = recs.select("user_id").distinct().orderBy("user_id").limit(5)
    every = candidates.candidate_rows(f, some, nb, settings).toPandas()
    model = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
    every["expected"] = model.predict(pyfunc_frame(every))["score"].to_numpy()
    got = every.merge(recs.select("user_id", "item_id", "score", "rank").toPandas(), on=["user_id", "item_id"])
    assert len(got) == 5 * settings.recommend.top_n
    np.testing.assert_allclose(got["expected"].to_numpy(), got["score"].to_numpy(), rtol=1e-5, atol=1e-5)
    # the published lists are the slow path's: MLflow's predict over every candidate, then MMR as written out
    # here (the pool's best by score, relevance min-max scaled, cosine of the unit text embeddings)
    conf = settings.recommend
    vec = {r["item_id"]: np.asarray(r["embedding"], dtype=np.float64) for r in emb.collect()}
    for user, rows in every.groupby("user_id"):
        pool = rows.sort_values(["expected", "item_id"], ascending=[False, True]).head(max(conf.mmr_pool,
                                                                                          conf.top_n))
        s = pool["expected"].to_numpy()
        rel = (s - s.min()) / (s.max() - s.min())
        unit = np.stack([vec[i] / np.linalg.norm(vec[i]) for i in pool["item_id"]])
        picked, closest = [], np.zeros(len(pool))
        for step in range(conf.top_n):
            value = np.where(np.isin(np.arange(len(pool)), picked), -np.inf,
                             rel if not step else conf.mmr_lambda * rel - (1 - conf.mmr_lambda) * closest)
            picked.append(int(np.argmax(value)))
            closest = np.maximum(closest, unit @ unit[picked[-1]])
        published = got[got["user_id"] == user].sort_values("rank")["item_id"].tolist()
        assert published == pool["item_id"].iloc[picked].tolist(), user


def _numpy_ease_top(spark, settings, ds, users, n):
    """Each of ``users``' top n unseen items by EASE, computed here in numpy from silver.events (binary X over
    the pairs with a positive ALS strength, B = I - P / diag(P), P = (X^T X + lambda I)^-1)."""
    events = catalog.events_until(spark, settings, ds)
    pairs = als.strengths(events, settings.als, settings.clean.event_weights).select("user_id", "item_id").toPandas()
    item_ids = sorted(pairs["item_id"].unique())
    col = {i: n for n, i in enumerate(item_ids)}
    user_ids = sorted(pairs["user_id"].unique())
    row = {u: n for n, u in enumerate(user_ids)}
    x = np.zeros((len(user_ids), len(item_ids)))
    x[pairs["user_id"].map(row), pairs["item_id"].map(col)] = 1.0
    p = np.linalg.inv(x.T @ x + settings.ease.reg_lambda * np.eye(len(item_ids)))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    seen_all = events.select("user_id", "item_id").distinct().toPandas().groupby("user_id")["item_id"].apply(set)
    out = {}
    for u in users:
        s = x[row[u]] @ b
        for i in seen_all[u]:
            if i in col:
                s[col[i]] = -np.inf
        out[u] = [item_ids[j] for j in np.argsort(-s, kind="stable")[:n]]
    return out


@pytest.mark.slow
def test_without_a_champion_the_baseline_is_published(spark, demo_pipeline):
    """No champion: the nightly job publishes the baseline (EASE, the gate's measured best on the demo log, or
    ALS when asked), every row saying so."""
    settings = demo_pipeline
    ds = "2026-11-02"
    with restored(spark, settings, tables.RECOMMENDATIONS):
        v = lakehouse.version(spark, settings, tables.RECOMMENDATIONS)
        assert main(["run", "recommend_nightly", *cli_args(settings), "--ds", ds, *NO_RANKER,
                     "--set", "recommend.baseline=ease"]) == 0
        # a rerun of the date replaces that date alone, one new version
        assert lakehouse.version(spark, settings, tables.RECOMMENDATIONS) == v + 1
        recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS).where(F.col("ds") == ds).cache()
        _check_lists(spark, settings, recs, ds)
        assert {r["source"] for r in recs.select("source").distinct().collect()} == {"ease"}
        assert recs.where(~F.col("model_version").startswith("ease:") | F.col("model_run_id").isNull()
                          | ~F.col("model_version").endswith("(no champion ranker)")
                          | ~F.col("reason").startswith("Because you chose ")).count() == 0
        # the lists are EASE's own, computed here independently
        users = [r["user_id"] for r in recs.select("user_id").distinct().orderBy("user_id").limit(8).collect()]
        expected = _numpy_ease_top(spark, settings, ds, users, settings.recommend.top_n)
        got = recs.where(F.col("user_id").isin(users)).orderBy("user_id", "rank").toPandas() \
            .groupby("user_id")["item_id"].apply(list)
        assert {u: got[u] for u in users} == expected

        assert main(["run", "recommend_nightly", *cli_args(settings), "--ds", ds, *NO_RANKER,
                     "--set", "recommend.baseline=als"]) == 0
        recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS).where(F.col("ds") == ds).cache()
        _check_lists(spark, settings, recs, ds)
        assert "als" in {r["source"] for r in recs.select("source").distinct().collect()}
        als_rows = recs.where(F.col("source") == "als")
        assert als_rows.where(~F.col("reason").startswith("Because you showed interest in")).count() == 0
        assert als_rows.where(~F.col("model_version").startswith("als:") | F.col("model_run_id").isNull()
                              | ~F.col("model_version").endswith("(no champion ranker)")).count() == 0
        assert recs.where(F.col("model_version").startswith("ranker:")).count() == 0
        run_id = als_rows.first()["model_run_id"]
        run = mlflow.MlflowClient(settings.tracking_uri()).get_run(run_id)
        assert run.data.params["als.rank"] == str(settings.als.rank)
        assert "input_version.silver.events" in run.data.params and "output_version.gold.user_factors" in run.data.params
        artifacts = [a.path for a in mlflow.MlflowClient(settings.tracking_uri()).list_artifacts(run_id)]
        assert "als_model" in artifacts


@pytest.mark.slow
def test_users_without_factors_get_content_then_popular_in_their_categories(spark, demo_pipeline):
    """The ALS chain (recommend.baseline=als, no champion) for users ALS does not know."""
    settings = demo_pipeline
    ds = "2026-11-02"
    with restored(spark, settings, tables.USER_FACTORS, tables.ITEM_EMBEDDINGS, tables.RECOMMENDATIONS):
        _content_then_popular(spark, settings, ds)


def _content_then_popular(spark, settings, ds):
    # drop the factors: every active user is new to ALS and gets content candidates from its content vector
    uf = lakehouse.read(spark, settings, tables.USER_FACTORS).where(F.col("ds") == ds)
    lakehouse.overwrite_partition(spark, settings, tables.USER_FACTORS, uf.limit(0), {"ds": ds})
    assert main(["run", "recommend_nightly", *cli_args(settings), "--ds", ds, *ALS_CHAIN]) == 0
    recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS).where(F.col("ds") == ds)
    assert {r[0] for r in recs.select("source").distinct().collect()} == {"content"}
    assert recs.where(~F.col("reason").startswith("Similar to") | ~F.col("model_version").startswith(
        f"content:{settings.embeddings.model}@")).count() == 0
    # drop the embeddings too: popularity, in the user's favourite categories first
    emb = lakehouse.read(spark, settings, tables.ITEM_EMBEDDINGS).where(F.col("ds") == ds)
    lakehouse.overwrite_partition(spark, settings, tables.ITEM_EMBEDDINGS, emb.limit(0), {"ds": ds})
    assert main(["run", "recommend_nightly", *cli_args(settings), "--ds", ds, *ALS_CHAIN]) == 0
    recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS).where(F.col("ds") == ds)
    assert {r[0] for r in recs.select("source").distinct().collect()} <= {"popular_category", "popular"}
    cat_rows = recs.where(F.col("source") == "popular_category").join(
        lakehouse.read(spark, settings, tables.USER_PROFILES).where(F.col("ds") == ds), "user_id")
    items = catalog.latest_items(spark, settings, ds)
    mismatched = cat_rows.join(items, "item_id").where(
        ~F.exists("categories", lambda c: F.array_contains(
            F.slice("top_categories", 1, settings.recommend.fallback_categories), c)))
    assert cat_rows.count() > 0 and mismatched.count() == 0


@pytest.mark.slow
def test_evaluate_scores_the_product_beside_the_baselines(spark, demo_pipeline, tmp_path):
    """The pipeline's evaluate (temporal split) reports the product beside popularity, ALS and EASE; the product's
    metrics are those of the lists it wrote, recomputed here with numpy."""
    import json
    from pathlib import Path

    import pandas as pd

    from tests.conftest import DEMO_DS

    settings = demo_pipeline
    folder = Path(settings.evaluate.report_dir) / DEMO_DS
    results = json.loads((folder / "evaluation.json").read_text())
    assert [r["split"] for r in results] == ["temporal"]
    m = results[0]["results"]
    assert set(m) == {"product", "popularity", "als", "ease"}
    for model in m.values():
        assert 0 <= model["ndcg"] <= 1 and 0 <= model["coverage"] <= 1 and model["users"] > 0
    # on the demo log (category preferences), every personal model beats popularity
    assert min(m["als"]["ndcg"], m["ease"]["ndcg"], m["product"]["ndcg"]) > m["popularity"]["ndcg"]
    # exposure and calibration for every model (their definitions are checked by hand in test_batch_core): the
    # popularity list concentrates exposure most, on the most popular items, and fits users' category mix worst
    for model in m.values():
        assert 0 <= model["exposure_gini"] <= 1 and 0 <= model["tail_exposure"] <= 1
        assert model["calibration_kl"] >= 0 and model["tail_interactions"] == m["popularity"]["tail_interactions"]
    assert m["popularity"]["exposure_gini"] == max(x["exposure_gini"] for x in m.values())
    assert m["popularity"]["avg_popularity"] == max(x["avg_popularity"] for x in m.values())
    assert m["popularity"]["calibration_kl"] > m["product"]["calibration_kl"]
    assert "| model | exposure_gini |" in (folder / "evaluation.md").read_text()
    notes = results[0]["notes"]["product"]
    assert notes["ranker"].startswith(("ranked the product", "lost to")) and set(notes["gate"]) >= {"ranker", "ease"}

    lists = pd.read_parquet(folder / "lists")
    truth = lists[lists["model"] == "truth"].groupby("user_id")["item_id"].apply(set)
    k = settings.evaluate.k
    disc = 1 / np.log2(np.arange(2, k + 2))
    for name in ("product", "ease"):
        mine = lists[lists["model"] == name].sort_values(["user_id", "rank"]).groupby("user_id")["item_id"].apply(list)
        ndcg, prec = [], []
        for user, relevant in truth.items():
            top = mine.get(user, [])[:k]
            hits = np.array([i in relevant for i in top], dtype=float)
            ndcg.append((hits * disc[:len(hits)]).sum() / disc[:min(len(relevant), k)].sum())
            prec.append(hits.sum() / k)
        assert len(truth) == m[name]["users"]
        assert m[name]["ndcg"] == pytest.approx(float(np.mean(ndcg)), abs=1e-9), name
        assert m[name]["precision"] == pytest.approx(float(np.mean(prec)), abs=1e-9), name
    report = (folder / "evaluation.md").read_text()
    assert "| product |" in report and "| ease |" in report and "Gate on the ranker's validation users" in report
    assert (folder / "evaluation.png").stat().st_size > 1000


def _policy_files(tmp_path, items: dict[str, str], categories: dict[str, str]) -> list[str]:
    (tmp_path / "items.csv").write_text("item_id,reason\n" + "".join(f"{i},{r}\n" for i, r in items.items()))
    (tmp_path / "cats.csv").write_text("category,reason\n" + "".join(f"{c},{r}\n" for c, r in categories.items()))
    return ["--set", f"policy.blocked_items={tmp_path / 'items.csv'}",
            "--set", f"policy.blocked_categories={tmp_path / 'cats.csv'}"]


@pytest.mark.slow
def test_content_policy_keeps_blocked_items_out_of_every_publishing_path(spark, demo_pipeline, tmp_path):
    """Blocking the three items the champion published most and the category most of its rows fall in: no blocked
    item reaches the nightly table (ranked, EASE, ALS and popularity chains), the online answers (known users,
    a visitor clicking a blocked item, the store down) and every list still has N items; the run logs the count."""
    from collections import Counter

    from liverec import cleaning, online, policy, profiles

    settings, ds, n = demo_pipeline, "2026-11-02", demo_pipeline.recommend.top_n
    cats = {r["item_id"]: list(r["categories"] or []) for r in
            catalog.latest_items(spark, settings, ds).select("item_id", "categories").collect()}
    shown = [r["item_id"] for r in lakehouse.read(spark, settings, tables.RECOMMENDATIONS)
             .where(F.col("ds") == ds).select("item_id").collect()]
    named = [i for i, _ in Counter(shown).most_common(3)]
    category = Counter(c for i in shown for c in cats.get(i, [])).most_common(1)[0][0]
    blocked = set(named) | {i for i, cs in cats.items() if category in cs}  # by hand, from the catalogue
    assert 3 < len(blocked) < len(cats) // 2 and sum(i in blocked for i in shown) > len(shown) // 10
    args = _policy_files(tmp_path, {i: "legal hold" for i in named}, {category: "not for minors"})
    client = mlflow.MlflowClient(settings.tracking_uri())

    with restored(spark, settings, tables.RECOMMENDATIONS):
        for extra, model in (([], "ranker:"), ([*NO_RANKER, "--set", "recommend.baseline=ease"], "ease:"),
                             (ALS_CHAIN, "als:")):
            assert main(["run", "recommend_nightly", *cli_args(settings), "--ds", ds, *args, *extra]) == 0
            recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS).where(F.col("ds") == ds).cache()
            _check_lists(spark, settings, recs, ds)  # N per active user: the fill-in took the blocked places
            assert recs.where(F.col("item_id").isin(sorted(blocked))).count() == 0, extra
            assert recs.where(F.col("model_version").startswith(model)).count() > 0, extra
            run = client.search_runs([client.get_experiment_by_name(settings.mlflow.experiment).experiment_id],
                                     "params.`policy.items_blocked` != ''", order_by=["attributes.start_time DESC"],
                                     max_results=1)[0]
            assert run.data.params["policy.items_blocked"] == str(len(blocked))
            assert run.data.params["policy.items_blocked_by_category"] == str(len(blocked - set(named)))

        # the popularity chain (users with neither factors nor content vectors), as the job calls it
        events = catalog.events_until(spark, settings, ds)
        items = catalog.latest_items(spark, settings, ds)
        prof = profiles.build_profiles(events, items, None, settings.profiles, settings.clean.event_weights,
                                       b"k", None)
        rules = policy.rules(replace(settings.policy, blocked_items=str(tmp_path / "items.csv"),
                                     blocked_categories=str(tmp_path / "cats.csv")))
        users = events.select("user_id").distinct().orderBy("user_id").limit(50)
        pop = fallback.nightly(events, items, prof, None, None, None, settings.recommend, ds, users=users,
                               blocked=policy.resolve(rules, items)).cache()
        assert {r[0] for r in pop.select("source").distinct().collect()} <= {"popular_category", "popular"}
        per_user = pop.groupBy("user_id").count()
        assert per_user.count() == 50 and per_user.where(F.col("count") != n).count() == 0
        assert pop.where(F.col("item_id").isin(sorted(blocked))).count() == 0

    # online: a model of its own (the demo chain's alias and store stay as they are)
    own = ["--set", "online.registered_model=liverec-online-policy", "--set", "online.store_prefix=policy"]
    assert main(["run", "publish_online", *cli_args(settings), "--ds", ds, *args, *own]) == 0
    with tracking.caller_environment_kept():
        mlflow.set_tracking_uri(settings.tracking_uri())
        model = mlflow.pyfunc.load_model(f"models:/liverec-online-policy@{settings.online.alias}")
    scorer = model.unwrap_python_model().scorer
    assert {scorer.item_ids[i] for i in np.flatnonzero(scorer.blocked)} == blocked & set(scorer.item_ids)
    key = cleaning.id_key(settings)
    listed = {r[0] for r in lakehouse.read(spark, settings, tables.RECOMMENDATIONS).where(F.col("ds") == ds)
              .select("user_id").distinct().collect()}
    raw = [u for u in sorted(r[0] for r in lakehouse.read(spark, settings, tables.BRONZE_EVENTS).select("user_id")
                             .distinct().collect() if r[0]) if cleaning.pseudonymise_value(u, key) in listed][:20]
    assert len(raw) == 20
    asks = [{"user_id": u, "k": n} for u in raw] + [
        {"user_id": None, "session": [{"item_id": named[0], "event_type": "click", "ts": 1_700_000_000}], "k": n},
        {"user_id": raw[0], "viewing": named[1], "k": n}]
    answers = model.predict(pd.DataFrame(asks))
    assert not set(answers["item_id"]) & blocked
    sizes = answers.groupby("request").size()
    assert len(sizes) == len(asks) and (sizes == n).all()
    scorer.store = None  # the scorer's degraded mode, as when the store cannot be read: popular items only
    degraded = scorer.answer([{"user_id": raw[0], "k": n}])
    assert set(degraded["warnings"].explode()) == {online.STORE_DOWN}
    assert len(degraded) == n and not set(degraded["item_id"]) & blocked


def _mean_kl(lists: dict[str, list[str]], history: dict[str, list[str]], cats: dict[str, list[str]]) -> float:
    """Mean over users of KL(p || 0.99 q + 0.01 p) of their history's category mix p and their list's q (numpy)."""
    names = sorted({c for cs in cats.values() for c in cs})
    col = {c: n for n, c in enumerate(names)}

    def mix(items: list[str]) -> np.ndarray:
        m = np.zeros(len(names))
        for i in items:
            for c in cats.get(i, []):
                m[col[c]] += 1.0 / len(cats[i])
        return m / m.sum() if m.sum() else m

    out = []
    for u, items in lists.items():
        p, q = mix(history[u]), mix(items)
        if p.sum():
            s = 0.99 * q + 0.01 * p
            out.append(float((p[p > 0] * np.log(p[p > 0] / s[p > 0])).sum()))
    return float(np.mean(out))


@pytest.mark.slow
def test_calibrated_reranker_brings_the_lists_closer_to_the_history_mix(spark, demo_pipeline):
    """recommend.reranker=calibrated (lambda 0.9) publishes N per user, from the same champion, with a lower mean
    KL between each user's history category mix and their list's than the default MMR table (numpy); the online
    scorer set to it answers closer to the history mix too."""
    settings, ds = demo_pipeline, "2026-11-02"
    cats = {r["item_id"]: list(r["categories"] or []) for r in
            catalog.latest_items(spark, settings, ds).select("item_id", "categories").collect()}
    history: dict[str, list[str]] = {}
    for r in catalog.events_until(spark, settings, ds).select("user_id", "item_id").distinct().collect():
        history.setdefault(r["user_id"], []).append(r["item_id"])

    def table() -> dict[str, list[str]]:
        rows = lakehouse.read(spark, settings, tables.RECOMMENDATIONS).where(F.col("ds") == ds).orderBy(
            "user_id", "rank").select("user_id", "item_id").collect()
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r["user_id"], []).append(r["item_id"])
        return out

    mmr = table()
    with restored(spark, settings, tables.RECOMMENDATIONS):
        assert main(["run", "recommend_nightly", *cli_args(settings), "--ds", ds, "--set", "recommend.reranker=calibrated",
                     "--set", "recommend.calibration_lambda=0.9"]) == 0
        recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS).where(F.col("ds") == ds).cache()
        _check_lists(spark, settings, recs, ds)
        assert recs.where(~F.col("model_version").startswith("ranker:")).count() == 0
        calibrated = table()
    assert calibrated != mmr
    assert _mean_kl(calibrated, history, cats) < 0.9 * _mean_kl(mmr, history, cats)

    with tracking.caller_environment_kept():
        mlflow.set_tracking_uri(settings.tracking_uri())
        model = mlflow.pyfunc.load_model(f"models:/{settings.online.registered_model}@{settings.online.alias}")
    scorer = model.unwrap_python_model().scorer
    from liverec import cleaning

    key = cleaning.id_key(settings)
    by_pseudo = {cleaning.pseudonymise_value(r[0], key): r[0] for r in lakehouse.read(
        spark, settings, tables.BRONZE_EVENTS).select("user_id").distinct().collect() if r[0]}
    users = [u for u in sorted(mmr) if u in by_pseudo][:30]
    asks = [{"user_id": by_pseudo[u], "k": settings.recommend.top_n} for u in users]

    def answers() -> dict[str, list[str]]:
        got = scorer.answer(asks)
        return {users[q]: g.sort_values("rank")["item_id"].tolist() for q, g in got.groupby("request")}

    served_mmr = answers()
    scorer.meta = {**scorer.meta, "reranker": "calibrated", "calibration_lambda": 0.9}  # as a bundle built with it
    served_cal = answers()
    assert all(len(v) == settings.recommend.top_n for v in served_cal.values()) and len(served_cal) == len(users)
    assert _mean_kl(served_cal, history, cats) < _mean_kl(served_mmr, history, cats)
