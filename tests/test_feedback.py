"""Impressions and feedback (liverec.impressions, the collect_feedback stage): the servers' impression files and the
nightly lists reach silver.impressions once each, and the events that followed an impression are credited to it in
gold.feedback; every expectation below is worked out by hand from the rows the test writes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from liverec import impressions, lakehouse, registry, tables
from liverec.cli import main
from liverec.features import DENSE_FEATURES
from liverec.progress import Progress
from liverec.stages.base import Context
from liverec.stages.feedback import ope_check
from tests.conftest import cli_args, settings_for

DS = "2024-01-15"
T = dt.datetime(2024, 1, 15, 12, 0, tzinfo=dt.UTC).timestamp()  # the online impressions' time


def _shown(*items: str) -> list[dict]:
    return [{"item_id": i, "score": 1.0 / p, "propensity": 1.0} for p, i in enumerate(items, start=1)]


def test_the_log_writes_whole_files_and_survives_a_folder_it_cannot_write(tmp_path):
    log = impressions.ImpressionLog(tmp_path / "landing", flush_seconds=3600, flush_rows=5)
    log.add(impressions.rows_of("r1", "u1", _shown("a", "b", "c"), "ranker:m/1", "online", False, T))
    assert log.files == 0 and not list((tmp_path / "landing").glob("*"))  # 3 rows wait for the 5th or a flush
    log.add(impressions.rows_of("r2", None, _shown("d", "e"), "ranker:m/1", "online", False, T + 1))
    files = sorted((tmp_path / "landing").glob("*"))  # the 5th row wrote them, as one file
    assert len(files) == 1 and files[0].suffix == ".jsonl" and not files[0].name.startswith(".")
    rows = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert [(r["impression_id"], r["item_id"], r["position"], r["user_id"]) for r in rows] == [
        ("r1:1", "a", 1, "u1"), ("r1:2", "b", 2, "u1"), ("r1:3", "c", 3, "u1"), ("r2:1", "d", 1, None),
        ("r2:2", "e", 2, None)]
    assert rows[1]["score"] == 0.5 and rows[0]["ts"] == "2024-01-15T12:00:00+00:00"
    log.close()

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    bad = impressions.ImpressionLog(blocked, flush_seconds=3600, flush_rows=100)
    bad.add(impressions.rows_of("r3", "u1", _shown("a", "b"), "p", "online", False, T))
    assert bad.flush() == 0 and bad.failed_rows == 2 and bad.written_rows == 0  # counted, not raised
    bad.close()
    # an object-store lakehouse without a local landing folder: no log (a warning), not a folder named "s3:"
    assert impressions.open_log("s3://bucket/lake/_landing/impressions", 1.0, 10) is None
    assert impressions.open_log("off", 1.0, 10) is None
    local = impressions.open_log(f"file://{tmp_path / 'ok'}", 1.0, 10)
    assert local is not None and local.folder == tmp_path / "ok"
    local.close()


def _events(spark, rows):
    """rows: (event_id, user, item, event_type, seconds after T)."""
    data = [(e, u, i, t, None, dt.datetime.fromtimestamp(T + s, dt.UTC).replace(tzinfo=None), None, None, "test", DS)
            for e, u, i, t, s in rows]
    return spark.createDataFrame(data, "event_id string, user_id string, item_id string, event_type string, "
                                       "value double, ts timestamp, session_id string, price double, source string, "
                                       "ds string")


def test_collect_feedback_keeps_each_impression_once_and_credits_the_latest_before_an_event(spark, tmp_path):
    landing = tmp_path / "impressions"
    conf = (f"feedback.landing={landing}", "feedback.attribution_seconds=3600", "feedback.click_events=[click]")
    settings = settings_for(tmp_path, *conf)
    run = ["run", "collect_feedback", *cli_args(settings), *[x for kv in conf for x in ("--set", kv)], "--ds", DS]
    log = impressions.ImpressionLog(landing, flush_seconds=3600, flush_rows=10_000)
    log.add(impressions.rows_of("A", "u1", _shown("i1", "i2", "i3"), "ranker:m/1", "online", False, T))
    log.add(impressions.rows_of("B", None, _shown("i1", "i2"), "ranker:m/1", "online", False, T + 5))  # a visitor
    log.flush()
    first = next(landing.glob("*.jsonl"))
    (landing / "copy-of-the-first.jsonl").write_bytes(first.read_bytes())  # delivered twice
    log.add(impressions.rows_of("C", "u1", _shown("i2"), "ranker:m/1", "online", False, T + 30))
    log.flush()
    (landing / "bad.jsonl").write_text(json.dumps({**impressions.rows_of("D", "u1", _shown("i9"), "p", "online", False,
                                                                        T)[0], "propensity": 0.0}) + "\n")
    lakehouse.append(spark, settings, tables.SILVER_EVENTS, _events(spark, [
        ("e1", "u1", "i2", "click", 60),  # after A (t) and C (t + 30): credited to C, the latest before it
        ("e2", "u1", "i3", "click", 7200),  # two hours after A: outside the hour
        ("e3", "u1", "i1", "click", -10),  # before A
        ("e4", "u1", "i1", "view", 100),  # credited to A's i1, but a view is not a click
        ("e5", "u2", "i2", "click", 10),  # another user
    ]))
    recs = spark.createDataFrame([("u1", 1, "n1", 0.9, "r", "als", None, "als:x", DS),
                                  ("u1", 2, "n2", 0.8, "r", "als", None, "als:x", DS)],
                                 "user_id string, rank int, item_id string, score double, reason string, source "
                                 "string, model_run_id string, model_version string, ds string")
    lakehouse.overwrite_partition(spark, settings, tables.RECOMMENDATIONS, recs, {"ds": DS})

    assert main(run) == 0
    shown = lakehouse.read(spark, settings, tables.SILVER_IMPRESSIONS)
    got = sorted((r["impression_id"], r["ds"], r["propensity"]) for r in shown.collect())
    assert got == sorted([("A:1", DS, 1.0), ("A:2", DS, 1.0), ("A:3", DS, 1.0), ("B:1", DS, 1.0), ("B:2", DS, 1.0),
                          ("C:1", DS, 1.0),  # each once though its file came twice; D (propensity 0) left out
                          ("nightly:2024-01-15:u1:1", "2024-01-16", 1.0),  # shown from the next midnight
                          ("nightly:2024-01-15:u1:2", "2024-01-16", 1.0)])
    feedback = {r["impression_id"]: (r["clicked"], r["events"], r["reward"]) for r in
                lakehouse.read(spark, settings, tables.FEEDBACK).where(F.col("ds") == DS).collect()}
    assert feedback == {"A:1": (False, 1, 0.0), "A:2": (False, 0, 0.0), "A:3": (False, 0, 0.0),
                        "B:1": (False, 0, 0.0), "B:2": (False, 0, 0.0), "C:1": (True, 1, 1.0)}

    # a rerun the next night (as the DAG runs it: the day before attributed), and a file that repeats impression C,
    # add nothing; the feedback of DS is written again, the same, and none for the next day
    (landing / "late-repeat.jsonl").write_text(
        json.dumps(impressions.rows_of("C", "u1", _shown("i2"), "ranker:m/1", "online", False, T + 30)[0]) + "\n")
    assert main([*run[:-1], "2024-01-16", "--attribute-ds", DS]) == 0
    again = lakehouse.read(spark, settings, tables.SILVER_IMPRESSIONS)
    assert again.count() == 8 and again.select("impression_id").distinct().count() == 8
    fb = lakehouse.read(spark, settings, tables.FEEDBACK)
    assert {r["impression_id"]: (r["clicked"], r["events"], r["reward"]) for r in fb.collect()} == feedback


def test_collect_feedback_refuses_an_empty_click_list(tmp_path, capsys):
    settings = settings_for(tmp_path)
    assert main(["run", "collect_feedback", *cli_args(settings), "--set", "feedback.click_events=[]", "--ds", DS]) != 0
    assert "feedback.click_events" in capsys.readouterr().err



def test_evaluate_offpolicy_replays_the_served_list_on_an_exploring_log(spark, tmp_path):
    """A simulated log: per answer 8 candidates with standardised scores, the first 3 served; half the answers drawn
    by Plackett-Luce at temperature 1 (propensities by liverec.offpolicy's mixture, checked against brute force in
    tests/test_offpolicy.py); clicks with probability relevance(item) / position. evaluate_offpolicy's IPS of the
    served list equals the formula recomputed here from the same rows, its SNIPS and DR intervals cover the served
    list's true value (known in closed form), and the logging policy replayed on itself weighs every list 1."""
    from liverec import offpolicy

    landing = tmp_path / "impressions"
    conf = (f"feedback.landing={landing}", "feedback.attribution_seconds=600", "feedback.click_events=[click]",
            "feedback.ope_bootstrap=300")
    settings = settings_for(tmp_path, *conf)
    rng = np.random.default_rng(11)
    n, m, k, share, temp = 1500, 8, 3, 0.5, 1.0
    log = impressions.ImpressionLog(landing, flush_seconds=3600, flush_rows=1_000_000)
    events, truth, rows, zs = [], 0.0, [], []
    for i in range(n):
        z = rng.normal(size=m)
        rel = 0.6 / (1.0 + np.exp(-2 * z))  # relevance grows with the score
        shown = np.arange(k)
        if rng.random() < share:
            shown, _ = offpolicy.sample_list(z, k, temp, rng)
        prop = offpolicy.mixture_propensities(z, shown, np.arange(k), temp, share)
        items = [f"L{i}-{j}" for j in range(m)]
        clicks = rng.random(k) < rel[shown] / np.arange(1, k + 1)
        truth += float((rel[:k] / np.arange(1, k + 1)).sum()) / n  # the served list's expected clicks
        rows.append((clicks.astype(float), prop, np.asarray(shown)))
        dense = rng.normal(size=(m, len(DENSE_FEATURES)))
        dense[:, DENSE_FEATURES.index("als_z")] = z  # what the gate's rankers below score by
        log.add(impressions.rows_of(f"R{i}", f"u{i}", [{"item_id": items[j], "score": float(z[j]), "propensity": p}
                                                       for j, p in zip(shown, prop, strict=True)],
                                    "ranker:m/1", "online", False, T + i,
                                    impressions.Pool(items, z.tolist(), dense.tolist(), [f"seen{i}"])))
        zs.append(z)
        events += [(f"e{i}-{p}", f"u{i}", items[j], "click", i + 5) for p, j in enumerate(shown) if clicks[p]]
    log.close()
    lakehouse.append(spark, settings, tables.SILVER_EVENTS, _events(spark, events))
    sets = [x for kv in conf for x in ("--set", kv)]
    assert main(["run", "collect_feedback", *cli_args(settings), *sets, "--ds", DS]) == 0
    assert main(["run", "evaluate_offpolicy", *cli_args(settings), *sets, "--ds", DS, "--policy", "0:0",
                 "--policy", f"{temp:g}:{share:g}"]) == 0
    report = json.loads((Path(settings.evaluate.report_dir) / DS / "offpolicy.json").read_text())
    assert (report["answers"], report["replayed"], report["k"]) == (n, n, k)
    r = np.stack([x[0] for x in rows])
    assert report["logged_clicks_per_list"] == pytest.approx(r.sum(axis=1).mean(), rel=1e-12)
    served, itself = ({e["name"]: e for e in report["policies"][j]["estimates"]["clicks"]} for j in (0, 1))
    # IPS of the served list by hand: weight 1 / logged propensity while the list is still the served one
    w = np.stack([np.cumprod(x[2] == np.arange(k)) / x[1] for x in rows])
    assert served["ips"]["value"] == pytest.approx((w * r).sum(axis=1).mean(), rel=1e-9)
    for name in ("snips", "cascade_dr"):
        assert served[name]["ci_low"] <= truth <= served[name]["ci_high"], (name, served[name], truth)
    assert abs(served["snips"]["value"] - truth) / truth < 0.1
    # the logging policy on itself: every weight 1, IPS the plain mean, the full sample effective
    assert itself["ips"]["value"] == pytest.approx(r.sum(axis=1).mean(), rel=1e-9)
    assert itself["ips"]["ess"] == pytest.approx(n)

    # the promotion gate's off-policy check re-scores the logged pools' features with a new ranker: one that ranks
    # by the score relevance grows with passes, its opposite is refused; too few answers of a policy: not applied
    class ByFeature:  # a pyfunc that is not a liverec ranker: scored through predict, as score_examples does
        def __init__(self, sign: float):
            self.sign = sign

        def predict(self, frame):
            assert (frame["recent_items"].map(len) == 1).all()  # the logged recent items came along
            return pd.DataFrame({"score": self.sign * frame["als_z"].to_numpy()})

    # served as the log was: half the answers explored at T=1 (the new ranker's own top 3 otherwise)
    explore = (temp, share)
    ctx = Context(spark, settings_for(tmp_path, *conf, f"feedback.exploration_temperature={temp}",
                                      f"feedback.exploration_share={share}"), DS, Progress("test"))
    b, sh = np.stack([x[1] for x in rows]), np.stack([x[2] for x in rows])
    for sign, better in ((1.0, True), (-1.0, False)):
        ope = ope_check(ctx, ByFeature(sign), "ranker:m/1")
        expected, logged = offpolicy.ranker_policy_value(r, b, sh, sign * np.stack(zs), *explore)
        assert ope["applied"] and ope["lists"] == n and ope["passed"] is better, ope
        assert ope["estimate"] == pytest.approx(expected.value, rel=1e-6)
        assert ope["logged"] == pytest.approx(logged, rel=1e-12)
        assert registry.ope_verdict(ope)[0] is better
        assert ("refuses" in registry.ope_verdict(ope)[1]) is not better
    other = ope_check(ctx, ByFeature(1.0), "ranker:m/2")
    assert not other["applied"] and other["lists"] == 0 and "ope_gate_min_lists" in other["reason"]
    assert registry.ope_verdict(other) == (True, f"; off-policy check not applied: {other['reason']}")
