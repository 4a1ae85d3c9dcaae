"""stream_events: landing files -> silver.events / silver.quarantine / gold.user_recent, on real Spark and Delta.

- an in-process ``--once`` run: the batch job's cleaning (quarantine reasons, duplicates, pseudonyms, source
  'stream'), the newest-first distinct top-N lists, an item moving to the front on a later file;
- a micro-batch that dies between its writes and is replayed is written once: not appended twice, and still
  merged into gold.user_recent (whose MERGE comes first and takes the rows silver already holds);
- the batch ``clean`` of the same ds keeps the streamed rows, and an event both paths delivered is kept once;
- the job as a real process with a 1-second trigger, SIGKILLed after its first batch, files landing while it
  is down, restarted: every event in silver exactly once, the quarantine rows exactly once (slow).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from deltalake import DeltaTable as DeltaLakeTable
from deltalake import QueryBuilder
from pyspark.sql import functions as F

from liverec import cleaning, lakehouse, streaming, tables
from liverec.cli import main
from liverec.config import load_settings
from liverec.progress import Progress
from tests.conftest import FAST_JVM, REPO, cli_args, job_env, settings_for

T0 = dt.datetime(2024, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
N = 3  # stream.recent_items in these tests


def event(eid: str | None, user: str, item: str, minute: int, etype: str = "view", **extra) -> dict:
    row = {"user_id": user, "item_id": item, "event_type": etype, "value": 1,
           "ts": (T0 + dt.timedelta(minutes=minute)).isoformat(), **extra}
    if eid is not None:
        row["event_id"] = eid
    return row


def land(landing: Path, name: str, rows: list[dict | str]) -> None:
    """Write a JSON-lines file next to the landing folder, then rename it in (what a producer should do)."""
    landing.mkdir(parents=True, exist_ok=True)
    tmp = landing.parent / f".{name}.tmp"
    tmp.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    os.replace(tmp, landing / name)


def pseudonym(settings, user: str) -> str:
    return cleaning.pseudonymise_value(user, cleaning.id_key(settings))


def recent_lists(spark, settings) -> dict[str, list[tuple[str, str]]]:
    """user pseudonym -> [(item_id, event_id), ...] as gold.user_recent holds them."""
    rows = lakehouse.read(spark, settings, tables.USER_RECENT).collect()
    return {r["user_id"]: [(e["item_id"], e["event_id"]) for e in r["recent"]] for r in rows}


def store_lists(settings) -> dict[str, list[tuple[str, str]]]:
    """user pseudonym -> [(item_id, event_id), ...] as the online store's recent lists hold them."""
    import orjson

    from liverec.online_store import open_store

    store = open_store(tables.online_store_url(settings))
    try:
        users = [pseudonym(settings, u) for u in ("ua", "ub", "uc")]
        return {u: [(e[0], e[3]) for e in orjson.loads(v)] for u, v in store.get_recent(users).items()}
    finally:
        store.close()


def quarantine_reasons(spark, settings) -> dict[str, int]:
    q = lakehouse.read(spark, settings, tables.SILVER_QUARANTINE)
    return {r["reason"]: r["count"] for r in q.groupBy("reason").count().collect()}


# user a: 5 distinct items (i2 twice, the second time newest of all); user b: 2 items
FILE_1 = [
    event("a1", "ua", "i1", 1), event("a2", "ua", "i2", 2), event("a3", "ua", "i3", 3), event("a4", "ua", "i4", 4),
    event("a5", "ua", "i5", 5), event("a6", "ua", "i2", 9, "click"),
    event("b1", "ub", "j1", 1), event("b2", "ub", "j2", 2, "purchase", price="9.5"),
    "{this is not json",
    event("x1", "ub", "j3", 3, "teleport"),  # unknown event type
    event("a3", "ua", "other", 7),  # the same event id again: a duplicate
]
FILE_1_KEPT = {"a1", "a2", "a3", "a4", "a5", "a6", "b1", "b2"}


@pytest.fixture
def stream_settings(tmp_path):
    return settings_for(tmp_path, f"stream.landing={tmp_path / 'landing'}", f"stream.recent_items={N}")


def run_once(settings, *extra: str) -> int:
    return main(["run", "stream_events", *cli_args(settings), "--set", f"stream.landing={settings.stream.landing}",
                 "--set", f"stream.recent_items={N}", "--once", *extra])


def test_stream_settings_and_checkpoint_default(tmp_path):
    s = load_settings(overrides=[f"lakehouse_root={tmp_path / 'lake'}"])
    assert Path(s.stream.landing).is_absolute() and s.stream.format == "json"
    assert tables.stream_checkpoint(s) == f"{tmp_path / 'lake'}/_checkpoints/stream_events"
    s = load_settings(overrides=["stream.checkpoint=ck", "stream.trigger_seconds=0.5"])
    assert Path(tables.stream_checkpoint(s)).is_absolute() and s.stream.trigger_seconds == 0.5
    assert (s.stream.shuffle_partitions, s.stream.snapshot_partitions) == (2, 2)
    assert tables.PARTITIONS[tables.USER_RECENT] == () and tables.USER_RECENT in tables.ALL_TABLES


def test_top_items_keep_each_item_once_newest_first(spark):
    ts = [dt.datetime(2024, 1, 1, 0, m) for m in range(6)]
    rows = [("u", "i1", "view", ts[0], "e0"), ("u", "i2", "view", ts[1], "e1"), ("u", "i1", "click", ts[4], "e4"),
            ("u", "i3", "view", ts[2], "e2"), ("u", "i4", "view", ts[3], "e3"), ("v", "k", "view", ts[5], "e5")]
    df = spark.createDataFrame(rows, "user_id string, item_id string, event_type string, ts timestamp, event_id string")
    got = {r["user_id"]: [(e["item_id"], e["event_id"]) for e in r["recent"]]
           for r in streaming.recent_source(df, 3).collect()}
    assert got == {"u": [("i1", "e4"), ("i4", "e3"), ("i3", "e2")], "v": [("k", "e5")]}


@pytest.mark.slow
def test_once_cleans_quarantines_and_keeps_recent_items(spark, stream_settings, capsys):
    settings = stream_settings
    landing = Path(settings.stream.landing)
    land(landing, "f1.json", FILE_1)
    assert run_once(settings) == 0
    out = capsys.readouterr().out
    assert "[stream_events] batch: 11 rows" in out and "kept=8 quarantined=2 duplicates=1 users_merged=2" in out

    silver = lakehouse.read(spark, settings, tables.SILVER_EVENTS)
    rows = silver.collect()
    assert sorted(r["event_id"] for r in rows) == sorted(FILE_1_KEPT)  # each once
    assert {r["source"] for r in rows} == {streaming.STREAM_SOURCE}
    assert {r["user_id"] for r in rows} == {pseudonym(settings, "ua"), pseudonym(settings, "ub")}
    assert next(r for r in rows if r["event_id"] == "a3")["item_id"] == "i3"  # the first of the duplicates
    assert quarantine_reasons(spark, settings) == {"malformed": 1, "unknown_event_type": 1}
    q = lakehouse.read(spark, settings, tables.SILVER_QUARANTINE).collect()
    assert all(r["detail"].endswith("f1.json") and r["source"] == "stream" for r in q)  # where the raw line is

    ua, ub = pseudonym(settings, "ua"), pseudonym(settings, "ub")
    assert recent_lists(spark, settings) == {
        ua: [("i2", "a6"), ("i5", "a5"), ("i4", "a4")],  # N = 3, i2 once (its newest event)
        ub: [("j2", "b2"), ("j1", "b1")],
    }

    # a later file: user b's j1 again, newest now -> first, not twice; nothing of f1 is read again
    land(landing, "f2.json", [event("b3", "ub", "j1", 20, "click")])
    assert run_once(settings) == 0
    assert "[stream_events] batch: 1 rows" in capsys.readouterr().out
    lists = recent_lists(spark, settings)
    assert lists[ub] == [("j1", "b3"), ("j2", "b2")]
    assert lists[ua] == [("i2", "a6"), ("i5", "a5"), ("i4", "a4")]
    assert store_lists(settings) == lists  # the online store got the same lists, batch by batch
    assert lakehouse.read(spark, settings, tables.SILVER_EVENTS).count() == len(FILE_1_KEPT) + 1
    assert quarantine_reasons(spark, settings) == {"malformed": 1, "unknown_event_type": 1}

    # the nightly batch of the same ds: its clean keeps the streamed rows; an event both delivered is kept
    # once (the stream's row), the batch's own rows are added
    ds = rows[0]["ds"]
    dump = Path(settings.scratch_dir) / "dump.csv"
    dump.parent.mkdir(parents=True, exist_ok=True)
    dump.write_text("event_id,user_id,item_id,event_type,value,ts\n"
                    f"a1,ua,i1,view,1,{T0.isoformat()}\nn1,uc,k1,view,1,{T0.isoformat()}\n"
                    f"n2,uc,k2,hover,1,{T0.isoformat()}\n")
    common = [*cli_args(settings), "--ds", ds]
    assert main(["run", "ingest", *common, "--source", "events", "--input", str(dump)]) == 0
    for _ in range(2):  # a rerun of the date leaves the same tables
        assert main(["run", "clean", *common]) == 0
        assert "kept=1 quarantined=1 duplicates=1" in capsys.readouterr().out
        silver = lakehouse.read(spark, settings, tables.SILVER_EVENTS).where(F.col("ds") == ds)
        by_source = {r["source"]: r["n"] for r in silver.groupBy("source").agg(F.count("*").alias("n")).collect()}
        assert by_source == {"stream": len(FILE_1_KEPT) + 1, "events": 1}
        assert silver.select("event_id").distinct().count() == silver.count()
        assert quarantine_reasons(spark, settings) == {"malformed": 1, "unknown_event_type": 2}


@pytest.mark.slow
def test_a_batch_replayed_after_a_crash_is_written_once(spark, stream_settings, monkeypatch):
    """process_batch dies at each point between its writes (an append raising stands for the crash), and is
    re-executed with the same batch id, as Spark does after a restart."""
    settings, app, ds = stream_settings, "test-app", "2024-03-02"
    landing = Path(settings.stream.landing)
    real_append = lakehouse.append

    def crash_before(table: str | None) -> None:
        def append(spark_, settings_, t, df, txn=None):
            if t == table:
                raise RuntimeError(f"crash before the {t} append")
            real_append(spark_, settings_, t, df, txn)

        monkeypatch.setattr(lakehouse, "append", append)

    def counts() -> tuple[int, int]:
        return tuple(lakehouse.read(spark, settings, t).count() for t in (tables.SILVER_EVENTS,
                                                                          tables.SILVER_QUARANTINE))

    ua, ub = pseudonym(settings, "ua"), pseudonym(settings, "ub")
    land(landing, "f1.json", FILE_1)
    batch0 = streaming.read_landing(spark, str(landing / "f1.json"), "json", streaming=False)
    land(landing, "f2.json", [event("b3", "ub", "j1", 20, "click"), "{broken"])
    batch1 = streaming.read_landing(spark, str(landing / "f2.json"), "json", streaming=False)

    # batch 0 dies after its MERGE, before any append; the replay merges again (no change) and appends
    crash_before(tables.SILVER_EVENTS)
    with pytest.raises(RuntimeError, match="crash"):
        streaming.process_batch(spark, settings, batch0, 0, app, ds)
    lists0 = {ua: [("i2", "a6"), ("i5", "a5"), ("i4", "a4")], ub: [("j2", "b2"), ("j1", "b1")]}
    assert recent_lists(spark, settings) == lists0
    crash_before(None)
    r = streaming.process_batch(spark, settings, batch0, 0, app, ds)
    assert (r.kept, r.quarantined, r.duplicates, r.users_merged) == (8, 2, 1, 2)
    assert counts() == (8, 2) and recent_lists(spark, settings) == lists0

    # batch 1 dies between its two appends: on replay its event is a duplicate; Delta skips the done append
    before_batch1 = lakehouse.version(spark, settings, tables.USER_RECENT)
    crash_before(tables.SILVER_QUARANTINE)
    with pytest.raises(RuntimeError, match="crash"):
        streaming.process_batch(spark, settings, batch1, 1, app, ds)
    assert counts() == (9, 2)
    crash_before(None)
    r = streaming.process_batch(spark, settings, batch1, 1, app, ds)
    assert (r.kept, r.quarantined, r.duplicates) == (0, 1, 1)
    lists1 = {ua: lists0[ua], ub: [("j1", "b3"), ("j2", "b2")]}
    assert counts() == (9, 3) and recent_lists(spark, settings) == lists1

    # batch 1 re-executed once more, all of it done already: nothing changes ...
    streaming.process_batch(spark, settings, batch1, 1, app, ds)
    assert counts() == (9, 3) and recent_lists(spark, settings) == lists1
    # ... and with gold.user_recent as it was before batch 1, the replay (every row a duplicate) merges it
    DeltaTable.forPath(spark, tables.table_path(settings, tables.USER_RECENT)).restoreToVersion(before_batch1)
    assert recent_lists(spark, settings) == lists0
    streaming.process_batch(spark, settings, batch1, 1, app, ds)
    assert counts() == (9, 3) and recent_lists(spark, settings) == lists1


def test_timeout_stops_a_running_stream(stream_settings, capsys):
    """Without --once the query runs until --timeout (here on an empty landing folder it creates)."""
    assert main(["run", "stream_events", *cli_args(stream_settings), "--landing", stream_settings.stream.landing,
                 "--timeout", "2"]) == 0
    out = capsys.readouterr().out
    assert "[stream_events] watching" in out and "[stream_events] batch" not in out
    assert Path(stream_settings.stream.landing).is_dir()


def test_bad_stream_options_are_clear_errors(stream_settings, capsys):
    assert run_once(stream_settings, "--set", "stream.format=parquet") == 2
    assert "stream.format must be one of json, csv" in capsys.readouterr().err
    assert run_once(stream_settings, "--timeout", "0") == 2
    assert "--timeout must be positive" in capsys.readouterr().err


def test_csv_landing_files(spark, stream_settings):
    landing = Path(stream_settings.stream.landing)
    landing.mkdir(parents=True)
    assert streaming.CSV_HEADER == "user_id,item_id,event_type,ts,event_id,value,session_id,price"
    (landing / "f.csv").write_text(f"{streaming.CSV_HEADER}\nu1,i1,view,{T0.isoformat()},c1,,,\n"
                                   f"u1,i2,view,{T0.isoformat()},c2,,,,extra\n")
    rows = streaming.read_landing(spark, str(landing), "csv", streaming=False)
    result = streaming.process_batch(spark, stream_settings, rows, 0, "csv-app", ds="2024-03-02")
    assert (result.kept, result.quarantined) == (1, 1)
    assert quarantine_reasons(spark, stream_settings) == {"malformed": 1}
    assert lakehouse.read(spark, stream_settings, tables.SILVER_EVENTS).first()["item_id"] == "i1"


# --------------------------------------------------------------------------- a real process, killed and restarted

def _read_delta(path: str, sql: str, column: str) -> list:
    """One column of a query over a Delta table, without Spark (the job's JVM needs the cores); [] while the
    table does not exist yet."""
    try:
        return QueryBuilder().register("t", DeltaLakeTable(path)).execute(sql).read_all()[column].to_pylist()
    except Exception:  # not created yet, or caught between a file listing and a commit
        return []


def _wait_for(what: str, check, proc: subprocess.Popen, log: Path, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if proc.poll() is not None:
            pytest.fail(f"stream_events exited with {proc.returncode} while waiting for {what}:\n"
                        f"{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not visible after {deadline_s:.0f}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)  # polling interval, not a timing assumption


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the job's process group (the Python driver and its Spark JVM), as a crash would."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.mark.slow
def test_killed_and_restarted_stream_loses_and_duplicates_nothing(spark, tmp_path):
    settings = settings_for(tmp_path, f"stream.landing={tmp_path / 'landing'}", f"stream.recent_items={N}")
    landing = Path(settings.stream.landing)
    env = job_env(**FAST_JVM)
    cmd = [sys.executable, str(REPO / "jobs" / "stream_events.py"), *cli_args(settings),
           "--set", "spark.master=local[2]", "--set", f"stream.landing={landing}", "--set", f"stream.recent_items={N}",
           "--set", "stream.trigger_seconds=1", "--timeout", "600"]
    recent_path = tables.table_path(settings, tables.USER_RECENT)
    ua, ub, uc = (pseudonym(settings, u) for u in ("ua", "ub", "uc"))

    def visible(user: str, event_id: str) -> bool:
        lists = _read_delta(recent_path, f"select recent from t where user_id = '{user}'", "recent")
        return any(e["event_id"] == event_id for recent in lists for e in recent)

    def at_least(table: str, sql: str, n: int) -> bool:
        return (_read_delta(tables.table_path(settings, table), sql, "n") or [0])[0] >= n

    def start(log: Path) -> subprocess.Popen:
        return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)

    land(landing, "f1.json", FILE_1)
    log1 = tmp_path / "run1.log"
    proc = start(log1)
    try:  # killed as soon as the MERGE shows file 1: most likely before its appends
        _wait_for("file 1's newest event", lambda: visible(ua, "a6"), proc, log1, 240)
    finally:
        _kill(proc)

    # files landing while the job is down
    land(landing, "f2.json", [event("b3", "ub", "j1", 20, "click"), event("c1", "uc", "k1", 21),
                              "[1, 2", event("a6", "ua", "i2", 9, "click")])  # malformed; a6 again: duplicate
    land(landing, "f3.json", [event("c2", "uc", "k2", 22), event("c3", "uc", "k3", 23, "hover"),
                              event(None, "uc", "k4", 24)])  # an unknown type; an event without id
    log2 = tmp_path / "run2.log"
    proc = start(log2)
    kept, rejected = len(FILE_1_KEPT) + 4, 4  # files 2 and 3: b3, c1, c2 and k4 kept; 2 malformed, 2 unknown type

    def all_written() -> bool:
        return (visible(ub, "b3") and visible(uc, "c2")
                and at_least(tables.SILVER_EVENTS, "select count(distinct event_id) as n from t", kept)
                and at_least(tables.SILVER_QUARANTINE, "select count(*) as n from t", rejected))

    try:
        _wait_for("files 1 to 3 in every table", all_written, proc, log2, 240)
    finally:
        _kill(proc)

    silver = lakehouse.read(spark, settings, tables.SILVER_EVENTS)
    per_id = {r["event_id"]: r["n"] for r in silver.groupBy("event_id").agg(F.count("*").alias("n")).collect()}
    named = {i: n for i, n in per_id.items() if len(i) < 64}
    assert named == {i: 1 for i in FILE_1_KEPT | {"b3", "c1", "c2"}}
    assert sorted(per_id.values()) == [1] * len(per_id) and len(per_id) == len(named) + 1  # + the content-hash id
    assert {r["source"] for r in silver.select("source").distinct().collect()} == {"stream"}
    assert quarantine_reasons(spark, settings) == {"malformed": 2, "unknown_event_type": 2}
    lists = recent_lists(spark, settings)
    assert lists[ua] == [("i2", "a6"), ("i5", "a5"), ("i4", "a4")]
    assert lists[ub] == [("j1", "b3"), ("j2", "b2")]
    assert [i for i, _ in lists[uc]] == ["k4", "k2", "k1"]
    # the second run either replays the first's last batch (killed before Spark recorded it as committed: the
    # appends are skipped by their transaction ids, the MERGE changes nothing) or goes on with the next
    assert "[stream_events] batch:" in log2.read_text()


def test_progress_clock_restarts(monkeypatch):
    """The idle wait before a micro-batch is not the batch's time; the stage total still counts it."""
    import io
    import types

    from liverec import progress

    clock = iter([100.0, 160.0, 161.5, 170.0])  # start, restart (a minute idle), step, done
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    out = io.StringIO()
    p = Progress("s", out)
    p.restart_clock()
    p.step("batch", 3, id=0)
    assert p.done() == 70.0
    assert out.getvalue().splitlines() == ["[s] batch: 3 rows, 1.5s id=0", "[s] done in 70.0s"]
    assert p.metrics["batch_seconds"] == 1.5
