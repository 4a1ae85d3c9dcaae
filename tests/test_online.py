"""The real-time scorer on MovieLens 100K: the whole batch chain (ALS, embeddings, the ranker, the nightly
rows) runs once on the real data, ``publish_online`` registers ``liverec-online@champion``, and the
tests ask it, in process and through ``mlflow models serve``, what a visitor or a known user should see
next."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from liverec import lakehouse, online, tables, tracking
from liverec.cleaning import pseudonymise_value
from tests.conftest import REPO, cli_args, job_env

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
        x = scorer.fold_in(online.Request(scorer.uindex[user], [], None, 10))
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


def test_online_features_equal_the_batch_features(spark, ml100k_pipeline, online_model):
    """One definition of the features: for known users without a session, the online scorer's dense features of
    the nightly candidates are the batch ones (liverec.features over the same gold tables). The ALS ones go
    through the fold-in, which gives back the nightly factor up to the solver's precision (cosine > 0.99), so
    they agree within a tolerance; every other feature is the same number."""
    from liverec import candidates, catalog, features
    from liverec.cleaning import id_key
    from liverec.features import DENSE_FEATURES
    from liverec.stages.base import Context, latest_ease

    settings, ds = ml100k_pipeline, "2024-01-15"
    scorer = online_model.unwrap_python_model().scorer

    def part(table):
        return lakehouse.read(spark, settings, table).where(F.col("ds") == ds)

    events = catalog.events_until(spark, settings, ds)
    ease_model, _, _ = latest_ease(Context(spark, settings, ds, None))
    f = features.features_from(spark, events, part(tables.USER_PROFILES), part(tables.USER_FACTORS),
                               part(tables.ITEM_FACTORS), ease_model, catalog.latest_items(spark, settings, ds),
                               part(tables.ITEM_EMBEDDINGS), None, settings, id_key(settings))
    users = f.users.select("user_id").orderBy("user_id").limit(4)
    cands = candidates.generate(spark, f, users, part(tables.ITEM_NEIGHBORS), settings.recommend)
    batch = features.assemble(cands, f, settings.ranker.recent_items, settings.recommend.als_candidates,
                              settings.recommend.ease_candidates).toPandas()
    assert len(batch) > 400
    exact = [c for c in DENSE_FEATURES if c not in ("als_z", "log_als_rank")]
    rank_agree = []
    for user, rows in batch.groupby("user_id"):
        req = online.Request(scorer.uindex[user], [], None, 10)
        history, banned = scorer.seen(req)
        als, top = scorer.als_top(scorer.fold_in(req), banned)
        ease, ease_top = scorer.ease_top(req, history, banned)
        cands_idx = [scorer.index[i] for i in rows["item_id"]]
        dense, recent = scorer.features(req, cands_idx, als, top, history, banned, ease, ease_top)
        want = np.stack(rows["dense"].to_numpy())
        for c in exact:
            j = DENSE_FEATURES.index(c)
            np.testing.assert_allclose(dense[:, j], want[:, j], rtol=1e-4, atol=1e-4, err_msg=c)
        j = DENSE_FEATURES.index("als_z")
        np.testing.assert_allclose(dense[:, j], want[:, j], atol=0.15, err_msg="als_z")
        j = DENSE_FEATURES.index("log_als_rank")
        rank_agree.append(float(np.mean(np.abs(dense[:, j] - want[:, j]) < 0.2)))
        assert recent[:len(rows["recent_items"].iloc[0])] == list(rows["recent_items"].iloc[0])
    assert min(rank_agree) > 0.8, rank_agree


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: bytes | str, timeout: float = 30.0) -> tuple[int, dict | str]:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=data,
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


def test_mlflow_models_serve_answers_and_rejects_bad_requests(ml100k_pipeline, tmp_path):
    """``liverec serve`` = ``mlflow models serve --env-manager local`` on models:/liverec-online@champion."""
    port = _free_port()
    env = job_env()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 (the server outlives this statement)
    proc = subprocess.Popen([sys.executable, "-m", "liverec.cli", "serve", *cli_args(ml100k_pipeline),
                             "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)

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
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


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


def test_bundle_rows_per_user_keep_their_order_and_drop_unknown_ids():
    from liverec.online_bundle import _csr

    rows = pd.DataFrame({"user_id": ["b", "a", "x", "b", "a"], "item_id": ["i2", "i1", "i1", "i9", "i3"],
                         "v": [1.0, 2.0, 3.0, 4.0, 5.0]})
    ptr, idx, val = _csr(rows, {"a": 0, "b": 1, "c": 2}, {"i1": 0, "i2": 1, "i3": 2}, "v")
    assert ptr.tolist() == [0, 2, 3, 3]  # a: 2 rows, b: 1 (its i9 is unknown), c: none; user x dropped
    assert idx.tolist() == [0, 2, 1] and val.tolist() == [2.0, 5.0, 1.0]
