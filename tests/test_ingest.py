"""Ingest readers and the ingest stage's handling of bad input, through the real CLI entry point."""

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from liverec import ingest, lakehouse, readers, schemas, tables, tracking
from liverec.cli import main
from tests.conftest import cli_args


def run_cli(settings, *args):
    return main(["run", *args[:1], *cli_args(settings), "--ds", "2024-03-10", *args[1:]])


EVENTS_CSV = (
    "user_id,item_id,event_type,ts,value,session_id,extra\n"
    "alice,i1,view,1710000000,,s1,x\n"
    "bob,i2,purchase,2024-03-09T10:00:00Z,2,s2,y\n"
    "broken line without commas\n"
)


def test_generic_csv_json_parquet(spark, tmp_path):
    csv = tmp_path / "e.csv"
    csv.write_text(EVENTS_CSV)
    df = ingest.read_generic_events(spark, str(csv))
    rows = df.orderBy("user_id").collect()
    assert len(rows) == 3
    assert [r["raw_record"] is not None for r in rows].count(True) == 1
    assert {r["user_id"] for r in rows if r["raw_record"] is None} == {"alice", "bob"}
    assert "extra" not in df.columns and df.where(F.col("event_id").isNotNull()).count() == 0

    js = tmp_path / "e.jsonl"
    js.write_text(json.dumps({"user_id": 7, "item_id": "i1", "event_type": "click", "ts": 1710000000,
                              "value": 1.5, "event_id": "x1"}) + "\n{not json\n")
    jrows = ingest.read_generic_events(spark, str(js)).collect()
    assert len(jrows) == 2
    good = [r for r in jrows if r["raw_record"] is None][0]
    assert (good["user_id"], good["value"], good["ts"], good["event_id"]) == ("7", "1.5", "1710000000", "x1")

    pq = tmp_path / "e.parquet"
    spark.createDataFrame([(1, "i1", "view", 1710000000)], "user_id int, item_id string, event_type string, ts long") \
        .write.parquet(str(pq))
    prow = ingest.read_generic_events(spark, str(pq)).collect()[0]
    assert (prow["user_id"], prow["ts"], prow["raw_record"]) == ("1", "1710000000", None)


def test_edges_with_and_without_header(spark, tmp_path):
    plain = tmp_path / "trust.txt"
    plain.write_text("1 2 1\n2\t3\n\n3 4 0.5\nonly-one-token\n")
    rows = ingest.read_edges(spark, str(plain)).collect()
    good = sorted((r["src"], r["dst"], r["weight"]) for r in rows if r["raw_record"] is None)
    assert good == [("1", "2", "1"), ("2", "3", "1"), ("3", "4", "0.5")]
    assert [r["raw_record"] for r in rows if r["raw_record"]] == ["only-one-token"]
    headed = tmp_path / "friends.tsv"
    headed.write_text("user\tfriend\nu1\tu2\n")
    assert [(r["src"], r["dst"]) for r in ingest.read_edges(spark, str(headed)).collect()] == [("u1", "u2")]


def test_logs_without_timestamps_filmtrust_and_otto(spark, tmp_path):
    """Real data shapes: a log without a ts column (--default-ts), FilmTrust's ratings + trust edges, OTTO's
    sessions (ms timestamps, clicks/carts/orders), each malformed line kept."""
    plays = tmp_path / "plays.tsv"
    plays.write_text("user_id\titem_id\tevent_type\tvalue\nu1\tartist9\tplay\t6152\nu2\tartist3\tplay\t\n")
    rows = ingest.read_generic_events(spark, str(plays), default_ts="2020-05-01T00:00:00").orderBy("user_id").collect()
    assert [(r["user_id"], r["value"], r["ts"]) for r in rows] == [
        ("u1", "6152", "2020-05-01T00:00:00"), ("u2", None, "2020-05-01T00:00:00")]
    with pytest.raises(ingest.InputError, match="lacks required column"):
        ingest.read_generic_events(spark, str(plays))  # without --default-ts a ts column is required
    with pytest.raises(ingest.InputError, match="--default-ts"):
        ingest.read_generic_events(spark, str(plays), default_ts="yesterday")

    ft = tmp_path / "filmtrust"
    ft.mkdir()
    (ft / "ratings.txt").write_text("1 1 2\n1 2 3.5\n2 1 4\nbroken\n")
    (ft / "trust.txt").write_text("2 1 1\n1 3 1\n")
    got = readers.read_filmtrust(spark, str(ft), "2024-01-15T00:00:00")
    ev = got.events.orderBy("user_id", "item_id").collect()
    assert [(r["user_id"], r["item_id"], r["value"], r["event_type"]) for r in ev if r["raw_record"] is None] == [
        ("1", "1", "2", "rating"), ("1", "2", "3.5", "rating"), ("2", "1", "4", "rating")]
    assert [r["raw_record"] for r in ev if r["raw_record"]] == ["broken"]
    assert {r["ts"] for r in ev if r["raw_record"] is None} == {"2024-01-15T00:00:00"}
    assert sorted((r["src"], r["dst"]) for r in got.social.collect()) == [("1", "3"), ("2", "1")]

    otto = tmp_path / "otto.jsonl"
    otto.write_text(json.dumps({"session": 7, "events": [{"aid": 11, "ts": 1659304800025, "type": "clicks"},
                                                         {"aid": 12, "ts": 1659304904511, "type": "carts"},
                                                         {"aid": 12, "ts": 1659304905000, "type": "orders"}]})
                    + "\n{not json\n")
    rows = readers.read_otto(spark, str(otto)).events.collect()
    good = sorted((r["user_id"], r["item_id"], r["event_type"], r["ts"], r["session_id"]) for r in rows
                  if r["raw_record"] is None)
    assert good == [("7", "11", "click", "1659304800025", "7"), ("7", "12", "add_to_cart", "1659304904511", "7"),
                    ("7", "12", "purchase", "1659304905000", "7")]
    assert [r["raw_record"] for r in rows if r["raw_record"]] == ["{not json"]


def test_ingest_events_stage_is_idempotent_per_ds(spark, settings, tmp_path):
    csv = tmp_path / "e.csv"
    csv.write_text(EVENTS_CSV)
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,category\ni1,Red mug,kitchen\ni2,Blue pot,kitchen\n")
    for _ in range(2):
        assert run_cli(settings, "ingest", "--source", "events", "--input", str(csv), "--items", str(items)) == 0
    events = lakehouse.read(spark, settings, tables.BRONZE_EVENTS)
    assert events.count() == 3  # the rerun replaced the date, not appended to it
    assert lakehouse.version(spark, settings, tables.BRONZE_EVENTS) == 1
    assert lakehouse.read(spark, settings, tables.BRONZE_ITEMS).count() == 2
    assert events.select("row_id").distinct().count() == 3


def _file_stats(settings, table):
    """Every data file's statistics as its Delta log wrote them, and the table's properties (read from the JSON log)."""
    log = Path(tables.table_path(settings, table)) / "_delta_log"
    stats, conf = [], {}
    for commit in sorted(log.glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "metaData" in action:
                conf = action["metaData"]["configuration"]
            if "add" in action:
                stats.append(json.loads(action["add"]["stats"]))
    return stats, conf


def test_delta_statistics_kept_only_for_the_columns_tables_names(spark, settings, tmp_path):
    csv = tmp_path / "e.csv"
    csv.write_text(EVENTS_CSV)
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,category\ni1,Red mug,kitchen\ni2,Blue pot,kitchen\n")
    assert run_cli(settings, "ingest", "--source", "events", "--input", str(csv), "--items", str(items)) == 0
    stats, conf = _file_stats(settings, tables.BRONZE_EVENTS)
    assert conf == {"delta.dataSkippingNumIndexedCols": "0"}
    assert {k for s in stats for k in s} == {"numRecords"} and sum(s["numRecords"] for s in stats) == 3
    stats, conf = _file_stats(settings, tables.BRONZE_ITEMS)  # not listed: Delta's default, every column
    assert conf == {} and set(stats[0]["minValues"]) >= {"item_id", "title", "category"}
    silver = spark.createDataFrame([("e1", "u1", "i1", "view", None, dt.datetime(2024, 3, 10, 9), None, None,
                                     "events", "2024-03-10")], schemas.SCHEMAS[tables.SILVER_EVENTS])
    lakehouse.append(spark, settings, tables.SILVER_EVENTS, silver)  # the stream's path creates it too
    stats, conf = _file_stats(settings, tables.SILVER_EVENTS)
    assert conf == {"delta.dataSkippingStatsColumns": "ts"}
    assert [(s["numRecords"], set(s["minValues"])) for s in stats] == [(1, {"ts"})]


def test_each_call_logs_into_its_own_conf_store(spark, tmp_path, monkeypatch):
    """One process, two confs (a notebook, the tests): the first call's mlflow.set_tracking_uri must not
    send the second call's run into the first call's store, and the caller's environment is left as it was."""
    import mlflow

    from tests.conftest import settings_for

    for key in tracking.EXPORTED:
        monkeypatch.delenv(key, raising=False)
    csv = tmp_path / "e.csv"
    csv.write_text(EVENTS_CSV)
    first, second = settings_for(tmp_path / "a"), settings_for(tmp_path / "b")
    for settings in (first, second):
        assert run_cli(settings, "ingest", "--source", "events", "--input", str(csv)) == 0
        assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_EXPERIMENT_ID" not in os.environ

    def runs_in(settings):
        client = mlflow.MlflowClient(settings.mlflow.tracking_uri)
        return len(client.search_runs([client.get_experiment_by_name(settings.mlflow.experiment).experiment_id]))

    assert (runs_in(first), runs_in(second)) == (1, 1)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", second.mlflow.tracking_uri)  # the caller's own choice still wins
    assert run_cli(first, "ingest", "--source", "events", "--input", str(csv)) == 0
    assert os.environ["MLFLOW_TRACKING_URI"] == second.mlflow.tracking_uri
    assert (runs_in(first), runs_in(second)) == (1, 2)


@pytest.mark.parametrize("case", ["missing", "unknown_source", "wrong_columns", "empty", "binary", "header_only",
                                  "no_input"])
def test_bad_input_is_one_clear_line_and_no_new_version(spark, settings, tmp_path, capsys, case):
    good = tmp_path / "good.csv"
    good.write_text(EVENTS_CSV)
    assert run_cli(settings, "ingest", "--source", "events", "--input", str(good)) == 0
    before = lakehouse.version(spark, settings, tables.BRONZE_EVENTS)
    capsys.readouterr()

    path = tmp_path / "bad.csv"
    args = ["ingest", "--source", "events", "--input", str(path)]
    if case == "missing":
        expected = "does not exist"
    elif case == "unknown_source":
        path.write_text(EVENTS_CSV)
        args[2] = "weblogs"
        expected = "invalid choice: 'weblogs'"
    elif case == "wrong_columns":
        path.write_text("customer,product,when\n1,2,3\n")
        expected = "lacks required column(s) user_id, item_id, event_type, ts"
    elif case == "empty":
        path.write_text("")
        expected = "is empty"
    elif case == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
        expected = "binary file"
    elif case == "header_only":
        path.write_text("user_id,item_id,event_type,ts\n")
        expected = "has no data rows"
    else:
        args = ["ingest", "--source", "movielens"]
        expected = "--input is required"
    assert run_cli(settings, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("liverec ") and "error:" in err[0] and expected in err[0], err
    assert lakehouse.version(spark, settings, tables.BRONZE_EVENTS) == before
