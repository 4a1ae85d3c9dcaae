"""The ranker's compiled variants (liverec.ranker.compiled): the ONNX graph scores as eager PyTorch does, the
int8 graph is quantised and close, the variant report and the default rule, the conf check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from liverec.errors import InputError
from liverec.features import DENSE_FEATURES
from liverec.ranker import compiled
from liverec.ranker.model import Ranker, RankerShape
from liverec.ranker.pyfunc import RankerModel, score_examples, write_files

RECENT = 5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random ranker's files and its two ONNX graphs, and the eager model (exported once: about 10 s)."""
    torch.manual_seed(3)
    shape = RankerShape(n_items=40, id_dim=6, text_in=10, text_dim=4, n_dense=len(DENSE_FEATURES), attention_hidden=7,
                        cross_layers=2, hidden_units=(12, 6), dropout=0.0)
    rng = np.random.default_rng(3)
    net = Ranker(shape, text_table=rng.normal(size=(40, 10)), dense_mean=rng.normal(size=shape.n_dense),
                 dense_std=rng.uniform(0.5, 2.0, size=shape.n_dense)).eval()
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    vocab = {f"i{n}": n for n in range(1, 40)}
    folder = tmp_path_factory.mktemp("ranker")
    write_files(folder, shape, state, vocab, RECENT)
    files = compiled.export(net, folder, RECENT)
    return folder, files, net, vocab


def _rows(vocab, n_users=6, per_user=25, seed=0):
    """Candidate rows of several users, interleaved, with unknown ids, an empty and a full history."""
    rng = np.random.default_rng(seed)
    ids = [*vocab, "unknown-item"]
    histories = [list(rng.choice(ids, rng.integers(0, RECENT + 3))) for _ in range(n_users)]
    histories[0] = []
    rows = [(f"u{u}", str(rng.choice(ids)), histories[u], rng.normal(size=len(DENSE_FEATURES)).astype(np.float32),
             float(rng.random() < 0.2), bool(rng.random() < 0.8))
            for _ in range(per_user) for u in range(n_users)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "recent_items", "dense", "label", "sampled"])


def _eager(net, vocab, rows):
    """Each row alone through the plain ``Ranker.forward`` (the formulation the compiled graph does not use)."""
    item = torch.tensor([vocab.get(i, 0) for i in rows["item_id"]])
    recent = torch.zeros(len(rows), RECENT, dtype=torch.long)
    for r, hist in enumerate(rows["recent_items"]):
        idx = [vocab.get(i, 0) for i in hist][:RECENT]
        recent[r, :len(idx)] = torch.tensor(idx, dtype=torch.long)
    with torch.no_grad():
        return net(item, recent, torch.as_tensor(np.stack(rows["dense"].to_numpy()))).numpy().astype(np.float64)


def test_onnx_scores_as_eager_and_int8_is_quantised_and_close(exported):
    import onnx

    folder, files, net, vocab = exported
    rows = _rows(vocab)
    expected = _eager(net, vocab, rows)
    model = RankerModel.from_folder(folder)
    assert model.variant == compiled.TORCH  # write_files' default until a measurement says otherwise
    got = {v: score_examples(model.use(v), rows) for v in compiled.VARIANTS}
    assert np.max(np.abs(got[compiled.TORCH] - expected)) <= 1e-5
    assert np.max(np.abs(got[compiled.ONNX] - expected)) <= 1e-4
    # int8: really quantised (integer matrix products in the graph, none in the full-precision one), scores close
    ops = {v: {n.op_type for n in onnx.load(str(files[v])).graph.node} for v in (compiled.ONNX, compiled.INT8)}
    assert "MatMulInteger" in ops[compiled.INT8] and "MatMulInteger" not in ops[compiled.ONNX]
    err = np.abs(got[compiled.INT8] - expected)
    # (dynamic int8 on a tiny random model: ~7 % of the score spread on average; the NDCG cost is what train_ranker
    # measures and the default rule judges)
    assert 0 < err.max() and err.mean() <= 0.15 * expected.std()
    assert np.corrcoef(got[compiled.INT8], expected)[0, 1] > 0.95
    # the candidate axis is dynamic: one candidate, and many
    dense = np.stack(rows["dense"].to_numpy()[:39])
    one = model.use(compiled.ONNX).score_rows(np.array([3]), ["i1", "i2"], dense[2][None, :])
    many = model.score_rows(np.arange(1, 40), ["i1", "i2"], dense)
    assert one.shape == (1,) and many.shape == (39,) and np.isclose(one[0], many[2], atol=1e-5)


def test_a_version_without_compiled_files_says_so(tmp_path, exported):
    folder, _, net, vocab = exported
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("meta.json", "weights.npz", "vocab.json"):
        (bare / name).write_bytes((folder / name).read_bytes())
    model = RankerModel.from_folder(bare)
    with pytest.raises(ValueError, match="has no onnx variant .it has: torch."):
        model.use(compiled.ONNX)
    with pytest.raises(ValueError, match="unknown ranker variant"):
        model.use("fp16")
    assert compiled.choose(model, compiled.AUTO, 1).variant == compiled.TORCH


def test_measure_reports_every_variant_and_the_default_rule(exported):
    from liverec.metrics import ndcg_at_k

    folder, _, net, vocab = exported
    rows = _rows(vocab, n_users=8, seed=1)
    report, default = compiled.measure(RankerModel.from_folder(folder), rows, 10, 0.005)
    assert set(report) == set(compiled.VARIANTS) and default in report
    sampled = rows["sampled"].to_numpy()
    eager = _eager(net, vocab, rows)
    expected = ndcg_at_k(eager[sampled], rows["label"].to_numpy()[sampled],
                         pd.factorize(rows["user_id"][sampled])[0], 10)
    assert report[compiled.TORCH]["ndcg_at_10"] == pytest.approx(expected, abs=1e-9)
    assert report[compiled.TORCH]["max_abs_diff"] == 0.0 and report[compiled.ONNX]["max_abs_diff"] <= 1e-4
    assert all(r["pairs_per_s"] > 0 for r in report.values())


def test_default_of_takes_the_fastest_within_the_allowed_loss():
    def r(speed, ndcg, diff=0.0):
        return {"pairs_per_s": speed, "ndcg_at_10": ndcg, "max_abs_diff": diff}

    base = {"torch": r(80e3, 0.400), "onnx": r(120e3, 0.400, 3e-7), "int8": r(150e3, 0.398)}
    assert compiled.default_of(base, 10, 0.005) == "int8"  # loses 0.5 % exactly: allowed
    assert compiled.default_of({**base, "int8": r(150e3, 0.3979)}, 10, 0.005) == "onnx"  # loses more: not
    assert compiled.default_of({**base, "onnx": r(120e3, 0.4, 2e-4), "int8": r(150e3, 0.39)}, 10, 0.005) == "torch"
    assert compiled.default_of({"torch": r(80e3, 0.0), "int8": r(90e3, 0.0)}, 10, 0.005) == "int8"


def test_scoring_variant_is_checked():
    assert compiled.check_variant("auto") == "auto" and compiled.check_variant("int8") == "int8"
    with pytest.raises(InputError, match="ranker.scoring_variant must be auto or one of torch, onnx, int8"):
        compiled.check_variant("onnx-int4")


def test_a_missing_exporter_logs_an_eager_only_version_and_says_why(tmp_path, exported, monkeypatch):
    """Without onnx / onnxscript (the training extra) a ranker is still logged: eager PyTorch only, with the reason
    in its meta.json and a run tag (the exporter's ImportError injected: this venv has the packages)."""
    import mlflow

    from liverec.ranker.pyfunc import log_model, pyfunc_frame

    folder, _, net, vocab = exported

    def no_exporter(*args, **kwargs):
        raise ImportError("No module named 'onnxscript'")

    monkeypatch.setattr(compiled, "export", no_exporter)
    rows = _rows(vocab, n_users=3)
    shape = RankerModel.from_folder(folder).shape
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("missing-exporter")
    with mlflow.start_run() as run:
        info = log_model(shape, state, vocab, RECENT, pyfunc_frame(rows.head(3)), valid=rows)
    loaded = mlflow.pyfunc.load_model(info.model_uri).unwrap_python_model()
    assert loaded.variant == compiled.TORCH and loaded.variants == {}
    assert "No module named 'onnxscript'" in loaded.variants_skipped and "liverec[training]" in loaded.variants_skipped
    data = mlflow.get_run(run.info.run_id).data
    assert data.tags["variants_skipped"] == loaded.variants_skipped and data.params["default_variant"] == "torch"
    assert not any(k.startswith("variant.") for k in data.metrics)
    with pytest.raises(ValueError, match="has no onnx variant"):
        loaded.use(compiled.ONNX)


def test_a_variant_the_version_lacks_is_refused_on_the_driver(tmp_path, exported):
    folder, _, _, _ = exported
    bare = tmp_path / "model" / "artifacts"
    bare.mkdir(parents=True)
    (bare / "meta.json").write_bytes((folder / "meta.json").read_bytes())
    for name in ("auto", "torch"):
        compiled.require(tmp_path / "model", name, "models:/r/1")  # eager PyTorch: every version has it
    with pytest.raises(InputError, match=r"scoring_variant=int8, but models:/r/1 has no int8 variant .it has: torch."):
        compiled.require(tmp_path / "model", "int8", "models:/r/1")
    compiled.require(folder, "int8", "models:/r/2")  # the exported one holds both
    compiled.require(tmp_path / "empty", "onnx", "models:/other/1")  # not a liverec ranker: its own checks
