"""The real reference data sets in ../shared/data (skipped where absent): ingest + clean on the whole of
MovieLens 100K and UCI Online Retail, and the whole pipeline, to the published table and one online answer,
on FilmTrust (ratings without time + a trust graph), the OTTO sample (sessions) and a slice of Online Retail."""

import csv
import io
import json
import lzma
import random
import re
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from liverec import lakehouse, tables, tracking
from liverec.cli import main
from liverec.features import DENSE_FEATURES
from liverec.readers import RETAIL_PRODUCT_CODE
from tests.conftest import LIGHT_CANDIDATES, assert_online_features_equal_the_batch, cli_args, shared

DS = "2024-01-15"


@pytest.mark.slow
def test_movielens_100k(spark, ml100k_pipeline):
    """Ingest, clean and the text encoder on the real data (the run is conftest's ml100k_pipeline)."""
    settings = ml100k_pipeline
    clean = mlflow_summary(settings, "clean")
    assert (clean["input_rows"], clean["kept"], clean["quarantined"], clean["duplicates"]) == (100_000, 100_000, 0, 0)
    silver = lakehouse.read(spark, settings, tables.SILVER_EVENTS)
    row = silver.agg(F.count("*").alias("n"), F.countDistinct("user_id").alias("users"),
                     F.countDistinct("item_id").alias("items"), F.min("value").alias("lo"),
                     F.max("value").alias("hi")).collect()[0]
    assert (row["n"], row["users"], row["items"], row["lo"], row["hi"]) == (100_000, 943, 1_682, 1.0, 5.0)
    items = lakehouse.read(spark, settings, tables.BRONZE_ITEMS)
    assert items.count() == 1_682
    star_wars = items.where(F.col("title") == "Star Wars (1977)").collect()[0]
    assert set(star_wars["category"].split("|")) == {"Action", "Adventure", "Romance", "Sci-Fi", "War"}

    # item embeddings from the real all-MiniLM-L6-v2 over titles and genres
    assert lakehouse.read(spark, settings, tables.ITEM_EMBEDDINGS).count() == 1_682
    top5 = [r["title"] for r in _neighbours(spark, settings).where(
        (F.col("query_title") == "Star Wars (1977)") & (F.col("rank") <= 5)).collect()]
    assert {"Return of the Jedi (1983)", "Empire Strikes Back, The (1980)"} <= set(top5), top5


def mlflow_summary(settings, stage: str) -> dict[str, float]:
    """The metrics of the newest MLflow run of ``stage`` in the settings' store."""
    import mlflow

    client = mlflow.MlflowClient(settings.mlflow.tracking_uri)
    exp = client.get_experiment_by_name(settings.mlflow.experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.`{tracking.STAGE_TAG}` = '{stage}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].data.metrics


def _neighbours(spark, settings):
    """gold.item_neighbors with both items' titles (query_title, title)."""
    items = lakehouse.read(spark, settings, tables.BRONZE_ITEMS).select("item_id", "title")
    return (lakehouse.read(spark, settings, tables.ITEM_NEIGHBORS)
            .join(items.withColumnRenamed("title", "query_title"), "item_id")
            .join(items.withColumnRenamed("item_id", "neighbor_id"), "neighbor_id"))


def _retail_expectations(path):
    with lzma.open(path, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(io.StringIO(fh.read())))
    product = re.compile(RETAIL_PRODUCT_CODE)
    no_customer = sum(1 for r in rows if not r["CustomerID"].strip())
    non_product = sum(1 for r in rows if r["CustomerID"].strip() and not product.match(r["StockCode"]))
    return_invoices = {r["InvoiceNo"] for r in rows if r["InvoiceNo"].startswith("C") and r["CustomerID"].strip()
                       and product.match(r["StockCode"]) and float(r["UnitPrice"]) > 0
                       and abs(float(r["Quantity"])) <= 10_000}
    return len(rows), no_customer, non_product, return_invoices


@pytest.mark.slow
def test_uci_online_retail(spark, settings, capsys):
    path = shared("uci-online-retail", "online_retail.csv.xz")
    n_rows, no_customer, non_product, return_invoices = _retail_expectations(path)
    assert (n_rows, no_customer) == (541_909, 135_080)
    assert main(["run", "ingest", *cli_args(settings), "--ds", DS, "--source", "online_retail",
                 "--input", str(path)]) == 0
    assert main(["run", "clean", *cli_args(settings), "--ds", DS]) == 0
    out = capsys.readouterr().out
    assert re.search(r"balance: input 541,909 = silver [\d,]+ \+ quarantine [\d,]+ \+ duplicates [\d,]+", out), out

    q = lakehouse.read(spark, settings, tables.SILVER_QUARANTINE)
    reasons = {r["reason"]: r["count"] for r in q.groupBy("reason").count().collect()}
    assert reasons["missing_user_id"] == 135_080
    assert reasons["non_product_code"] == non_product
    assert not [r for r in reasons if r.startswith("bot")]  # no customer paces like a bot (benchmarks/bot_rules.py)
    assert q.where((F.col("reason") == "non_product_code") & F.col("item_id").isin("POST", "M", "BANK CHARGES")) \
        .select("item_id").distinct().count() == 3

    silver = lakehouse.read(spark, settings, tables.SILVER_EVENTS)
    returns = silver.where(F.col("event_type") == "return")
    assert returns.where(~F.col("session_id").startswith("C")).count() == 0
    assert {r[0] for r in returns.select("session_id").distinct().collect()} == return_invoices
    assert silver.where(F.col("event_type") == "purchase").count() > 350_000

    # product descriptions -> embeddings: neighbours share product words far more often than random pairs
    assert main(["run", "embed_items", *cli_args(settings), "--ds", DS]) == 0
    pairs = [(r["query_title"], r["title"], r["rank"]) for r in _neighbours(spark, settings).where(
        F.col("rank") <= 5).collect()]

    def words(text):
        return {w for w in re.findall(r"[a-z]+", (text or "").lower()) if len(w) >= 3}

    share = {rank: [] for rank in range(1, 6)}
    for query, neighbour, rank in pairs:
        share[rank].append(bool(words(query) & words(neighbour)))
    queries = sorted({q for q, _, _ in pairs})
    rng = random.Random(0)
    baseline = sum(bool(words(rng.choice(queries)) & words(rng.choice(queries))) for _ in range(5000)) / 5000
    top1 = sum(share[1]) / len(share[1])
    top5 = sum(sum(v) for v in share.values()) / sum(len(v) for v in share.values())
    assert len(share[1]) > 3_000 and top1 >= 0.9 and top5 >= 0.85 and baseline < 0.2, (top1, top5, baseline)


# the whole pipeline on a real data set, light: few ALS iterations, a short ranker run, every user active, the
# candidates ml100k_pipeline uses
LIGHT = ("als.max_iter=5", "ranker.epochs=3", "ranker.num_processes=1", "recommend.active_days=100000",
         "evaluate.splits=[random]", "ranker.export_variants=false", *LIGHT_CANDIDATES)  # variants: the ml100k chain's
UP_TO_ONLINE = ("ingest,clean,embed_items,build_profiles,train_als,train_ease,build_ranker_examples,train_ranker,"
                "recommend_nightly,publish_online")


def _pipeline(settings, source, path, stages=UP_TO_ONLINE, *extra):
    args = [x for kv in LIGHT for x in ("--set", kv)]
    assert main(["pipeline", *cli_args(settings), *args, "--ds", DS, "--source", source, "--input", str(path),
                 "--stages", stages, *extra]) == 0


def _published(spark, settings):
    recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS).where(F.col("ds") == DS).cache()
    per_user = recs.groupBy("user_id").count()
    assert per_user.where(F.col("count") != settings.recommend.top_n).count() == 0
    events = lakehouse.read(spark, settings, tables.SILVER_EVENTS)
    assert recs.join(events.select("user_id", "item_id"), ["user_id", "item_id"]).count() == 0  # nothing seen
    return recs, per_user.count()


def _online_model(settings):
    import mlflow

    with tracking.caller_environment_kept():
        mlflow.set_tracking_uri(settings.tracking_uri())
        return mlflow.pyfunc.load_model(f"models:/{settings.online.registered_model}@{settings.online.alias}")


def _online_answer(settings, raw_user, k=5):
    import pandas as pd

    model = _online_model(settings)
    out = model.predict(pd.DataFrame([{"user_id": raw_user, "k": k}]))
    assert list(out["rank"]) == list(range(1, k + 1)) and out["reason"].str.len().min() > 0
    return out


@pytest.mark.slow
def test_filmtrust_end_to_end_with_its_trust_graph(spark, settings_factory):
    folder = shared("filmtrust")
    lines = [ln.split() for ln in (folder / "ratings.txt").read_text().splitlines() if ln.strip()]
    trust = [ln.split() for ln in (folder / "trust.txt").read_text().splitlines() if ln.strip()]
    assert (len(lines), len(trust)) == (35_497, 1_853)
    # the evaluation's baselines only: its product row (the ranker trained again on the split, 190 of this test's
    # 500 s) is tested on the demo chain (test_nightly.py::test_evaluate_scores_the_product_beside_the_baselines)
    settings = settings_factory(*LIGHT, "evaluate.product=false")
    _pipeline(settings, "filmtrust", folder, UP_TO_ONLINE + ",evaluate", "--set", "evaluate.product=false")
    clean = mlflow_summary(settings, "clean")
    pairs = {(u, i) for u, i, _ in lines}
    # every line is kept (ratings 0.5..4, one timestamp for all), except repeats of a (user, item, rating)
    assert clean["input_rows"] == 35_497 and clean["quarantined"] == 0
    assert clean["kept"] == len({tuple(x) for x in lines}) and clean["kept"] >= len(pairs)
    assert lakehouse.read(spark, settings, tables.BRONZE_SOCIAL).count() == 1_853
    # the trust edges reach the profiles: a rater's friends are the others trusting or trusted by them (an
    # undirected graph; the other end need not have rated anything), ids pseudonymised, so compare the counts
    raters = {u for u, _, _ in lines}
    partners: dict[str, set[str]] = {}
    for a, b, _ in trust:
        if a != b:
            partners.setdefault(a, set()).add(b)
            partners.setdefault(b, set()).add(a)
    want = sorted(len(partners[u]) for u in raters if u in partners)
    profiles = lakehouse.read(spark, settings, tables.USER_PROFILES).where(F.col("ds") == DS)
    assert profiles.count() == len(raters)
    got = sorted(r[0] for r in profiles.where(F.col("friend_count") > 0).select("friend_count").collect())
    assert got == want and len(want) > 500
    # ... and the friends source finds candidates
    examples = lakehouse.read(spark, settings, tables.RANKER_EXAMPLES).where(F.col("ds") == DS)
    assert examples.where(F.array_contains("sources", "friends")).count() > 0
    recs, users = _published(spark, settings)
    assert users == len(raters)
    results = {r["split"]: r["results"] for r in json.loads(
        (Path(settings.evaluate.report_dir) / DS / "evaluation.json").read_text())}
    assert set(results) == {"random"} and set(results["random"]) == {"als", "popularity", "ease"}
    assert results["random"]["als"]["ndcg"] > results["random"]["popularity"]["ndcg"] * 0.5
    _online_answer(settings, lines[0][0])
    # the online features equal the batch ones with a trust graph too, for the raters with the most friends: the
    # friends' feature counts every item a friend chose, beyond the friends source's own friend_candidates
    model = _online_model(settings)
    rows = assert_online_features_equal_the_batch(spark, settings, DS, model.unwrap_python_model().scorer,
                                                  profiles.orderBy(F.desc("friend_count"), "user_id").limit(3))
    befriended = rows[[d[DENSE_FEATURES.index("log_friends_on_item")] > 0 for d in rows["dense"]]]
    assert len(befriended) > 0 and (befriended["source"] != "friends").any()


@pytest.mark.slow
def test_otto_sessions_end_to_end(spark, settings_factory, capsys):
    path = shared("otto-sample", "train_first20_sessions.jsonl")
    sessions = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    n_events = sum(len(s["events"]) for s in sessions)
    assert (len(sessions), n_events) == (20, 862)
    settings = settings_factory(*LIGHT)
    _pipeline(settings, "otto", path)
    out = capsys.readouterr().out
    assert "bronze.items has no items" in out  # no item data: content is off, said so
    clean = mlflow_summary(settings, "clean")
    distinct = {(s["session"], e["aid"], e["ts"], e["type"]) for s in sessions for e in s["events"]}
    assert clean["input_rows"] == n_events and clean["kept"] + clean["duplicates"] + clean["quarantined"] == n_events
    assert clean["kept"] == len(distinct) - clean["quarantined"]
    types = {r[0]: r[1] for r in lakehouse.read(spark, settings, tables.SILVER_EVENTS).groupBy("event_type")
             .count().collect()}
    assert set(types) <= {"click", "add_to_cart", "purchase"} and types["click"] > types.get("purchase", 0)
    recs, users = _published(spark, settings)
    silver_users = lakehouse.read(spark, settings, tables.SILVER_EVENTS).select("user_id").distinct().count()
    assert users == silver_users > 10
    _online_answer(settings, str(sessions[0]["session"]))


@pytest.mark.slow
def test_online_retail_slice_end_to_end(spark, settings_factory, tmp_path):
    """Every Online Retail line of 300 customers through the whole pipeline (cancellations are returns,
    non-product codes are quarantined, quantities are values)."""
    path = shared("uci-online-retail", "online_retail.csv.xz")
    with lzma.open(path, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    customers = sorted({r["CustomerID"] for r in rows if r["CustomerID"].strip()})[:300]
    keep = set(customers)
    part = [r for r in rows if r["CustomerID"] in keep]
    sliced = tmp_path / "retail_slice.csv"
    with sliced.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(part)
    settings = settings_factory(*LIGHT)
    _pipeline(settings, "online_retail", sliced)
    clean = mlflow_summary(settings, "clean")
    assert clean["input_rows"] == len(part)
    product = re.compile(RETAIL_PRODUCT_CODE)
    non_product = sum(1 for r in part if not product.match(r["StockCode"]))
    assert clean.get("quarantine_non_product_code", 0) == non_product
    recs, users = _published(spark, settings)
    assert users > 200 and recs.where(F.col("source").isin("ease", "als", "content")).count() > 0
    # the busiest customer (the first one, 12346, bought one line and cancelled it: no history, no profile)
    busiest = max(customers, key=lambda c: sum(1 for r in part if r["CustomerID"] == c))
    _online_answer(settings, busiest.removesuffix(".0"))
