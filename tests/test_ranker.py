"""The deep ranker: leak-free examples, the model, a real two-process TorchDistributor run through
Petastorm, the MLflow registry and the promotion gate."""

import datetime as dt
import json

import mlflow
import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from liverec import lakehouse, tables
from liverec.cli import main
from liverec.metrics import ndcg_at_k
from liverec.ranker import examples as ex
from liverec.ranker.model import Ranker, RankerShape
from tests.conftest import DEMO_DS, T0, cli_args, silver


def _log(n_users=24, n_items=16, days=30, seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = u % 2
        for _ in range(12):
            item = int(rng.integers(0, n_items // 2)) + group * (n_items // 2)
            rows.append((f"u{u}", f"i{item}", str(rng.choice(["view", "click", "purchase"])),
                         float(rng.uniform(0, days))))
    return rows


def _side_inputs(spark, n_items=16, n_users=24):
    """Categories, text embeddings and friend edges for the _log catalogue, so every feature varies."""
    rng = np.random.default_rng(5)
    items = spark.createDataFrame([(f"i{i}", ["first" if i < n_items // 2 else "second", f"c{i % 3}"])
                                   for i in range(n_items)], "item_id string, categories array<string>")
    vecs = rng.normal(size=(n_items, 6))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    emb = spark.createDataFrame([(f"i{i}", vecs[i].astype(float).tolist()) for i in range(n_items)],
                                "item_id string, embedding array<float>")
    social = spark.createDataFrame([(f"u{u}", f"u{(u + 2) % n_users}", "1") for u in range(n_users)],
                                   "src string, dst string, weight string")
    return items, emb, social


def _examples(spark, settings, rows, items, emb, social):
    from liverec import candidates, features
    from liverec.cleaning import pseudonymise_value

    key = b"k"  # silver ids are pseudonyms, and the social edges get the same ones
    events = silver(spark, [(pseudonymise_value(u, key), *rest) for u, *rest in rows])
    history, held, cutoff = ex.label_split(events, settings)
    f = features.history_features(spark, history, items, emb, social, settings, key,
                                  str(settings.scratch_dir) + "/ckpt")
    users = held.select("user_id").distinct()
    out = ex.build_examples(candidates.candidate_rows(f, users, None, settings), held, settings)
    return {(r["user_id"], r["item_id"]): r for r in out.collect()}, history, held, cutoff


@pytest.mark.parametrize("split", ["random", "temporal"])
def test_features_never_see_the_held_out_pairs(spark, settings_factory, split):
    """Changing what is held out changes labels only: every feature of every candidate stays the same.

    random: more events (later than anything, of heavier types) on the held-out pairs; temporal: the events
    after the time cut-off move to other items, at the same times (so the cut-off stays where it was)."""
    settings = settings_factory(f"ranker.label_split={split}", "ranker.label_fraction=0.3", "als.max_iter=4")
    items, emb, social = _side_inputs(spark)
    rows = _log()
    plain, history, held, cutoff = _examples(spark, settings, rows, items, emb, social)
    if split == "random":
        from liverec.cleaning import pseudonymise_value

        raw = {pseudonymise_value(u, b"k"): u for u in {r[0] for r in rows}}
        pairs = {(raw[r["user_id"]], r["item_id"]) for r in held.collect()}
        extra = [(u, i, "purchase", 45.0) for u, i in sorted(pairs)]
        changed_rows = rows + extra
    else:
        cut_day = (cutoff - T0.replace(tzinfo=dt.UTC).timestamp()) / 86400.0
        changed_rows = [(u, f"i{(int(i[1:]) + 5) % 16}", t, d) if d >= cut_day else (u, i, t, d)
                        for u, i, t, d in rows]
    changed, history2, _, cutoff2 = _examples(spark, settings, changed_rows, items, emb, social)
    assert cutoff2 == cutoff and history2.count() == history.count()
    common = set(plain) & set(changed)
    assert len(common) > 50
    from liverec.features import DENSE_FEATURES

    for key in common:  # (the ALS fit's float sums may differ in the last bits between two runs)
        diff = [n for n, a, b in zip(DENSE_FEATURES, plain[key]["dense"], changed[key]["dense"], strict=True)
                if abs(a - b) > 1e-5 * max(1.0, abs(a))]
        assert not diff, (key, diff, plain[key]["dense"], changed[key]["dense"])
        assert plain[key]["recent_items"] == changed[key]["recent_items"], key
    # positives are held-out pairs the user had not had in the history; recent items all come from the history
    hist = {(r["user_id"], r["item_id"]) for r in history.collect()}
    lab = {(r["user_id"], r["item_id"]) for r in held.collect()}
    assert sum(r["label"] for r in plain.values()) > 10
    for key, r in plain.items():
        assert key not in hist
        assert (r["label"] == 1.0) == (key in lab)
        assert all((key[0], i) in hist for i in r["recent_items"])
    assert {r["split"] for r in plain.values()} == {"train", "valid"}
    assert len(DENSE_FEATURES) == len(next(iter(plain.values()))["dense"])
    # the side inputs reach the features: none of these is constant
    for name in ("content_cosine", "category_affinity", "log_friends_on_item", "ease_z", "als_z"):
        j = DENSE_FEATURES.index(name)
        assert len({round(r["dense"][j], 5) for r in plain.values()}) > 1, name


def test_model_masks_padding_and_ndcg():
    shape = RankerShape(n_items=6, id_dim=4, text_in=8, text_dim=3, n_dense=2, attention_hidden=5, cross_layers=2,
                        hidden_units=(8, 4), dropout=0.0)
    torch.manual_seed(0)
    model = Ranker(shape, np.random.default_rng(0).normal(size=(6, 4)), np.ones((6, 8)), np.zeros(2), np.ones(2))
    model.eval()
    item = torch.tensor([1, 2])
    dense = torch.tensor([[0.5, 1.0], [0.1, 0.2]])
    a = model(item, torch.tensor([[3, 4, 0, 0], [5, 0, 0, 0]]), dense)
    b = model(item, torch.tensor([[3, 4, 0], [5, 0, 0]]), dense)  # padding length does not matter
    assert torch.allclose(a, b) and a.shape == (2,)
    empty = model(item, torch.zeros(2, 4, dtype=torch.long), dense)  # no history: finite scores
    assert torch.isfinite(empty).all()
    # NDCG@10 by hand: user 1 ranks its positive 2nd (1/log2(3)); user 2 first (1); user 3 has no positive
    scores = np.array([0.9, 0.5, 0.1, 0.8, 0.2, 0.3])
    labels = np.array([0, 1, 0, 1, 0, 0])
    groups = np.array([1, 1, 1, 2, 2, 3])
    assert ndcg_at_k(scores, labels, groups, 10) == pytest.approx((1 / np.log2(3) + 1) / 2)


@pytest.mark.slow
def test_two_process_training_registry_and_gate(spark, demo_pipeline, capsys):
    """The pipeline trained the ranker with 2 DDP processes (gloo) through Petastorm and made it champion;
    the champion loads from the registry and scores as it did at the end of training; a worse model is
    registered but not promoted, and the decision names both numbers."""
    settings = demo_pipeline
    client = mlflow.MlflowClient(settings.tracking_uri())
    name, alias = settings.ranker.registered_model, settings.ranker.champion_alias
    champion = client.get_model_version_by_alias(name, alias)
    run = client.get_run(champion.run_id)
    assert run.data.params["num_processes_used"] == "2" and run.data.params["promotion.promoted"] == "True"
    epochs = client.get_metric_history(run.info.run_id, "val_ndcg_at_10")
    assert len(epochs) >= 2 and run.data.metrics["best_val_ndcg_at_10"] == max(m.value for m in epochs)
    assert run.data.metrics["pyfunc_val_ndcg_at_10"] == pytest.approx(run.data.metrics["best_val_ndcg_at_10"],
                                                                      abs=1e-9)
    examples = lakehouse.read(spark, settings, tables.RANKER_EXAMPLES).where(F.col("ds") == DEMO_DS)
    assert examples.where(F.col("label") == 1).count() > 0 and examples.select("split").distinct().count() == 2

    mlflow.set_tracking_uri(settings.tracking_uri())
    logged = json.loads(open(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                                  artifact_path="final_scores.json")).read())
    model = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
    import pandas as pd

    frame = pd.DataFrame(logged["input"])
    assert model.metadata.signature is not None and model.metadata.get_input_schema().input_names()[:2] == [
        "item_id", "recent_items"]
    assert np.array_equal(model.predict(frame)["score"].to_numpy(), np.array(logged["scores"]))
    # the version holds its compiled variants, each measured on the validation rows, the default one of them; the
    # full-precision ONNX graph scores the logged rows as eager PyTorch does
    from liverec.ranker import compiled

    assert logged["variant"] == run.data.params["default_variant"] and logged["variant"] in compiled.VARIANTS
    for variant in compiled.VARIANTS:
        assert run.data.metrics[f"variant.{variant}.pairs_per_s"] > 0
        assert 0 < run.data.metrics[f"variant.{variant}.ndcg_at_10"] <= 1
    assert run.data.metrics["variant.torch.ndcg_at_10"] == pytest.approx(run.data.metrics["best_val_ndcg_at_10"],
                                                                        abs=1e-9)
    assert run.data.metrics["variant.onnx.max_abs_diff"] <= 1e-4
    inner = model.unwrap_python_model()
    eager, onnx = inner.use(compiled.TORCH).scores(frame), inner.use(compiled.ONNX).scores(frame)
    assert np.max(np.abs(eager - onnx)) <= 1e-4

    # the gate's numbers: the champion's top N beat both baselines' on the validation users
    top_n = settings.recommend.top_n
    assert run.data.params["promotion.best_baseline"] in ("ease", "als")
    assert float(run.data.params[f"promotion.new_ndcg_at_{top_n}"]) > float(
        run.data.params[f"promotion.best_baseline_ndcg_at_{top_n}"])

    # an untrained model (learning rate 0) loses to the baselines: registered, not promoted, and the champion,
    # which still beats them on the same validation users, keeps the alias
    capsys.readouterr()
    assert main(["run", "train_ranker", *cli_args(settings), "--ds", DEMO_DS, "--set", "ranker.epochs=1",
                 "--set", "ranker.learning_rate=0.0", "--num-processes", "1", "--set", "ranker.export_variants=false",
                 "--set", "feedback.ope_gate=true"]) == 0
    out = capsys.readouterr().out
    assert "promoted=False" in out and "does not beat the best baseline" in out, out
    # the off-policy check is on, but no answer was logged: the decision says it was not applied
    assert "off-policy check not applied: no gold.feedback yet" in out, out
    assert "variants: " in out and "default=torch skipped=ranker.export_variants is false" in out, out
    assert client.get_model_version_by_alias(name, alias).version == champion.version
    latest = max(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    params = client.get_run(latest.run_id).data.params
    assert int(latest.version) == int(champion.version) + 1 and params["promotion.promoted"] == "False"
    assert float(params[f"promotion.champion_ndcg_at_{top_n}"]) > float(params[f"promotion.new_ndcg_at_{top_n}"])
    assert params["promotion.champion_removed"] == "False"

    # a champion that loses to the baselines loses its alias (judged again by promote_ranker)
    client.set_registered_model_alias(name, "doomed", latest.version)
    assert main(["run", "promote_ranker", *cli_args(settings), "--ds", DEMO_DS, "--version", str(latest.version),
                 "--set", "ranker.champion_alias=doomed"]) == 0
    assert "alias removed" in capsys.readouterr().out
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(name, "doomed")
    assert client.get_model_version_by_alias(name, alias).version == champion.version


def test_embedding_tables_from_the_vocabulary(spark):
    from liverec.ranker.train import tables_from_vocab

    vocab = spark.createDataFrame([("a", 1, [1.0, 2.0], [0.5, 0.5, 0.0]), ("b", 2, None, [0.0, 1.0, 0.0]),
                                   ("c", 3, [3.0, 4.0], None)],
                                  "item_id string, item_idx int, als_factor array<float>, text_embedding array<float>")
    id_init, text = tables_from_vocab(vocab, 2, seed=0)
    assert id_init.shape == (4, 2) and text.shape == (4, 3)  # row 0 is padding; text width from the data
    assert (id_init[0] == 0).all() and id_init[1].tolist() == [1.0, 2.0] and id_init[3].tolist() == [3.0, 4.0]
    assert 0 < abs(id_init[2]).max() < 0.1  # no factor: small random start
    assert text[2].tolist() == [0.0, 1.0, 0.0] and (text[3] == 0).all() and (text[0] == 0).all()


def test_shared_history_forward_equals_the_batch_forward():
    """The online path computes the user's recent-item representations once; the scores must not change."""
    import torch

    from liverec.ranker.model import Ranker, RankerShape

    torch.manual_seed(0)
    shape = RankerShape(n_items=50, id_dim=8, text_in=12, text_dim=4, n_dense=5, attention_hidden=6,
                        cross_layers=2, hidden_units=(16, 8), dropout=0.0)
    model = Ranker(shape, text_table=np.random.default_rng(0).normal(size=(50, 12))).eval()
    items = torch.tensor([3, 7, 0, 49, 12])
    recent = torch.tensor([5, 9, 0, 0, 14, 0])  # padding and unknown ids included
    dense = torch.randn(5, 5)
    with torch.no_grad():
        batch = model(items, recent.unsqueeze(0).expand(5, -1), dense)
        shared = model.forward_shared(items, recent, dense)
        empty = model.forward_shared(items, torch.zeros(6, dtype=torch.long), dense)
    assert torch.allclose(batch, shared, atol=1e-6)
    assert torch.isfinite(empty).all()


def test_score_examples_equals_the_plain_forward_row_by_row():
    """The nightly job's scoring path (rows of several users interleaved, unknown ids, an empty history) gives
    each row the plain ``Ranker.forward`` score of that row alone; a pyfunc that is not a liverec ranker is
    scored through its predict."""
    import pandas as pd

    from liverec.features import DENSE_FEATURES
    from liverec.ranker.pyfunc import RankerModel, score_examples

    torch.manual_seed(1)
    n_dense = len(DENSE_FEATURES)
    shape = RankerShape(n_items=9, id_dim=4, text_in=6, text_dim=3, n_dense=n_dense, attention_hidden=5,
                        cross_layers=1, hidden_units=(8,), dropout=0.0)
    state = {k: v.numpy() for k, v in Ranker(shape, text_table=np.random.default_rng(1).normal(size=(9, 6)))
             .state_dict().items()}
    vocab = {f"i{n}": n for n in range(1, 9)}
    model = RankerModel.from_parts(shape, state, vocab, recent_items=3)
    histories = {"a": ["i1", "i2", "i3", "i4"], "b": ["i5", "nope"], "c": []}
    rng = np.random.default_rng(2)
    rows = [(u, str(rng.choice([*vocab, "unknown"])), histories[u], rng.normal(size=n_dense).astype(np.float32))
            for u in ["a", "b", "a", "c", "b", "a", "c"]]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "recent_items", "dense"])
    got = score_examples(model, frame)

    plain = model.model.eval()  # the batch formulation, one row at a time, ids mapped by hand
    want = []
    for _, item, hist, dense in rows:
        recent = [vocab.get(i, 0) for i in hist][:3]
        with torch.no_grad():
            want.append(float(plain(torch.tensor([vocab.get(item, 0)]), torch.tensor([recent + [0] * (3 - len(recent))]),
                                    torch.tensor(dense[None, :]))[0]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    class Other:  # any other pyfunc: its predict over the pyfunc columns
        def predict(self, df):
            return pd.DataFrame({"score": df["als_z"].to_numpy() * 2.0})

    np.testing.assert_allclose(score_examples(Other(), frame), [2.0 * float(d[0]) for *_, d in rows], rtol=1e-6)


def test_a_negative_score_threads_is_one_clear_line(spark, settings, capsys):
    assert main(["run", "recommend_nightly", *cli_args(settings), "--ds", DEMO_DS,
                 "--set", "ranker.score_threads=-1"]) == 2
    assert "ranker.score_threads must be >= 0 (0 = torch's default), got -1" in capsys.readouterr().err


def test_shown_and_not_clicked_candidates_are_negatives_weighted_by_inverse_propensity(spark, settings_factory):
    """ranker.impression_negatives: what a user was shown and did not click (gold.feedback rows) becomes a kept
    negative of that user with weight sum(1 / propensity), clipped; a clicked impression, a held-out positive and a
    visitor's impression do not; the sampled-softmax lists carry log(weight) per negative, 0 for the positive."""
    settings = settings_factory("ranker.negatives_per_user=1", "ranker.validation_fraction=0.01")
    ids = [f"{p}{i}" for p in "ij" for i in range(8)]  # u1's candidates i*, u2's j*
    cands = spark.createDataFrame([("u1" if x[0] == "i" else "u2", x) for x in ids], "user_id string, item_id string")
    labels = spark.createDataFrame([("u1", "i0"), ("u2", "j0"), ("u1", "i7")], "user_id string, item_id string")
    feedback = spark.createDataFrame([
        ("u1", "i3", 0.5, False), ("u1", "i3", 0.25, False),  # twice: 2 + 4 = 6
        ("u1", "i4", 0.05, False),  # 20, clipped at 10
        ("u1", "i5", 0.5, True),  # clicked: not a negative
        ("u1", "i7", 0.5, False),  # a held-out positive stays a positive of weight 1
        (None, "i6", 0.5, False),  # a visitor
        ("u2", "j2", 1.0, False),  # the nightly list (propensity 1): weight 1
    ], "user_id string, item_id string, propensity double, clicked boolean")
    shown = ex.impression_negatives(feedback, 10.0)
    assert sorted(tuple(r) for r in shown.collect()) == [("u1", "i3", 6.0), ("u1", "i4", 10.0), ("u1", "i7", 2.0),
                                                         ("u2", "j2", 1.0)]
    out = {(r["user_id"], r["item_id"]): r for r in ex.build_examples(cands, labels, settings, shown).collect()}
    assert all(r["split"] == "train" for r in out.values())
    weights = {k: r["weight"] for k, r in out.items()}
    assert weights[("u1", "i3")] == 6.0 and weights[("u1", "i4")] == 10.0 and weights[("u2", "j2")] == 1.0
    assert weights[("u1", "i7")] == 1.0 and out[("u1", "i7")]["label"] == 1.0
    # kept: the positives, one drawn negative per user and the shown ones; every other weight is 1
    assert {k for k, r in out.items() if r["label"] == 0} >= {("u1", "i3"), ("u1", "i4"), ("u2", "j2")}
    assert sum(r["label"] == 0 for r in out.values()) <= 2 + 3
    assert all(w == 1.0 for k, w in weights.items() if k not in {("u1", "i3"), ("u1", "i4")})
    assert ex.build_examples(cands, labels, settings).where(F.col("weight") != 1.0).count() == 0

    rows = spark.createDataFrame(
        [(r["user_id"], r["item_id"], ids.index(r["item_id"]) + 1, r["label"], [float(r["label"])], [1, 2],
          r["weight"])
         for r in out.values()],
        "user_id string, item_id string, item_idx int, label double, dense array<float>, recent_idx array<int>, "
        "weight double")
    lists = ex.training_lists(rows, 3, 4, seed=1).collect()
    assert len(lists) == 3  # one per positive
    by_idx = {ids.index(k[1]) + 1: w for k, w in weights.items()}
    for lst in lists:
        assert lst["log_weight"][0] == 0.0 and len(lst["log_weight"]) == 5
        np.testing.assert_allclose(lst["log_weight"][1:], np.log([by_idx[i] for i in lst["item_idx"][1:]]), rtol=1e-6)


def test_a_negative_of_weight_w_counts_as_w_copies_in_the_sampled_softmax():
    """train.list_logits adds each negative's log weight: the training loss of a list whose second item weighs 3 is
    the loss of the same list with that item three times (logits from the model, copies built by hand)."""
    from liverec.ranker.train import list_logits

    torch.manual_seed(0)
    shape = RankerShape(n_items=8, id_dim=4, text_in=3, text_dim=2, n_dense=5, attention_hidden=4, cross_layers=1,
                        hidden_units=(6,), dropout=0.0)
    model = Ranker(shape).eval()
    dense = torch.randn(1, 3, 5)
    batch = {"item_idx": torch.tensor([[1, 2, 3]]), "recent_idx": torch.tensor([[4, 5, 0]]),
             "dense": dense.reshape(1, -1), "log_weight": torch.log(torch.tensor([[1.0, 3.0, 1.0]]))}
    copies = {"item_idx": torch.tensor([[1, 2, 2, 2, 3]]), "recent_idx": torch.tensor([[4, 5, 0]]),
              "dense": dense[:, [0, 1, 1, 1, 2]].reshape(1, -1)}
    target = torch.tensor([0])
    with torch.no_grad():
        weighted = torch.nn.functional.cross_entropy(list_logits(model, batch, "cpu"), target)
        repeated = torch.nn.functional.cross_entropy(list_logits(model, copies, "cpu"), target)
        plain = torch.nn.functional.cross_entropy(list_logits(model, {**batch, "log_weight": torch.zeros(1, 3)},
                                                              "cpu"), target)
    assert float(weighted) == pytest.approx(float(repeated), rel=1e-5) and float(weighted) > float(plain)
