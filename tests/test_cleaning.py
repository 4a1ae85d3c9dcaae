"""Row-level rules of the clean stage, on tiny bronze frames built here."""

import datetime as dt
import hashlib
import hmac

import pytest
from pyspark.sql import functions as F

from liverec import cleaning, schemas
from liverec.config import load_settings
from liverec.errors import ConfigError

DS = "2024-03-10"
COLS = ["event_id", "user_id", "item_id", "event_type", "value", "ts", "session_id", "price", "source_reject",
        "raw_record"]


def bronze(spark, rows):
    """rows: dicts with any of COLS; row_id is the position."""
    now = dt.datetime(2024, 3, 10, 12, 0, 0)
    data = [(i, *[r.get(c) for c in COLS], "test.csv", now, DS, "test") for i, r in enumerate(rows)]
    return spark.createDataFrame(data, schemas.BRONZE_EVENTS)


def ok(**kw):
    base = {"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": "1710000000"}
    base.update(kw)
    return base


@pytest.fixture
def conf(settings):
    return settings


def classify(spark, settings, rows, others=None):
    out = cleaning.classify(bronze(spark, rows), settings, DS, others)
    return {r["row_id"]: (r["_status"], r["_reason"]) for r in out.collect()}


def test_each_rule_names_its_reason(spark, conf):
    rows = [
        ok(),
        ok(raw_record="garbage,line"),
        ok(user_id=None),
        ok(user_id="  "),
        ok(item_id=None),
        ok(source_reject="non_product_code"),
        ok(event_type=None),
        ok(ts=None),
        ok(ts="yesterday-ish"),
        ok(ts="1990-01-01T00:00:00"),
        ok(ts="2031-01-01T00:00:00Z"),
        ok(event_type="teleport"),
        ok(value="lots"),
        ok(price="cheap"),
        ok(value="999999"),
        ok(value="NaN"),
        ok(event_type=" Purchase ", value="2", ts="2024-03-09 10:00:00"),
    ]
    got = classify(spark, conf, rows)
    expected = [None, "malformed", "missing_user_id", "missing_user_id", "missing_item_id", "non_product_code",
                "missing_event_type", "missing_ts", "bad_ts", "ts_too_old", "future_ts", "unknown_event_type",
                "non_numeric_value", "non_numeric_price", "value_out_of_range", "non_numeric_value", None]
    for i, reason in enumerate(expected):
        status = cleaning.STATUS_OK if reason is None else cleaning.STATUS_QUARANTINE
        assert got[i] == (status, reason), (i, rows[i], got[i])


def test_first_failing_rule_wins(spark, conf):
    got = classify(spark, conf, [ok(user_id=None, source_reject="non_product_code", ts="bad")])
    assert got[0] == (cleaning.STATUS_QUARANTINE, "missing_user_id")


def test_duplicates_by_event_id_and_by_content(spark, conf):
    rows = [ok(event_id="e1"), ok(event_id="e1", item_id="other"), ok(), ok(), ok(value="3")]
    got = classify(spark, conf, rows)
    assert [got[i][0] for i in range(5)] == ["ok", "duplicate", "ok", "duplicate", "ok"]


def test_the_first_valid_copy_is_kept_by_row_id_then_source(spark, conf):
    # three copies of e1: the lowest row_id is invalid (quarantined, not a duplicate), so the next one is kept;
    # two copies of e2 share a row_id in two sources: the source that sorts first is kept
    rows = [ok(event_id="e1", user_id=None), ok(event_id="e1"), ok(event_id="e1", item_id="x"), ok(event_id="e2")]
    df = bronze(spark, rows)
    twin = df.where(F.col("row_id") == 3).withColumn("source", F.lit("a-first"))
    out = cleaning.classify(df.unionByName(twin), conf, DS, None)
    got = {(r["row_id"], r["source"]): (r["_status"], r["_reason"]) for r in out.collect()}
    assert got == {(0, "test"): ("quarantine", "missing_user_id"), (1, "test"): ("ok", None),
                   (2, "test"): ("duplicate", None), (3, "a-first"): ("ok", None), (3, "test"): ("duplicate", None)}


def test_bot_daily_rule_sums_the_minutes_of_a_day(spark, settings_factory):
    # 4 actions in each of 3 minutes = 12 a day: over 10 flags the user; 10 in 3 minutes (4 + 4 + 2) does not
    s = settings_factory("clean.bot_max_actions_per_day=10")
    t0 = 1710000000 - 1710000000 % 86400 + 3600
    busy = [ok(user_id="busy", item_id=f"i{m}{k}", ts=str(t0 + 60 * m + k)) for m in range(3) for k in range(4)]
    calm = [ok(user_id="calm", item_id=f"i{k}", ts=str(t0 + 60 * (k // 4) + k % 4)) for k in range(10)]
    got = classify(spark, s, busy + calm)
    assert [got[i] for i in range(12)] == [("quarantine", "bot_user")] * 12
    assert [got[i] for i in range(12, 22)] == [("ok", None)] * 10


def test_duplicates_of_rows_kept_on_other_dates(spark, conf):
    others = spark.createDataFrame([("e9",)], "event_id string")
    got = classify(spark, conf, [ok(event_id="e9"), ok(event_id="e10")], others)
    assert got[0][0] == "duplicate" and got[1][0] == "ok"


def test_invalid_copies_are_quarantined_not_deduplicated(spark, conf):
    got = classify(spark, conf, [ok(event_id="e1", user_id=None), ok(event_id="e1", user_id=None)])
    assert got[0] == got[1] == ("quarantine", "missing_user_id")


def test_bot_rate_rule_and_baskets(spark, conf):
    t0 = 1710000000 - 1710000000 % 60
    bot = [ok(user_id="bot", item_id=f"i{k}", ts=str(t0 + k)) for k in range(50)]  # 50 actions in a minute
    basket = [ok(user_id="shop", item_id=f"i{k}", event_type="purchase", ts=str(t0)) for k in range(200)]
    human = [ok(user_id="human", item_id=f"i{k}", ts=str(t0 + 2 * k)) for k in range(25)]
    got = classify(spark, conf, bot + basket + human)
    statuses = list(got.values())
    assert statuses.count(("quarantine", "bot_user")) == 50
    assert statuses.count(("ok", None)) == 225


def test_bot_daily_rule(spark, settings_factory):
    s = settings_factory("clean.bot_max_actions_per_day=10")
    t0 = 1710000000
    rows = [ok(user_id="u", item_id=f"i{k}", ts=str(t0 + 300 * k)) for k in range(11)]
    assert set(classify(spark, s, rows).values()) == {("quarantine", "bot_user")}


def test_parse_ts_formats(spark):
    df = spark.createDataFrame([("1710000000",), ("1710000000500",), ("2024-03-09T16:00:00Z",),
                                ("2024-03-09 16:00:00",), ("2024-03-09T17:00:00+01:00",), ("nope",)], "ts string")
    got = [r[0] for r in df.select(cleaning.parse_ts(F.col("ts"))).collect()]
    assert got[0] == dt.datetime(2024, 3, 9, 16, 0, 0)
    assert got[1] == dt.datetime(2024, 3, 9, 16, 0, 0, 500000)
    assert got[2] == got[3] == got[4] == dt.datetime(2024, 3, 9, 16, 0, 0)
    assert got[5] is None


def test_pseudonym_is_hmac_sha256(spark):
    key = b"k" * 80  # longer than a block: hashed first, as RFC 2104 says
    df = spark.createDataFrame([("alice",), (None,), ("bob",)], "u string")
    got = [r[0] for r in df.select(cleaning.pseudonymise(F.col("u"), key)).collect()]
    assert got[0] == hmac.new(key, b"alice", hashlib.sha256).hexdigest()
    assert got[1] is None
    assert got[2] == cleaning.pseudonymise_value("bob", key)


def test_pseudonyms_of_distinct_ids_joined_back_equal_hmac_per_row(spark):
    key = b"secret"
    rows = [(i, u) for i, u in enumerate(["alice", "bob", None, "alice", "carol", "bob", "alice"])]
    df = spark.createDataFrame(rows, "n int, u string")
    want = {n: None if u is None else hmac.new(key, u.encode(), hashlib.sha256).hexdigest() for n, u in rows}
    for broadcast_max in (0, 100):  # shuffled join, broadcast join
        out = cleaning.pseudonymise_ids(df, "u", key, broadcast_max)
        assert out.columns == ["n", "u"]
        assert {r["n"]: r["u"] for r in out.collect()} == want


def test_user_peaks_match_a_count_by_hand():
    """The bot rules' figures against a plain-Python count over every user's actions (random times, repeats
    included)."""
    import math

    import numpy as np

    rng = np.random.default_rng(7)
    n, max_gap = 5, 40.0
    codes, micros = [], []
    for user in range(40):
        t0 = 1_710_000_000 + int(rng.integers(0, 86_400))
        steps = rng.choice([0, 0.4, 3, 10, 11, 30, 400, 5000], size=int(rng.integers(1, 60)))
        for t in t0 + np.cumsum(steps):
            codes.append(user)
            micros.append(int(round(t * 1_000_000)))
    order = rng.permutation(len(codes))
    users, got = cleaning.user_peaks(np.array(micros, dtype=np.int64)[order], np.array(codes, dtype=np.int32)[order],
                                     n, max_gap)
    assert list(users) == list(range(40))
    for u in range(40):
        acts = sorted({m for c, m in zip(codes, micros, strict=True) if c == u})
        secs = [m // 1_000_000 for m in acts]

        def most(keys):
            return max(keys.count(k) for k in set(keys))

        assert got["peak_minute"][u] == most([m // 60_000_000 for m in acts])
        assert got["peak_day"][u] == most([s // 86_400 for s in secs])
        assert got["peak_hour"][u] == max(most([s // 3600 for s in secs]), most([(s + 1800) // 3600 for s in secs]))
        runs = []
        for i in range(n - 1, len(secs)):
            gaps = [secs[j] - secs[j - 1] for j in range(i - n + 2, i + 1)]
            mean = sum(gaps) / len(gaps)
            if 0 < mean <= max_gap:
                sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
                runs.append((sd / mean, mean))
        if runs:
            cv, mean = min(runs)
            assert got["cv"][u] == pytest.approx(cv, abs=1e-9) and got["cv_mean_gap"][u] == pytest.approx(mean)
        else:
            assert math.isnan(got["cv"][u]) and math.isnan(got["cv_mean_gap"][u])


def test_key_required_outside_demo_mode(monkeypatch):
    monkeypatch.delenv("LIVEREC_ID_KEY", raising=False)
    with pytest.raises(ConfigError, match="LIVEREC_ID_KEY is not set"):
        cleaning.id_key(load_settings())
    assert cleaning.id_key(load_settings(overrides=["demo_mode=true"])) == b"liverec-demo-key-not-secret"
    monkeypatch.setenv("LIVEREC_ID_KEY", "s3cret")
    assert cleaning.id_key(load_settings()) == b"s3cret"


def test_balance_detects_loss():
    b = cleaning.Balance(10, 5, 3, 1, {"malformed": 3})
    assert not b.holds and "!=" in b.line()
    assert cleaning.Balance(9, 5, 3, 1, {"malformed": 3}).holds
    assert not cleaning.Balance(9, 5, 3, 1, {"malformed": 2}).holds


def test_value_limits_per_event_type(spark, settings_factory):
    s = settings_factory("clean.event_weights={view: 1, rating: 4, play: 1}",
                         "clean.value_limits={rating: 100, play: 1000000}")
    got = classify(spark, s, [ok(event_type="play", value="350000"), ok(event_type="rating", value="350000"),
                              ok(event_type="rating", value="4"), ok(event_type="view", value="20000"),
                              ok(event_type="play", value="2000000")])
    assert [got[i][1] for i in range(5)] == [None, "value_out_of_range", None, "value_out_of_range",
                                             "value_out_of_range"]


def test_count_events_strength_rule_in_spark_and_in_python(spark, settings_factory):
    """A count's strength is weight x (1 + ln(min(value, cap))): the Spark column (batch) and the Python
    function (online sessions) agree, and with count_events empty every event counts once."""
    import math

    from liverec import als

    s = settings_factory("als.count_events=[purchase]", "als.count_cap=100")
    weights = s.clean.event_weights
    cases = [("purchase", 24.0), ("purchase", 1.0), ("purchase", 0.5), ("purchase", None), ("purchase", 5000.0),
             ("rating", 4.0), ("view", 3.0)]
    df = spark.createDataFrame(cases, "event_type string, value double")
    got = [r[0] for r in df.select(als.event_strength(s.als, weights)).collect()]
    want = [weights["purchase"] * (1 + math.log(24)), weights["purchase"], weights["purchase"], weights["purchase"],
            weights["purchase"] * (1 + math.log(100)), weights["rating"] * 4, weights["view"]]
    assert got == pytest.approx(want)
    assert [als.event_strength_value(s.als, weights, t, v) for t, v in cases] == pytest.approx(want)
    # a rating that is also a count: both factors, in Spark and in Python
    both = settings_factory("als.count_events=[rating]", "als.count_cap=100")
    rating = spark.createDataFrame([("rating", 4.0)], "event_type string, value double")
    want_rating = weights["rating"] * 4 * (1 + math.log(4))
    assert rating.select(als.event_strength(both.als, weights)).first()[0] == pytest.approx(want_rating)
    assert als.event_strength_value(both.als, weights, "rating", 4.0) == pytest.approx(want_rating)
    plain = settings_factory()
    assert [r[0] for r in df.select(als.event_strength(plain.als, weights)).collect()][:2] == [weights["purchase"]] * 2


def test_bots_that_pace_themselves_are_quarantined_by_the_hour_and_cadence_rules(spark, conf):
    """A generated log (rates chosen here, away from the thresholds): three bots at a steady 20, 30 and 40 actions a
    minute for an hour, every interval jittered by up to 10%, are quarantined as bot_sustained_rate (1,200 to
    2,400 actions in the hour against clean.bot_max_actions_per_hour 600); a slow bot at 8 a minute for two hours
    (480 an hour) by its cadence (gaps' coefficient of variation about 0.06 < 0.1); people are not: a heavy rater
    with 150 actions in an hour in bursts, and someone with 300 actions over a day whose gaps vary."""
    import numpy as np

    rng = np.random.default_rng(3)
    t0 = 1710000000 - 1710000000 % 3600 + 1234  # not on an hour boundary

    def paced(user: str, per_minute: float, minutes: int) -> list[dict]:
        gaps = 60.0 / per_minute * rng.uniform(0.9, 1.1, size=int(per_minute * minutes))
        return [ok(user_id=user, item_id=f"i{k}", ts=str(int(round(t0 + t)))) for k, t in enumerate(np.cumsum(gaps))]

    bots = {u: paced(u, r, 60) for u, r in (("bot20", 20), ("bot30", 30), ("bot40", 40))}
    slow = paced("slow-bot", 8, 120)
    bursts = np.sort(np.concatenate([t0 + 600 * b + rng.exponential(4.0, 30).cumsum() for b in range(5)]))
    heavy = [ok(user_id="heavy", item_id=f"i{k}", ts=str(int(t))) for k, t in enumerate(bursts)]
    day = t0 + np.cumsum(rng.lognormal(5.0, 1.0, 300))
    person = [ok(user_id="person", item_id=f"i{k}", ts=str(int(t))) for k, t in enumerate(day)]
    rows = [*bots["bot20"], *bots["bot30"], *bots["bot40"], *slow, *heavy, *person]
    got = classify(spark, conf, rows)
    users = [r["user_id"] for r in rows]
    reasons = {}
    for i, u in enumerate(users):
        reasons.setdefault(u, set()).add(got[i])
    assert reasons["bot20"] == reasons["bot30"] == reasons["bot40"] == {("quarantine", "bot_sustained_rate")}
    assert reasons["slow-bot"] == {("quarantine", "bot_cadence")}
    assert reasons["heavy"] <= {("ok", None), ("duplicate", None)} and ("ok", None) in reasons["heavy"]
    assert reasons["person"] <= {("ok", None), ("duplicate", None)}
    # the detail says what was measured
    out = cleaning.classify(bronze(spark, rows), conf, DS, None)
    details = {r["user_id"]: r["_detail"] for r in out.where(F.col("_reason").startswith("bot")).collect()}
    assert details["bot20"].startswith("peak ") and details["bot20"].endswith(" actions/hour")
    assert int(details["bot20"].split()[1]) >= 900  # at least 45 minutes of 20 a minute in one of the two grids
    assert details["slow-bot"].startswith("50 actions 7.") and "coefficient of variation 0.0" in details["slow-bot"]
    # numpy over every run of 49 gaps between the slow bot's distinct timestamps: the steadiest run's cv and mean gap
    gaps = np.diff(np.unique([int(r["ts"]) for r in slow])).astype(np.float64)
    runs = np.lib.stride_tricks.sliding_window_view(gaps, 49)
    mean, cv = runs.mean(axis=1), runs.std(axis=1) / runs.mean(axis=1)
    best = int(np.argmin(np.where(mean <= 600, cv, np.inf)))
    assert details["slow-bot"] == (f"50 actions {mean[best]:.1f} s apart on average, gaps' coefficient of variation "
                                   f"{cv[best]:.3f}")


def test_a_campaign_of_fresh_accounts_pushing_one_item_is_quarantined_as_shilling(spark, conf, settings_factory):
    """A generated log over 30 days: 8 fake accounts, each rating 30 items (the target and 29 random fillers) at a
    person's pace (exponential gaps of 40 s), all starting within one hour; 60 regular users (30 items each, over
    the 30 days) and 60 fresh ones (30 items in one sitting at a random time), the target rated by 2 of them. Every
    campaign row is quarantined as shilling, every ordinary row kept. The margins, counted here with numpy on the
    two 3-hour grids: the campaign's 8 fresh accounts on the target in one window (min 5) at a lift (over what the
    target's other users predict) above 15 (min 10); no ordinary user shares an item-window with 5 fresh accounts.
    With the rule off (the default, clean.shilling_enabled false) every row is kept."""
    import numpy as np

    default, conf = conf, settings_factory("clean.shilling_enabled=true")
    rng = np.random.default_rng(11)
    day, days = 86400, 30
    t0 = 1710000000 - days * day
    catalogue = np.array([f"i{k}" for k in range(400)])
    popularity = 1.0 / np.arange(1, 401)
    popularity /= popularity.sum()
    rows: list[dict] = []

    def add(user: str, items, times) -> None:
        rows.extend(ok(user_id=user, item_id=str(i), event_type="rating", value=str(int(rng.integers(1, 6))),
                       ts=str(int(t))) for i, t in zip(items, times, strict=True))

    for u in range(60):
        add(f"regular{u}", rng.choice(catalogue, 30, replace=False, p=popularity),
            np.sort(t0 + rng.uniform(0, days * day, 30)))
    for u in range(60):
        items = rng.choice(catalogue, 30, replace=False, p=popularity).astype(object)
        if u < 2:
            items[0] = "target"
        add(f"fresh{u}", items, t0 + rng.uniform(0, days * day - 3600) + np.cumsum(rng.exponential(60.0, 30)))
    campaign_start = t0 + days * day + 600  # 1710000600: 70 minutes into a window of the first grid
    for u in range(8):
        items = np.r_[["target"], rng.choice(catalogue, 29, replace=False)]
        rng.shuffle(items)
        add(f"fake{u}", items, campaign_start + rng.uniform(0, 3600) + np.cumsum(rng.exponential(40.0, 30)))

    # the margins, by hand: distinct fresh accounts per (item, window), and the campaign's lift
    users = np.array([r["user_id"] for r in rows])
    items = np.array([r["item_id"] for r in rows])
    ts = np.array([int(r["ts"]) for r in rows])
    names = np.unique(users)
    span = {u: ts[users == u].max() - ts[users == u].min() for u in names}
    assert all(span[u] > day for u in names if u.startswith("regular"))
    assert all(span[u] < day for u in names if not u.startswith("regular"))
    for shift in (0, 5400):
        window = (ts + shift) // 10800
        crowd: dict = {}
        for i, w, u in {(i, w, u) for i, w, u in zip(items, window, users, strict=True) if span[u] <= day}:
            crowd.setdefault((i, w), set()).add(u)
        assert all(all(u.startswith("fake") for u in who) for who in crowd.values() if len(who) >= 5)
    window = ts // 10800
    fake_target = (items == "target") & np.char.startswith(users, "fake")
    (w,) = set(window[fake_target])  # the whole campaign in one window of the first grid
    active = len(set(users[window == w]))
    outside = len(set(users[(items == "target") & (window != w)]))
    assert outside == 2
    lift = 8 / ((outside + 1) * active / (len(names) - active))
    assert lift > 15, (lift, active)

    got = classify(spark, conf, rows)
    for i, r in enumerate(rows):
        want = ("quarantine", "shilling") if r["user_id"].startswith("fake") else ("ok", None)
        assert got[i] == want, (r, got[i])
    assert sum(1 for v in got.values() if v == ("quarantine", "shilling")) == 240
    out = cleaning.classify(bronze(spark, rows), conf, DS, None)
    assert {r["_detail"].split(" within")[0] for r in out.where(F.col("_reason") == "shilling").collect()} == {
        "one of 8 fresh accounts on item target"}
    off = classify(spark, default, rows)
    assert set(off.values()) == {("ok", None)}
