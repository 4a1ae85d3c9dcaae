"""End to end on generated data (the shared demo chain, conftest's demo_pipeline): the dirt the generator put in
is exactly what cleaning takes out; a rerun replaces its date; the tables are Delta for Spark and deltalake."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable, QueryBuilder
from pyspark.sql import functions as F

from liverec import lakehouse, tables
from liverec.cli import main
from tests.conftest import DEMO_DS, REPO, VENV_BIN, cli_args, job_env, restored

DS = DEMO_DS


@pytest.fixture(scope="module")
def demo_run(demo_pipeline):
    """The shared demo chain's settings and the generator's manifest (what dirt it put in)."""
    return demo_pipeline, json.loads((Path(demo_pipeline.demo.output_dir) / "manifest.json").read_text())


def test_quarantine_matches_the_generated_dirt(spark, demo_run):
    settings, manifest = demo_run
    dirt = manifest["dirt"]
    q = lakehouse.read(spark, settings, tables.SILVER_QUARANTINE).where(F.col("ds") == DS)
    reasons = {r["reason"]: r["count"] for r in q.groupBy("reason").count().collect()}
    assert reasons == {
        "malformed": dirt["malformed"], "missing_user_id": dirt["null_user_id"], "future_ts": dirt["future_ts"],
        "unknown_event_type": dirt["unknown_event_type"], "non_numeric_value": dirt["non_numeric_value"],
        "bot_user": dirt["bot_events"],
    }
    assert all(v > 0 for v in reasons.values())
    silver = lakehouse.read(spark, settings, tables.SILVER_EVENTS).where(F.col("ds") == DS)
    assert silver.count() == manifest["clean_events"]
    bronze = lakehouse.read(spark, settings, tables.BRONZE_EVENTS).where(F.col("ds") == DS).count()
    assert bronze == manifest["rows_written"]
    assert bronze == silver.count() + q.count() + dirt["duplicate"]  # nothing lost


def test_no_raw_user_ids_past_bronze(spark, demo_run):
    settings, _ = demo_run
    for table in (tables.SILVER_EVENTS, tables.SILVER_QUARANTINE):
        df = lakehouse.read(spark, settings, table).where(F.col("user_id").isNotNull())
        assert df.where(~F.col("user_id").rlike("^[0-9a-f]{64}$")).count() == 0, table
    raw = lakehouse.read(spark, settings, tables.BRONZE_EVENTS).where(F.col("user_id").rlike("^(u|bot)[0-9]+$"))
    assert raw.count() > 0  # bronze does keep them


def test_rerun_of_a_date_replaces_it_and_other_dates_dedupe(spark, demo_run, capsys):
    settings, manifest = demo_run
    with restored(spark, settings, tables.BRONZE_EVENTS, tables.BRONZE_ITEMS, tables.BRONZE_SOCIAL,
                  tables.SILVER_EVENTS, tables.SILVER_QUARANTINE):
        _rerun_and_other_date(spark, settings, manifest, capsys)


def _rerun_and_other_date(spark, settings, manifest, capsys):
    v0 = lakehouse.version(spark, settings, tables.SILVER_EVENTS)
    assert main(["run", "clean", *cli_args(settings), "--ds", DS]) == 0
    out = capsys.readouterr().out
    assert re.search(r"balance: input [\d,]+ = silver [\d,]+ \+ quarantine [\d,]+ \+ duplicates [\d,]+", out)
    assert lakehouse.version(spark, settings, tables.SILVER_EVENTS) == v0 + 1
    silver = lakehouse.read(spark, settings, tables.SILVER_EVENTS)
    assert silver.where(F.col("ds") == DS).count() == manifest["clean_events"]

    # the same log landing again under another date: every valid event is a duplicate of a kept row
    other = "2026-11-03"
    assert main(["run", "ingest", *cli_args(settings), "--ds", other, "--source", "demo"]) == 0
    assert main(["run", "clean", *cli_args(settings), "--ds", other]) == 0
    silver = lakehouse.read(spark, settings, tables.SILVER_EVENTS)
    assert silver.where(F.col("ds") == other).count() == 0
    assert silver.where(F.col("ds") == DS).count() == manifest["clean_events"]


def test_tables_are_delta_for_spark_and_for_deltalake(spark, demo_run):
    settings, manifest = demo_run
    written = (tables.BRONZE_EVENTS, tables.BRONZE_ITEMS, tables.BRONZE_SOCIAL, tables.SILVER_EVENTS,
               tables.SILVER_QUARANTINE)  # what ingest + clean wrote
    for table in written:
        path = tables.table_path(settings, table)
        n_spark = spark.read.format("delta").load(path).count()
        dt = DeltaTable(path)
        result = QueryBuilder().register("t", dt).execute("select count(*) as n from t").read_all()
        assert result["n"].to_pylist() == [n_spark], table
    assert DeltaTable(tables.table_path(settings, tables.SILVER_EVENTS)).metadata().partition_columns == ["ds"]


@pytest.mark.slow
def test_python_entry_point_and_spark_submit_errors(tmp_path):
    """A job file runs as a plain python script; under spark-submit a user mistake exits with 2 and one clear
    line. (Every job also runs under spark-submit in tests/test_orchestration.py, through Airflow and on a
    standalone cluster.)"""
    from tests.conftest import settings_for

    settings = settings_for(tmp_path)
    env = job_env()
    common = [*cli_args(settings), "--ds", DS]
    ingest = subprocess.run([sys.executable, str(REPO / "jobs" / "ingest.py"), *common, "--source", "demo",
                             "--set", "demo.events=5000", "--set", "demo.users=200"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    assert "[ingest] write bronze.events:" in ingest.stdout
    submit = [str(VENV_BIN / "spark-submit"), "--master", "local[2]", "--driver-memory", "2g"]
    bad = subprocess.run([*submit, str(REPO / "jobs" / "ingest.py"), *common, "--source", "events", "--input",
                          str(tmp_path / "nope.csv")], env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2
    # spark-submit merges the Python driver's stderr into its stdout
    assert "liverec ingest: error: events input path does not exist" in bad.stdout + bad.stderr


def test_every_stage_wrote_what_it_declares(spark, demo_pipeline):
    """The stages' declarations (which order the pipeline and the DAGs) against the demo chain's lakehouse and
    registry: every table a pipeline stage declares it writes has rows for the run's ds, every model it declares
    is registered under its alias, the evaluation report is there."""
    import mlflow

    from liverec.online_store import open_store
    from liverec.stages import PIPELINE, STAGES
    from liverec.stages.base import CHAMPION, EVALUATION_REPORT, ONLINE_MODEL, ONLINE_STORE, RANKER_VERSION

    settings = demo_pipeline
    client = mlflow.MlflowClient(settings.tracking_uri())
    ranker, online = settings.ranker.registered_model, settings.online.registered_model
    written = set()
    for name in PIPELINE:
        for out in STAGES[name].writes:
            written.add(out)
            if out in tables.ALL_TABLES:
                rows = lakehouse.read(spark, settings, out).where(F.col("ds") == DS).limit(1).count()
                assert rows == 1, (name, out)
            elif out == RANKER_VERSION:
                assert client.search_model_versions(f"name='{ranker}'"), name
            elif out == CHAMPION:
                assert client.get_model_version_by_alias(ranker, settings.ranker.champion_alias), name
            elif out == ONLINE_MODEL:
                assert client.get_model_version_by_alias(online, settings.online.alias), name
            elif out == ONLINE_STORE:
                with open_store(tables.online_store_url(settings)) as store:
                    assert store.current() == DS and store.count() > 0, name
            else:
                assert out == EVALUATION_REPORT and (Path(settings.evaluate.report_dir) / DS / "evaluation.json"
                                                     ).is_file(), (name, out)
    # every table the lakehouse holds was declared by some stage of the pipeline
    on_disk = {t for t in tables.ALL_TABLES if lakehouse.exists(spark, settings, t)}
    assert on_disk <= written, on_disk - written
