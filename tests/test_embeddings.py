"""Item embeddings with the real packaged all-MiniLM-L6-v2: texts and their fallbacks, incremental runs,
content vectors in profiles, and content candidates (cold items, new users) in the nightly job."""

import dataclasses
import re

import numpy as np
import pytest
from pyspark.sql import functions as F

from liverec import embeddings, fallback, lakehouse, profiles, tables
from liverec.cli import main
from tests.conftest import cli_args, silver

DS1, DS2 = "2024-01-15", "2024-01-16"


def _items(spark, rows):
    return spark.createDataFrame(rows, "item_id string, title string, categories array<string>, description string")


def test_item_texts_fallbacks_and_real_vectors(spark, settings):
    conf = settings.embeddings
    items = _items(spark, [
        ("a", "Star Wars (1977)", ["Sci-Fi", "War"], None),
        ("b", "   ", ["Garden", " "], ""),  # blank title and description: the category names stand in
        ("c", None, [], None),  # nothing to encode: no vector, counted by the job
        ("d", "", None, "A red enamel mug"),
    ])
    texts = {r["item_id"]: r for r in embeddings.item_texts(items, conf).collect()}
    assert texts["a"]["text"] == "Star Wars (1977). Sci-Fi, War" and texts["a"]["text_source"] == "text"
    assert texts["b"]["text"] == "Garden" and texts["b"]["text_source"] == "category"
    assert texts["c"]["text"] is None and texts["c"]["text_source"] is None and texts["c"]["text_hash"] is None
    assert texts["d"]["text"] == "A red enamel mug" and texts["d"]["text_source"] == "text"

    with_text = embeddings.item_texts(items, conf).where(F.col("text").isNotNull())
    got = {r["item_id"]: np.array(r["embedding"]) for r in embeddings.encode(with_text, conf, 2).collect()}
    assert set(got) == {"a", "b", "d"}
    for v in got.values():
        assert v.shape == (384,) and np.isfinite(v).all() and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    # the same text encodes the same way in the driver
    assert np.allclose(got["d"], embeddings.encode_texts(["A red enamel mug"], conf)[0], atol=1e-5)


def test_incremental_plan_keeps_unchanged_vectors(spark, settings):
    conf = settings.embeddings
    before = embeddings.item_texts(_items(spark, [("a", "Mug", None, None), ("b", "Pot", None, None)]), conf)
    previous = before.withColumn("embedding", F.array(F.lit(1.0).cast("float")))
    after = embeddings.item_texts(_items(spark, [("a", "Mug", None, None), ("b", "Big pot", None, None),
                                                 ("c", "Pan", None, None)]), conf)
    to_encode, reused = embeddings.plan_incremental(after, previous)
    assert sorted(r["item_id"] for r in to_encode.collect()) == ["b", "c"]  # changed text, new item
    assert [r["item_id"] for r in reused.collect()] == ["a"]
    other_model = embeddings.item_texts(_items(spark, [("a", "Mug", None, None)]),
                                        dataclasses.replace(conf, model="another-model"))
    assert embeddings.plan_incremental(other_model, previous)[0].count() == 1  # a new model re-encodes


def test_content_vector_is_the_weighted_mean(spark):
    weighted = spark.createDataFrame([("u", "a", 3.0), ("u", "b", 1.0), ("u", "x", 5.0), ("v", "x", 2.0)],
                                     "user_id string, item_id string, w double")
    emb = spark.createDataFrame([("a", [1.0, 0.0, 0.0]), ("b", [0.0, 1.0, 0.0])],
                                "item_id string, embedding array<float>")
    got = {r["user_id"]: np.array(r["content_vector"]) for r in
           embeddings.user_content_vectors(weighted, emb).collect()}
    assert set(got) == {"u"}  # v's only item has no vector
    expected = np.array([3.0, 1.0, 0.0]) / np.linalg.norm([3.0, 1.0, 0.0])
    assert np.allclose(got["u"], expected, atol=1e-6)


def test_profiles_of_a_log_spanning_twenty_years(spark, settings):
    """Users whose events are all decades older than the log's newest still get a content vector and
    category shares (recency counts back from each user's own newest event: no underflow, no empty-frame
    dtype trap in the content-vector UDF); their weights follow their own events' ages."""
    import datetime as dt

    from liverec import profiles
    from tests.conftest import silver

    years = 365.25
    rows = [("old", "a", "view", 0.0), ("old", "b", "purchase", 30.0),  # 1990s, 30 days apart
            ("new", "a", "view", 20 * years), ("new", "c", "view", 20 * years + 1)]
    events = silver(spark, rows)
    emb = spark.createDataFrame([("a", [1.0, 0.0, 0.0]), ("b", [0.0, 1.0, 0.0]), ("c", [0.0, 0.0, 1.0])],
                                "item_id string, embedding array<float>")
    items = spark.createDataFrame([("a", ["x"]), ("b", ["y"]), ("c", ["z"])], "item_id string, categories array<string>")
    got = {r["user_id"]: r for r in profiles.build_profiles(events, items, None, settings.profiles,
                                                            settings.clean.event_weights, b"k", emb).collect()}
    assert set(got) == {"old", "new"}
    hl = settings.profiles.half_life_days
    w = settings.clean.event_weights
    a, b = w["view"] * 0.5 ** (30 / hl), w["purchase"]  # ages from the user's newest event (day 30)
    old = np.array(got["old"]["content_vector"])
    np.testing.assert_allclose(old, np.array([a, b, 0.0]) / np.hypot(a, b), atol=1e-6)
    assert got["old"]["category_affinity"]["y"] == pytest.approx(b / (a + b))
    assert got["new"]["content_vector"] is not None and got["old"]["last_seen"] < got["new"]["first_seen"] - \
        dt.timedelta(days=19 * years)


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.slow
def test_embed_items_job_counts_skips_and_reencodes_only_changes(spark, settings, tmp_path, capsys):
    events = _write(tmp_path / "events.csv", "user_id,item_id,event_type,value,ts\nu1,i1,view,,2024-01-14T10:00:00\n")
    items_v1 = _write(tmp_path / "items1.csv", "item_id,title,category,description,price\n"
                      "i1,Blue ceramic mug,kitchen,,3.5\ni2,Garden hose 20m,garden,,12\n"
                      "i3,,garden|tools,,4\ni4,,,,1\n")
    args = [*cli_args(settings), "--source", "events", "--input", events]
    assert main(["run", "ingest", *args, "--items", items_v1, "--ds", DS1]) == 0
    assert main(["run", "embed_items", *cli_args(settings), "--ds", DS1]) == 0
    out = capsys.readouterr().out
    assert "item texts: 4 rows" in out and "category_fallback=1 no_text_skipped=1" in out
    assert re.search(r"encode: 3 rows, .* reused=0 ", out), out
    emb = lakehouse.read(spark, settings, tables.ITEM_EMBEDDINGS).where(F.col("ds") == DS1)
    rows = {r["item_id"]: r for r in emb.collect()}
    assert set(rows) == {"i1", "i2", "i3"} and rows["i3"]["text_source"] == "category"
    assert all(np.isfinite(r["embedding"]).all() for r in rows.values())
    near = lakehouse.read(spark, settings, tables.ITEM_NEIGHBORS).where(F.col("ds") == DS1)
    assert near.count() == 3 * 2 and near.where(F.col("item_id") == F.col("neighbor_id")).count() == 0

    # the next day one title changed: only that item is encoded again
    items_v2 = _write(tmp_path / "items2.csv", "item_id,title,category,description,price\n"
                      "i1,Blue ceramic mug,kitchen,,3.5\ni2,Garden hose 30m,garden,,12\n"
                      "i3,,garden|tools,,4\ni4,,,,1\n")
    assert main(["run", "ingest", *args, "--items", items_v2, "--ds", DS2]) == 0
    assert main(["run", "embed_items", *cli_args(settings), "--ds", DS2]) == 0
    out = capsys.readouterr().out
    assert re.search(r"encode: 1 rows, .* reused=2 reused_from_ds=2024-01-15", out), out
    day2 = {r["item_id"]: r["embedding"] for r in
            lakehouse.read(spark, settings, tables.ITEM_EMBEDDINGS).where(F.col("ds") == DS2).collect()}
    assert day2["i1"] == rows["i1"]["embedding"] and day2["i2"] != rows["i2"]["embedding"]
    # a rerun of the same date encodes nothing and leaves the same rows
    assert main(["run", "embed_items", *cli_args(settings), "--ds", DS2]) == 0
    assert re.search(r"encode: 0 rows, .* reused=3 ", capsys.readouterr().out)


def test_content_candidates_for_new_users_and_cold_items(spark, settings):
    """With content slots on (off by default), ALS users get a slot for a cold item close to their taste; a user
    ALS does not know gets content."""
    conf = dataclasses.replace(settings.recommend, content_slots=2)
    x, y = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    emb_rows = [(f"x{i}", x) for i in range(6)] + [(f"y{i}", y) for i in range(6)] + [("xcold", [0.9, 0.1, 0.0])]
    emb = spark.createDataFrame(emb_rows, "item_id string, embedding array<float>")
    items = spark.createDataFrame([(i, f"Item {i}", ["c"]) for i, _ in emb_rows],
                                  "item_id string, title string, categories array<string>")
    rows = []
    for u in range(8):  # 8 users who like x items (so no x item is cold), 8 who like y items
        rows += [(f"ux{u}", f"x{i}", "purchase", 20 + i) for i in range(u % 3, u % 3 + 3)]
        rows += [(f"uy{u}", f"y{i}", "purchase", 20 + i) for i in range(u % 3, u % 3 + 3)]
    rows += [("newbie", "y0", "click", 25), ("newbie", "y1", "view", 26)]
    events = silver(spark, rows)
    key = b"k"
    prof = profiles.build_profiles(events, items, None, settings.profiles, settings.clean.event_weights, key, emb)
    known = [f"ux{u}" for u in range(8)] + [f"uy{u}" for u in range(8)]
    uf = spark.createDataFrame([(u, n, x if u.startswith("ux") else y) for n, u in enumerate(known)],
                               "user_id string, user_idx int, features array<float>")
    itf = spark.createDataFrame([(i, n, v) for n, (i, v) in enumerate(emb_rows[:-1])],  # ALS never saw xcold
                                "item_id string, item_idx int, features array<float>")
    recs = fallback.nightly(events, items, prof, uf, itf, "run1", conf, "2024-03-10", emb, "content:test@d")
    got = recs.collect()
    by_user = {}
    for r in got:
        by_user.setdefault(r["user_id"], []).append(r)
    newbie = sorted(by_user["newbie"], key=lambda r: r["rank"])
    assert {r["source"] for r in newbie} == {"content"}
    assert [r["item_id"][0] for r in newbie[:4]] == ["y"] * 4  # the y items it did not see, first
    assert newbie[0]["reason"].startswith('Similar to "Item y') and newbie[0]["model_version"] == "content:test@d"
    for u in range(8):
        lst = sorted(by_user[f"ux{u}"], key=lambda r: r["rank"])
        assert [r["rank"] for r in lst] == list(range(1, len(lst) + 1))
        cold = [r for r in lst if r["item_id"] == "xcold"]
        assert len(cold) == 1 and cold[0]["source"] == "content"  # the cold x item reaches every x user
        assert cold[0]["reason"].startswith("Few have found it yet; close to")
        assert all(r["item_id"] != "xcold" for r in by_user[f"uy{u}"])  # ... and no y user (cosine 0.11 < 0.3)
    seen = {(r[0], r[1]) for r in rows}
    assert not any((r["user_id"], r["item_id"]) in seen for r in got)
