"""The real-time scorer on MovieLens 100K: the whole batch chain (ALS, embeddings, the ranker, the nightly
rows) runs once on the real data, ``publish_online`` registers ``liverec-online@champion``, and the
tests ask it, in process and through ``mlflow models serve``, what a visitor or a known user should see
next."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from liverec import lakehouse, online, tables, tracking
from liverec.cleaning import pseudonymise_value
from tests.conftest import REPO, assert_online_features_equal_the_batch, cli_args, job_env

pytestmark = pytest.mark.slow

STAR_WARS, EMPIRE, JEDI = "50", "172", "181"
TOY_STORY, LION_KING, ALADDIN = "1", "71", "95"


def _clicks(*items: str) -> list[dict]:
    return [{"item_id": i, "event_type": "click", "ts": 1_700_000_000 + n} for n, i in enumerate(items)]


@pytest.fixture(scope="module")
def online_model(ml100k_pipeline):
    settings = ml100k_pipeline
    with tracking.caller_environment_kept():
        mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
        return mlflow.pyfunc.load_model(f"models:/{settings.online.registered_model}@{settings.online.alias}")


@pytest.fixture(scope="module")
def genres(spark, ml100k_pipeline):
    items = lakehouse.read(spark, ml100k_pipeline, tables.BRONZE_ITEMS).select("item_id", "category").collect()
    return {r["item_id"]: set((r["category"] or "").split("|")) for r in items}


def _share(items: list[str], genres: dict[str, set[str]], wanted: set[str]) -> float:
    return sum(1 for i in items if genres[i] & wanted) / len(items)


def test_fold_in_without_a_session_gives_back_the_nightly_factor(spark, ml100k_pipeline, online_model):
    """The fold-in is Spark's own implicit-ALS user update: with no session it reproduces gold.user_factors."""
    scorer = online_model.unwrap_python_model().scorer
    factors = {r["user_id"]: np.asarray(r["features"]) for r in
               lakehouse.read(spark, ml100k_pipeline, tables.USER_FACTORS).limit(50).collect()}
    cosines = []
    for user, expected in factors.items():
        x = scorer.fold_in(online.Request(scorer.lookup_user(user)[0], [], None, 10))
        cosines.append(float(x @ expected / np.linalg.norm(x) / np.linalg.norm(expected)))
        assert np.linalg.norm(x) == pytest.approx(np.linalg.norm(expected), rel=0.05)
    assert min(cosines) > 0.99, cosines


def test_a_new_user_with_three_clicks_gets_items_related_to_them(online_model, genres):
    sci_fi = online_model.predict(pd.DataFrame(
        [{"user_id": None, "session": _clicks(STAR_WARS, EMPIRE, JEDI), "k": 10}]))
    kids = online_model.predict(pd.DataFrame(
        [{"user_id": None, "session": _clicks(TOY_STORY, LION_KING, ALADDIN), "k": 10}]))
    a, b = list(sci_fi["item_id"]), list(kids["item_id"])
    assert len(a) == len(b) == 10
    assert not {STAR_WARS, EMPIRE, JEDI} & set(a) and not {TOY_STORY, LION_KING, ALADDIN} & set(b)
    space = {"Sci-Fi", "Action", "Adventure"}
    children = {"Children's", "Animation"}
    assert _share(a, genres, space) >= 0.6 and _share(a, genres, space) > _share(b, genres, space), (a, b)
    assert _share(b, genres, children) >= 0.5 and _share(b, genres, children) > _share(a, genres, children), (a, b)
    assert len(set(a) & set(b)) <= 2
    # the reasons name the clicks
    assert sci_fi["reason"].str.contains("Star Wars|Empire Strikes|Return of the Jedi").mean() >= 0.5, \
        list(sci_fi["reason"])
    assert (sci_fi["rank"] == range(1, 11)).all() and sci_fi["score"].notna().all()


def test_a_known_users_list_changes_with_the_session(spark, ml100k_pipeline, online_model, genres):


    settings = ml100k_pipeline
    recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS)
    ranked = {r["user_id"] for r in recs.where(F.col("model_version").startswith("ranker:"))
              .select("user_id").distinct().collect()}
    key = settings.ids.demo_key.encode()
    raw = next(str(u) for u in range(1, 944) if pseudonymise_value(str(u), key) in ranked)
    user = pseudonymise_value(raw, key)
    seen = {r["item_id"] for r in lakehouse.read(spark, settings, tables.SILVER_EVENTS)
            .where(F.col("user_id") == user).select("item_id").collect()}
    kids = [i for i in (TOY_STORY, LION_KING, ALADDIN, "94", "99", "588", "432", "422") if i not in seen][:3]
    assert len(kids) == 3
    out = online_model.predict(pd.DataFrame([{"user_id": raw, "k": 10},
                                             {"user_id": int(raw), "session": _clicks(*kids), "k": 10}]))
    before, after = (list(out[out["request"] == n]["item_id"]) for n in (0, 1))
    assert len(before) == len(after) == 10
    assert not (set(before) | set(after)) & seen, "a seen item came back"
    assert not set(after) & set(kids)
    assert before != after and len(set(before) & set(after)) <= 7, (before, after)
    children = {"Children's", "Animation"}
    assert _share(after, genres, children) > _share(before, genres, children), (before, after)
    # without a session the nightly row leads the candidates, so its items are there
    nightly = {r["item_id"] for r in recs.where(F.col("user_id") == user).collect()}
    assert len(set(before) & nightly) >= 3, (before, nightly)
    # each answer is logged as impressions (liverec.impressions): its request id, the pseudonym, the items in order
    scorer = online_model.unwrap_python_model().scorer
    scorer.impressions.flush()
    logged = [json.loads(x) for f in Path(tables.impressions_landing(settings)).glob("*.jsonl")
              for x in f.read_text().splitlines()]
    for n in (0, 1):
        answer = out[out["request"] == n]
        rows = sorted((r for r in logged if r["request_id"] == answer["request_id"].iloc[0]),
                      key=lambda r: r["position"])
        assert [(r["item_id"], r["position"], r["user_id"], r["propensity"]) for r in rows] == [
            (i, p, user, 1.0) for p, i in enumerate(answer["item_id"], start=1)]
        assert {r["policy"] for r in rows} == {scorer.meta["ranker_version"]} and answer["request_id"].nunique() == 1


def test_online_features_equal_the_batch_features(spark, ml100k_pipeline, online_model):
    """One definition of the features (conftest's assert_online_features_equal_the_batch), on 4 users' nightly
    candidates; the friends' feature on FilmTrust (tests/test_real_data.py)."""
    ds = "2024-01-15"
    users = (lakehouse.read(spark, ml100k_pipeline, tables.USER_PROFILES).where(F.col("ds") == ds)
             .select("user_id").orderBy("user_id").limit(4))
    rows = assert_online_features_equal_the_batch(spark, ml100k_pipeline, ds, online_model.unwrap_python_model().scorer,
                                                  users)
    assert len(rows) > 400 and rows["user_id"].nunique() == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: bytes | str, path: str = "/invocations", timeout: float = 30.0
          ) -> tuple[int, dict | str]:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        text = err.read().decode()
        try:
            return err.code, json.loads(text)
        except json.JSONDecodeError:
            return err.code, text


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@contextlib.contextmanager
def _serving(settings, tmp_path, *extra: str, probe: str = "/ping"):
    """``liverec serve <extra>`` on a free loopback port until ``probe`` answers 200 (bounded); yields the port,
    stops the server after."""
    port = _free_port()
    log_path = tmp_path / "serve.log"
    log = open(log_path, "w")  # noqa: SIM115 (the server outlives this statement)
    proc = subprocess.Popen([sys.executable, "-m", "liverec.cli", "serve", *extra, *cli_args(settings),
                             "--port", str(port)], cwd=REPO, env=job_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if _get(port, probe)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_mlflow_models_serve_answers_and_rejects_bad_requests(ml100k_pipeline, tmp_path):
    """``liverec serve --mlflow`` = ``mlflow models serve --env-manager local`` on models:/liverec-online@champion
    (the pyfunc reads the online store publish_online materialised)."""
    with _serving(ml100k_pipeline, tmp_path, "--mlflow") as port:
        ok = {"dataframe_records": [{"user_id": None, "session": _clicks(STAR_WARS, EMPIRE), "viewing": JEDI,
                                     "k": 5, "exclude": ["174"]}]}
        status, body = _post(port, json.dumps(ok))
        assert status == 200, body
        rows = body["predictions"]
        assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
        assert {"item_id", "title", "score", "source", "reason"} <= set(rows[0])
        assert not {r["item_id"] for r in rows} & {STAR_WARS, EMPIRE, JEDI, "174"}

        bad = {
            "malformed JSON": ('{"dataframe_records": [{"user_id": ', 400, ""),
            "unknown user": (json.dumps({"dataframe_records": [{"user_id": "no-such-user", "k": 5}]}), 404,
                             "unknown user_id"),
            "item id neither a string nor an integer": (json.dumps({"dataframe_records": [
                {"session": [{"item_id": True, "event_type": "click"}], "k": 5}]}), 400, "an item id is a string"),
            "k too small": (json.dumps({"dataframe_records": [{"session": _clicks(STAR_WARS), "k": 0}]}), 400,
                            "k must be an integer from 1 to"),
            "k too large": (json.dumps({"dataframe_records": [{"session": _clicks(STAR_WARS), "k": 10_000}]}), 400,
                            "k must be an integer from 1 to"),
            "oversized session": (json.dumps({"dataframe_records": [
                {"session": _clicks(*[STAR_WARS] * (ml100k_pipeline.online.max_session + 1)), "k": 5}]}), 400,
                "at most"),
            "bad event type": (json.dumps({"dataframe_records": [
                {"session": [{"item_id": STAR_WARS, "event_type": "teleport"}], "k": 5}]}), 400, "event_type"),
            "unknown field": (json.dumps({"dataframe_records": [{"session": _clicks(STAR_WARS), "kk": 5}]}), 400,
                              "unknown request field"),
        }
        for what, (payload, code, text) in bad.items():
            status, body = _post(port, payload)
            assert status == code, (what, status, body)
            assert text in json.dumps(body), (what, body)
        # still serving after all of that
        status, body = _post(port, json.dumps(ok))
        assert status == 200 and len(body["predictions"]) == 5
        # an item new since the nightly run is left out and named, not refused
        status, body = _post(port, json.dumps({"dataframe_records": [
            {"user_id": None, "session": _clicks("999999", STAR_WARS), "k": 5}]}))
        assert status == 200 and len(body["predictions"]) == 5, body
        assert all(r["ignored_items"] == ["999999"] for r in body["predictions"]), body


def test_items_the_catalogue_lacks_are_left_out_and_named_not_refused(online_model):
    """A session event, viewed item or exclusion of an item new since the nightly run: the answer is the one
    to the same request without it, and names it; a visitor whose every item is new gets the popular items."""
    scorer = online_model.unwrap_python_model().scorer
    new_items = ["999999", "888888", "777777"]
    assert not set(new_items) & set(scorer.item_ids)
    known = {"user_id": None, "session": _clicks(STAR_WARS, EMPIRE), "k": 5, "exclude": [JEDI]}
    first = {"item_id": "999999", "event_type": "click", "ts": 1_600_000_000}  # older than the known clicks
    with_new = {**known, "session": [first, *known["session"]], "viewing": 888888, "exclude": [JEDI, "777777"]}
    before = scorer.ignored_items
    want = online_model.predict(pd.DataFrame([known]))
    got = online_model.predict(pd.DataFrame([with_new]))
    cols = ["rank", "item_id", "score", "source", "reason"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    assert all(x == [] for x in want["ignored_items"]) and all(x == new_items for x in got["ignored_items"])
    visitor = online_model.predict(pd.DataFrame([{"user_id": None, "session": _clicks("999999"), "k": 5}]))
    assert len(visitor) == 5 and set(visitor["source"]) == {"popular"}
    assert set(visitor["item_id"]) <= {scorer.item_ids[i] for i in scorer.popular if i >= 0}
    assert all(x == ["999999"] for x in visitor["ignored_items"])
    assert scorer.ignored_items - before == len(new_items) + 1


def _metric(text: str, name: str, **labels: str) -> float:
    """A sample's value from Prometheus text (labels matched as given, the worker label ignored)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in\n{text}")


def test_liverec_serve_answers_user_ids_refuses_bad_input_counts_and_follows_the_alias(spark, ml100k_pipeline,
                                                                                      tmp_path):
    """``liverec serve`` (Starlette + uvicorn): a known user's id alone is answered from the online store; every
    class of malformed request gets its 4xx and is counted by kind; a moved alias is loaded while requests keep
    being answered (none fails)."""
    import threading

    from liverec import registry

    settings = ml100k_pipeline
    ranked = _a_ranked_user(spark, settings)
    with _serving(settings, tmp_path, "--set", "online.reload_seconds=1", probe="/ready") as port:
        assert _get(port, "/health")[0] == 200
        ready = json.loads(_get(port, "/ready")[1])
        client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri())
        first = client.get_model_version_by_alias(settings.online.registered_model, settings.online.alias).version
        assert ready["version"] == str(first) and ready["store"] == "ok" and ready["ds"] == "2024-01-15", ready
        assert ready["store_url"] == _store_url(settings), ready

        status, body = _post(port, path="/recommend", body=json.dumps({"user_id": ranked, "k": 10}))
        assert status == 200, body
        assert [r["rank"] for r in body["items"]] == list(range(1, 11)) and body["warnings"] == []
        assert "nightly" in {r["source"] for r in body["items"]}, body  # the store's nightly rows lead
        status, body = _post(port, path="/invocations", body=json.dumps({"dataframe_records": [
            {"user_id": None, "session": _clicks(STAR_WARS), "k": 3}, {"user_id": ranked, "k": 2}]}))
        assert status == 200 and [r["request"] for r in body["predictions"]] == [0, 0, 0, 1, 1], body

        bad = {
            "malformed JSON": ("/invocations", '{"dataframe_records": [', 400, "bad_json"),
            "not dataframe_records": ("/invocations", json.dumps({"records": []}), 400, "bad_request"),
            "records not objects": ("/invocations", json.dumps({"dataframe_records": [1, 2]}), 400, "bad_request"),
            "unknown user": ("/recommend", json.dumps({"user_id": "no-such-user"}), 404, "unknown_user"),
            "k too large": ("/recommend", json.dumps({"session": _clicks(STAR_WARS), "k": 10_000}), 400,
                            "bad_request"),
            "bad event type": ("/recommend", json.dumps({"session": [{"item_id": STAR_WARS, "event_type": "x"}]}),
                               400, "bad_request"),
            "user id an object": ("/recommend", json.dumps({"user_id": {"a": 1}}), 400, "bad_request"),
            "too large": ("/recommend", b'{"user_id": "' + b"x" * (1 << 21) + b'"}', 413, "too_large"),
        }
        kinds: dict[str, int] = {}
        for what, (path, payload, code, kind) in bad.items():
            status, body = _post(port, payload, path)
            assert status == code and body["error_code"] == kind and body["message"], (what, status, body)
            kinds[kind] = kinds.get(kind, 0) + 1
        assert _get(port, "/recommend")[0] == 405
        metrics = _get(port, "/metrics")[1]
        for kind, n in kinds.items():
            assert _metric(metrics, "liverec_errors_total", kind=kind) == n, (kind, metrics)
        assert _metric(metrics, "liverec_requests_total") == 2 + len(bad)
        assert _metric(metrics, "liverec_request_seconds_bucket", le="+Inf") == 2 + len(bad)
        assert _metric(metrics, "liverec_scorer_total", counter="store_misses") == 1  # the unknown user

        # the alias moves to a new version (the same artifacts registered again): swapped in, no request fails
        failures: list = []
        answered = [0]
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                code, out = _post(port, path="/recommend", body=json.dumps({"user_id": ranked, "k": 5}))
                if code != 200:
                    failures.append((code, out))
                answered[0] += 1

        worker = threading.Thread(target=load)
        worker.start()
        try:
            mv = client.get_model_version(settings.online.registered_model, first)
            with tracking.caller_environment_kept():
                mlflow.set_tracking_uri(settings.tracking_uri())
                second = registry.register(mv.source, settings.online.registered_model)
            client.set_registered_model_alias(settings.online.registered_model, settings.online.alias, second)
            deadline = time.monotonic() + 120
            while json.loads(_get(port, "/ready")[1])["version"] != str(second):
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
            time.sleep(1.0)
        finally:
            stop.set()
            worker.join(60)
            client.set_registered_model_alias(settings.online.registered_model, settings.online.alias, first)
        assert not failures and answered[0] >= 5, (failures[:3], answered)
        assert _metric(_get(port, "/metrics")[1], "liverec_model_reloads_total") == 1


def _a_ranked_user(spark, settings, last: bool = False) -> str:
    """The raw id of an ml-100k user the nightly ranker ranked (the first such id, or the last)."""
    recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS)
    ranked = {r["user_id"] for r in recs.where(F.col("model_version").startswith("ranker:"))
              .select("user_id").distinct().collect()}
    key = settings.ids.demo_key.encode()
    ids = range(943, 0, -1) if last else range(1, 944)
    return next(str(u) for u in ids if pseudonymise_value(str(u), key) in ranked)


def _store_url(settings) -> str:
    return tables.online_store_url(settings)


def test_a_click_through_the_stream_brings_its_neighbours_into_the_answer(spark, ml100k_pipeline, online_model,
                                                                          tmp_path):
    """The user id alone in the request: a click that arrives through stream_events (one micro-batch, written to
    the online store) changes the next answer, which then holds that item's content neighbours."""
    import dataclasses

    from liverec import streaming

    settings = ml100k_pipeline
    scorer = online_model.unwrap_python_model().scorer
    raw = _a_ranked_user(spark, settings, last=True)
    before = online_model.predict(pd.DataFrame([{"user_id": raw, "k": 10}]))
    assert set(before["streamed"]) == {0} and "session" not in set(before["source"])
    seen = scorer.lookup_user(pseudonymise_value(raw, settings.ids.demo_key.encode()))[0]
    clicked = next(i for i in scorer.popular.tolist()[20:] if i not in set(seen.seen_idx.tolist()))
    item = scorer.item_ids[clicked]
    neighbours = {scorer.item_ids[i] for i in scorer.neighbors[clicked] if i >= 0}

    landing = tmp_path / "landing"
    landing.mkdir()
    now = time.time()
    (landing / "events.json").write_text(json.dumps(
        {"user_id": raw, "item_id": item, "event_type": "click", "ts": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
         "event_id": "fresh-1"}) + "\n")
    # a lakehouse of its own for silver and gold.user_recent; the online store is the published one
    stream_settings = dataclasses.replace(settings, lakehouse_root=str(tmp_path / "lakehouse"),
                                          online=dataclasses.replace(settings.online, store=_store_url(settings)))
    rows = streaming.read_landing(spark, str(landing), "json", streaming=False)
    result = streaming.process_batch(spark, stream_settings, rows, 0, "test-fresh")
    assert result.kept == 1 and result.store_users == 1 and result.store_error is None, result

    after = online_model.predict(pd.DataFrame([{"user_id": raw, "k": 10}]))
    assert set(after["streamed"]) == {1}, after
    assert item not in set(after["item_id"])
    live = after[after["source"] == "session"]
    assert len(live) >= settings.online.session_slots and set(live["item_id"]) <= neighbours, (after, neighbours)
    assert list(before["item_id"]) != list(after["item_id"])


def test_a_redis_store_that_stops_gives_degraded_answers_and_recovers(spark, ml100k_pipeline, online_model,
                                                                      redis_restartable):
    """The published profiles copied into a real redis-server answer as the SQLite store does; with the server
    stopped between requests the answers are degraded (popular items, a warning), not errors, and the store is not
    asked again for online.store_retry_s; once it is back (and republished) the answers are the first ones."""
    import copy

    from liverec.online_store import open_store

    settings = ml100k_pipeline
    base = online_model.unwrap_python_model().scorer
    sqlite = open_store(_store_url(settings))
    records = list(sqlite.profiles())
    sqlite.close()
    store = open_store(redis_restartable.url, 0.2, "t-online")
    assert store.publish("2024-01-15", records) == len(records) > 900
    scorer = copy.copy(base)
    scorer.store, scorer.counters, scorer.meta = store, dict.fromkeys(online.COUNTERS, 0), {**base.meta,
                                                                                              "store_retry_s": 1.0}
    raw = _a_ranked_user(spark, settings)
    asked = [{"user_id": raw, "k": 10}, {"user_id": None, "session": _clicks(STAR_WARS), "k": 5}]
    cols = ["request", "rank", "item_id", "score", "source", "reason"]
    want = scorer.answer(asked)
    pd.testing.assert_frame_equal(want[cols], base.answer(asked)[cols])  # Redis answers as SQLite does
    assert "nightly" in set(want[want["request"] == 0]["source"]) and all(w == [] for w in want["warnings"])

    redis_restartable.stop()
    started = time.monotonic()
    down = scorer.answer(asked)
    again = scorer.answer(asked)  # within store_retry_s: the store is not asked
    assert time.monotonic() - started < 2.0
    assert scorer.counters["store_errors"] == 1 and scorer.counters["degraded"] == 2, scorer.counters
    for out in (down, again):
        user, visitor = out[out["request"] == 0], out[out["request"] == 1]
        assert len(user) == 10 and set(user["source"]) == {"popular"}, user
        assert all(w == [online.STORE_DOWN] for w in user["warnings"])
        pd.testing.assert_frame_equal(visitor[cols].reset_index(drop=True),
                                      want[want["request"] == 1][cols].reset_index(drop=True))  # no store needed

    redis_restartable.start()
    assert store.publish("2024-01-15", records) == len(records)  # the nightly job's next materialisation
    time.sleep(1.1)
    pd.testing.assert_frame_equal(scorer.answer(asked)[cols], want[cols])
    store.close()


def test_the_served_artifact_holds_nothing_per_user(ml100k_pipeline, tmp_path):
    """What is per user lives in the online store: every array of the served bundle is sized by the catalogue
    (items, EASE's items, the popular list), and its metadata holds no user ids, so the artifact does not grow
    with the users (benchmarks/online_latency.py measures its size beside the store's)."""
    settings = ml100k_pipeline
    with tracking.caller_environment_kept():
        mlflow.set_tracking_uri(settings.tracking_uri())
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{settings.online.registered_model}@{settings.online.alias}", dst_path=str(tmp_path))
    [npz] = list(tmp_path.rglob("bundle.npz"))
    meta = json.loads(next(tmp_path.rglob("bundle.json")).read_text())
    n_items, n_users = len(meta["item_ids"]), 943
    with np.load(npz) as z:
        shapes = {k: z[k].shape for k in z.files}
    n_ease = shapes["ease_items"][0]
    for name, shape in shapes.items():
        allowed = {n_items, n_ease} if name.startswith("ease") else {n_items}
        if name == "popular":
            allowed = {min(n_items, settings.online.candidates)}
        assert shape[0] in allowed and n_users not in shape, (name, shape)
    assert not {"user_ids", "affinity", "recent", "friend_of", "nightly_reason"} & set(meta), sorted(meta)
    key = settings.ids.demo_key.encode()
    text = npz.read_bytes() + json.dumps(meta).encode()
    assert pseudonymise_value("196", key).encode() not in text  # a user's pseudonym is nowhere in it
    assert local


def test_exploration_shows_lists_as_often_as_the_propensities_it_logs(ml100k_pipeline, online_model):
    """feedback.exploration_share 0.5 at temperature 1: the first item's frequency over many answers to one request
    is the position-1 propensity the answers carry (a Monte-Carlo check, independent of how it is computed); the
    served list keeps at least 1 - share; propensities never grow down a list; the impressions say which answers
    explored."""
    import math

    scorer = online_model.unwrap_python_model().scorer
    saved, saved_rng = dict(scorer.meta), scorer.rng
    scorer.meta.update(exploration_share=0.5, exploration_temperature=1.0)
    scorer.rng = np.random.default_rng(7)
    n = 400
    try:
        out = pd.concat([scorer.answer([{"user_id": None, "session": _clicks(STAR_WARS), "k": 5}]) for _ in range(n)])
    finally:
        scorer.meta.clear()
        scorer.meta.update(saved)
        scorer.rng = saved_rng
    lists = {rid: tuple(g.sort_values("rank")["item_id"]) for rid, g in out.groupby("request_id")}
    assert len(lists) == n and len(set(lists.values())) > 5  # it explores
    served = tuple(scorer.answer([{"user_id": None, "session": _clicks(STAR_WARS), "k": 5}])["item_id"])
    firsts = out[out["rank"] == 1]
    for _, group in firsts.groupby("item_id"):
        p = group["propensity"].iloc[0]
        assert np.allclose(group["propensity"], p) and abs(len(group) / n - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-3
    assert firsts[firsts["item_id"] == served[0]]["propensity"].iloc[0] >= 0.5
    for _, g in out.groupby("request_id"):
        assert np.all(np.diff(g.sort_values("rank")["propensity"].to_numpy()) <= 1e-12)
    scorer.impressions.flush()
    explored = {}
    for f in Path(tables.impressions_landing(ml100k_pipeline)).glob("*.jsonl"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if r["request_id"] in lists:
                explored[r["request_id"]] = r["explored"]
                if r["position"] == 1:
                    first = r
    assert len(explored) == n and abs(sum(explored.values()) - n / 2) <= 4 * math.sqrt(n / 4)
    # position 1 logs the pool with the features the ranker scored it by: re-scored, they give the logged scores
    assert first["recent_items"][0] == STAR_WARS and len(first["pool_dense"]) == len(first["pool"]) > 5
    again = scorer.ranker.score_ids(first["pool"], first["recent_items"], np.array(first["pool_dense"]))
    z, logged = (again - again.mean()) / again.std(), np.array(first["pool_scores"])
    if getattr(scorer.ranker, "variant", None) == "int8":
        # dynamic int8 quantises each call's activations over that call's whole batch (every candidate when served,
        # the pool alone here): the same order, not the same numbers
        ranks = [np.argsort(np.argsort(x)) for x in (z, logged)]
        assert np.corrcoef(*ranks)[0, 1] >= 0.9 and np.max(np.abs(z - logged)) < 0.3
    else:
        np.testing.assert_allclose(z, logged, atol=1e-3)
