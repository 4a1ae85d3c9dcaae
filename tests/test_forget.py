"""`liverec forget` on a copy of the demo chain's lakehouse (every table, the online store, impressions): the
people named leave every table (read with Spark and with deltalake), the online store, the impression files and the
tables' older versions; everyone else's rows stay (counts per table, computed before the run); the audit holds
counts, not ids; the registered models are marked for retraining; a rerun deletes nothing."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import mlflow
import pytest
from deltalake import DeltaTable as DeltaLakeTable
from deltalake import QueryBuilder
from pyspark.sql import functions as F

from liverec import forget, impressions, lakehouse, schemas, tables
from liverec.cleaning import pseudonymise_value
from liverec.cli import main
from liverec.registry import RETRAIN_TAG
from tests.conftest import DEMO_DS, cli_args, settings_for

pytestmark = pytest.mark.slow


def test_every_table_with_a_user_column_is_one_forget_deletes_from():
    named = {t for t, s in schemas.SCHEMAS.items() if {"user_id", "src"} & {f.name for f in s.fields}}
    assert named == set(tables.PERSONAL)


def _rows_of(spark, settings, table, users, raw_ids):
    """Rows of ``table`` naming one of the people (pseudonyms, or raw ids in bronze), and all its rows."""
    columns, raw = tables.PERSONAL[table]
    values = raw_ids if raw else users
    df = lakehouse.read(spark, settings, table)
    cond = None
    for c in columns:
        cond = F.col(c).isin(values) if cond is None else cond | F.col(c).isin(values)
    return df.where(cond).count(), df.count()


def test_forget_removes_people_everywhere_and_keeps_everyone_else(spark, demo_pipeline, tmp_path):
    source = demo_pipeline
    root = tmp_path / "copy"
    shutil.copytree(source.lakehouse_root, root / "lakehouse")
    shutil.copy(source.mlflow.tracking_uri.removeprefix("sqlite:///"), root / "mlflow.db")
    settings = settings_for(root)
    assert settings.lakehouse_root == str(root / "lakehouse")
    key = settings.ids.demo_key.encode()

    # two people who are in the nightly table (and so in most tables); their raw ids from bronze
    recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS).select("user_id").distinct().orderBy("user_id")
    users = [r["user_id"] for r in recs.limit(2).collect()]
    raw_by_pseudo = {pseudonymise_value(r["user_id"], key): r["user_id"] for r in
                     lakehouse.read(spark, settings, tables.BRONZE_EVENTS).select("user_id").distinct().collect()
                     if r["user_id"] is not None}
    raw_ids = [raw_by_pseudo[u] for u in users]
    # an impression of theirs in the tables, and one still waiting in the landing folder
    landing = Path(tables.impressions_landing(settings))
    log = impressions.ImpressionLog(landing, flush_seconds=3600, flush_rows=10_000)
    shown_at = dt.datetime.fromisoformat(f"{DEMO_DS}T12:00:00+00:00").timestamp()
    for n, u in enumerate([*users, "someone-else"]):
        log.add(impressions.rows_of(f"R{n}", u, [{"item_id": "i1", "score": 1.0, "propensity": 1.0}], "p", "online",
                                    False, shown_at))
    log.flush()
    assert main(["run", "collect_feedback", *cli_args(settings), "--ds", DEMO_DS]) == 0
    log.add(impressions.rows_of("late", users[1], [{"item_id": "i2", "score": 1.0, "propensity": 1.0}], "p", "online",
                                False, shown_at + 100))
    log.close()

    before = {t: _rows_of(spark, settings, t, users, raw_ids) for t in tables.PERSONAL
              if lakehouse.exists(spark, settings, t)}
    versions = {t: lakehouse.version(spark, settings, t) for t in before}
    assert {t for t, (mine, _) in before.items() if mine} >= {
        tables.BRONZE_EVENTS, tables.SILVER_EVENTS, tables.USER_PROFILES, tables.USER_FACTORS, tables.RECOMMENDATIONS,
        tables.SILVER_IMPRESSIONS, tables.FEEDBACK}
    from liverec.online_store import open_store

    with open_store(tables.online_store_url(settings)) as store:
        in_store = sum(store.lookup(u)[0] is not None for u in users)
        store_count = store.count()
    assert in_store == 2

    # their events (raw ids) in the streaming landing folder, beside someone else's
    events = tmp_path / "event-landing"
    events.mkdir()
    (events / "events-1.json").write_text("".join(json.dumps({"user_id": u, "item_id": "i1", "event_type": "click",
                                                              "ts": "2026-11-02T12:00:00Z"}) + "\n"
                                                  for u in [*raw_ids, "someone-else"]))
    stream = ["--set", f"stream.landing={events}"]

    # one run by raw ids (a run of DELETE + VACUUM per table is the test's cost: the rerun below gives the same
    # people by pseudonym, and forget.pseudonyms is checked on its own in the next test)
    (tmp_path / "raw.txt").write_text(f"# a request\n{raw_ids[0]}\n\n{raw_ids[1]}\n")
    (tmp_path / "pseudo.txt").write_text(f"{users[0]}\n{users[1]}\n")
    assert main(["forget", *cli_args(settings), *stream, "--users", str(tmp_path / "raw.txt"), "--ds", DEMO_DS]) == 0

    for t, (mine, total) in before.items():
        assert _rows_of(spark, settings, t, users, raw_ids) == (0, total - mine), t  # theirs gone, the rest kept
        columns, raw = tables.PERSONAL[t]
        values = ", ".join(f"'{v}'" for v in (raw_ids if raw else users))
        sql = "select count(*) as n from t where " + " or ".join(f"{c} in ({values})" for c in columns)
        got = QueryBuilder().register("t", DeltaLakeTable(tables.table_path(settings, t))).execute(sql).read_all()
        assert got["n"].to_pylist() == [0], t
        if mine:  # the version before the delete is no longer readable: its files were vacuumed
            with pytest.raises(Exception):  # noqa: B017 (Spark's own error: the file is gone)
                # the user columns themselves (a bare count is answered from the log's statistics, not the files)
                lakehouse.read(spark, settings, t, versions[t]).select(*columns).collect()
    with open_store(tables.online_store_url(settings)) as store:
        assert [store.lookup(u)[0] for u in users] == [None, None] and store.count() == store_count - 2
    waiting = [json.loads(x) for f in landing.glob("*.jsonl") for x in f.read_text().splitlines()]
    assert not [r for r in waiting if r["user_id"] in users] and waiting  # the others' impressions stay

    audit = lakehouse.read(spark, settings, tables.FORGET_AUDIT)
    rows = audit.collect()
    deleted = {}
    for r in rows:
        deleted[r["target"]] = deleted.get(r["target"], 0) + r["rows_deleted"]
    assert {t: deleted[t] for t in before} == {t: mine for t, (mine, _) in before.items()}
    # the landing folder still holds the collected file (their two impressions) beside the late one
    assert deleted["store:online"] == 2 and deleted["files:impressions"] == 3 and deleted["files:landing"] == 2
    assert [json.loads(x)["user_id"] for x in (events / "events-1.json").read_text().splitlines()] == ["someone-else"]
    text = json.dumps([r.asDict() for r in rows], default=str)
    assert not any(x in text for x in (*users, *raw_ids))  # counts, never ids

    client = mlflow.MlflowClient(settings.tracking_uri())
    marked = [v for name in (settings.ranker.registered_model, settings.online.registered_model)
              for v in client.search_model_versions(f"name='{name}'")]
    assert marked and all(RETRAIN_TAG in v.tags for v in marked)

    # a rerun, the same people by pseudonym: nothing left to delete
    assert main(["forget", *cli_args(settings), *stream, "--users", str(tmp_path / "pseudo.txt"), "--pseudonymised",
                 "--ds", DEMO_DS]) == 0
    again = lakehouse.read(spark, settings, tables.FORGET_AUDIT).where(~F.col("run_id").isin(
        [r["run_id"] for r in rows]))
    assert again.count() > 0 and again.agg(F.sum("rows_deleted")).collect()[0][0] == 0


def test_forget_refuses_an_empty_list_and_a_malformed_pseudonym(tmp_path, capsys):
    settings = settings_for(tmp_path)
    (tmp_path / "none.txt").write_text("# nobody\n\n")
    assert main(["forget", *cli_args(settings), "--users", str(tmp_path / "none.txt")]) == 2
    assert "names nobody" in capsys.readouterr().err
    (tmp_path / "bad.txt").write_text("not-a-pseudonym\n")
    assert main(["forget", *cli_args(settings), "--users", str(tmp_path / "bad.txt"), "--pseudonymised"]) == 2
    assert "is not a pseudonym" in capsys.readouterr().err
    # raw ids become their HMAC-SHA256 (by hand with hmac), pseudonyms pass through
    import hashlib
    import hmac

    key = b"k"
    alice = hmac.new(key, b"alice", hashlib.sha256).hexdigest()
    assert forget.pseudonyms(["alice"], key, False) == [alice] and forget.pseudonyms([alice], key, True) == [alice]


def test_the_streaming_landing_files_lose_the_peoples_lines_whatever_their_format(tmp_path):
    from liverec.cleaning import pseudonymise_value

    key = b"k"
    gone = [pseudonymise_value("alice", key)]
    (tmp_path / "a.json").write_text('{"user_id": "alice", "item_id": "1"}\nnot json\n{"user_id": "bob"}\n')
    (tmp_path / "b.csv").write_text("item_id,user_id,ts\n1,alice,2\n2,bob,3\n3,alice,4\n")
    (tmp_path / ".hidden.json").write_text('{"user_id": "alice"}\n')  # not the stream's: left alone
    assert forget.scrub_event_files(str(tmp_path), gone, key, "json") == 1
    assert (tmp_path / "a.json").read_text() == 'not json\n{"user_id": "bob"}\n'
    assert forget.scrub_event_files(str(tmp_path), gone, key, "csv") == 2
    assert (tmp_path / "b.csv").read_text() == "item_id,user_id,ts\n2,bob,3\n"
    assert (tmp_path / ".hidden.json").read_text() == '{"user_id": "alice"}\n'
    assert forget.scrub_event_files(str(tmp_path), gone, key, "csv") == 0  # a rerun removes nothing
    assert forget.scrub_event_files(str(tmp_path / "absent"), gone, key, "json") == 0
