"""Ingest + clean on the real reference data sets in ../shared/data (skipped where absent)."""

import csv
import io
import lzma
import random
import re

import pytest
from pyspark.sql import functions as F

from liverec import lakehouse, tables
from liverec.cli import main
from liverec.ingest import RETAIL_PRODUCT_CODE
from tests.conftest import cli_args, shared

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
    runs = client.search_runs([exp.experiment_id], f"tags.`liverec.stage` = '{stage}'",
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
