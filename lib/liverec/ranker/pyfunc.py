"""The ranker as an MLflow pyfunc model (registration and the promotion gate: ``liverec.registry``).

The pyfunc takes one row per (user, candidate item): ``item_id``, ``recent_items`` (the user's recent
item ids, newest first) and the dense features by name (``examples.DENSE_FEATURES``), and returns one
``score`` per row (a logit: higher is better). It carries its item vocabulary, weights and shape, so
``models:/liverec-ranker@champion`` needs nothing but this package to score.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd

from liverec.features import DENSE_FEATURES
from liverec.metrics import ndcg_at_k
from liverec.ranker.model import RankerShape

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # lib/liverec, shipped with the model as code


class RankerModel(mlflow.pyfunc.PythonModel):
    @classmethod
    def from_parts(cls, shape: RankerShape, state: dict[str, np.ndarray], vocab: dict[str, int],
                   recent_items: int) -> RankerModel:
        """The scorer without MLflow (benchmarks, tests): the same code path as the served model."""
        from liverec.ranker.train import load_model

        self = cls()
        self.shape, self.recent_len, self.vocab = shape, int(recent_items), vocab
        self.model = load_model(shape, state)
        return self

    def load_context(self, context: Any) -> None:
        from liverec.ranker.train import load_model

        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        with np.load(context.artifacts["weights"]) as z:
            state = {k: z[k] for k in z.files}
        self.shape = RankerShape.from_dict(meta["shape"])
        self.recent_len = int(meta["recent_items"])
        self.vocab = json.loads(Path(context.artifacts["vocab"]).read_text())
        self.model = load_model(self.shape, state)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return pd.DataFrame({"score": self.scores(model_input)})

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """One score per row of the pyfunc's input columns (``score_arrays`` does the work)."""
        missing = [c for c in ("item_id", "recent_items", *DENSE_FEATURES) if c not in frame.columns]
        if missing:
            raise ValueError(f"ranker input lacks columns {missing}")
        return self.score_arrays(frame["item_id"], frame["recent_items"],
                                 frame[list(DENSE_FEATURES)].to_numpy(dtype=np.float32))

    def score_arrays(self, item_ids: pd.Series, recent_items: pd.Series, dense: np.ndarray) -> np.ndarray:
        """One score per row: item ids, each row's recent item ids (newest first) and a (rows, DENSE_FEATURES)
        matrix. Rows that share their recent items (a user's candidates) are scored as one list."""
        item = item_ids.astype(str).map(self.vocab).fillna(0).to_numpy(dtype=np.int64)
        dense = np.asarray(dense, dtype=np.float32)
        keys = [tuple(x) if x is not None else () for x in recent_items]
        codes, uniques = pd.factorize(pd.Series(keys, dtype=object))
        out = np.zeros(len(item), dtype=np.float64)
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0, True])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            rows = order[a:b]
            out[rows] = self._list_scores(item[rows], uniques[codes[rows[0]]], dense[rows])
        return out

    def score_ids(self, items: list[str], recent_items: list[str], dense: np.ndarray) -> np.ndarray:
        """Scores of ``items`` for one user: the same recent items (newest first) and a dense row per item
        (DENSE_FEATURES order). The online scorer's path: no DataFrame per request."""
        item = np.array([self.vocab.get(str(i), 0) for i in items], dtype=np.int64)
        return self._list_scores(item, recent_items, np.asarray(dense, dtype=np.float32))

    def score_rows(self, item_idx: np.ndarray, recent_items: list[str], dense: np.ndarray) -> np.ndarray:
        """``score_ids`` with the items given as vocabulary indices (the online scorer maps its catalogue once)."""
        return self._list_scores(np.asarray(item_idx, dtype=np.int64), recent_items,
                                 np.asarray(dense, dtype=np.float32))

    def _list_scores(self, item_idx: np.ndarray, recent_items: Any, dense: np.ndarray) -> np.ndarray:
        """One user's list (``Ranker.forward_shared``: the history is encoded once, not once per candidate)."""
        import torch

        recent = np.zeros(self.recent_len, dtype=np.int64)
        idx = [self.vocab.get(str(i), 0) for i in recent_items][:self.recent_len]
        recent[:len(idx)] = idx
        with torch.inference_mode():  # no autograd bookkeeping at all (a tenth of the online request's time)
            out = self.model.forward_shared(torch.as_tensor(item_idx), torch.as_tensor(recent),
                                            torch.as_tensor(dense))
        return out.numpy().astype(np.float64)


def score_examples(model: Any, rows: pd.DataFrame) -> np.ndarray:
    """Scores of example rows (item_id, recent_items, dense array: what ``liverec.features.assemble`` writes) by a
    loaded ranker pyfunc (or a ``RankerModel``). A liverec ranker scores them through its own ``score_arrays``:
    the rows come from the feature code, so MLflow's per-row input check, which costs ten times the model on
    the list column (benchmarks/results/ranker_scoring.md), is skipped; any other pyfunc goes through
    ``predict``. Same scores either way (the pyfunc's float64 columns are the float32 features widened)."""
    inner = model.unwrap_python_model() if hasattr(model, "unwrap_python_model") else model
    if hasattr(inner, "score_arrays"):
        dense = np.stack(rows["dense"].to_numpy()) if len(rows) else np.zeros((0, len(DENSE_FEATURES)))
        return inner.score_arrays(rows["item_id"], rows["recent_items"], dense)
    return np.asarray(model.predict(pyfunc_frame(rows))["score"], dtype=np.float64)


def pyfunc_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Examples (item_id, recent_items, dense array) -> the pyfunc's input columns."""
    dense = np.stack(rows["dense"].to_numpy()).astype(np.float64) if len(rows) else \
        np.zeros((0, len(DENSE_FEATURES)))
    out = pd.DataFrame({"item_id": rows["item_id"].astype(str).to_numpy(),
                        "recent_items": [list(x) if x is not None else [] for x in rows["recent_items"]]})
    for i, name in enumerate(DENSE_FEATURES):
        out[name] = dense[:, i]
    return out


def log_model(shape: RankerShape, state: dict[str, np.ndarray], vocab: dict[str, int], recent_items: int,
              example: pd.DataFrame, name: str = "ranker") -> Any:
    """Log the pyfunc (with signature and input example) to the active run; returns MLflow's ModelInfo."""
    with tempfile.TemporaryDirectory(prefix="liverec-ranker-") as folder:  # MLflow copies the artifacts
        return _log_model(Path(folder), shape, state, vocab, recent_items, example, name)


def _log_model(tmp: Path, shape: RankerShape, state: dict[str, np.ndarray], vocab: dict[str, int],
               recent_items: int, example: pd.DataFrame, name: str) -> Any:
    from mlflow.models import infer_signature

    np.savez(tmp / "weights.npz", **state)
    (tmp / "meta.json").write_text(json.dumps({"shape": shape.to_dict(), "recent_items": recent_items,
                                               "dense_features": list(DENSE_FEATURES)}))
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    model = RankerModel()
    model.load_context(type("Ctx", (), {"artifacts": {"meta": str(tmp / "meta.json"),
                                                      "weights": str(tmp / "weights.npz"),
                                                      "vocab": str(tmp / "vocab.json")}})())
    signature = infer_signature(example, model.predict(None, example))
    return mlflow.pyfunc.log_model(
        name=name, python_model=model, signature=signature, input_example=example,
        artifacts={"meta": str(tmp / "meta.json"), "weights": str(tmp / "weights.npz"), "vocab": str(tmp / "vocab.json")},
        code_paths=[str(PACKAGE_DIR)], pip_requirements=["torch", "numpy", "pandas"])


def log_and_check(result: Any, vocab: Any, recent_items: int, valid: pd.DataFrame, k: int
                  ) -> tuple[Any, Any, np.ndarray]:
    """Log the trained ranker (a ``train.TrainResult``; ``vocab`` its gold.ranker_items rows) as a pyfunc to the
    active run, load it back and score the validation rows with it: (ModelInfo, the loaded pyfunc, its scores
    of ``valid``). On the ``sampled`` rows the loaded model must reproduce the training loop's validation NDCG
    (the metric ``pyfunc_val_ndcg_at_<k>``, k = ``ranker.val_k``; ``final_scores.json`` keeps inputs and scores)."""
    ids = vocab.select("item_id", "item_idx").toPandas()  # the model's vocabulary, through Arrow
    vocab_map = dict(zip(ids["item_id"], ids["item_idx"].astype(int).tolist(), strict=True))
    info = log_model(result.shape, result.state, vocab_map, recent_items, pyfunc_frame(valid.head(5)))
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    scores = score_examples(pyfunc, valid)
    sampled = valid["sampled"].to_numpy(dtype=bool)
    groups = pd.factorize(valid["user_id"][sampled])[0]
    mlflow.log_metric(f"pyfunc_val_ndcg_at_{k}", ndcg_at_k(
        scores[sampled], valid["label"].to_numpy(dtype=np.float64)[sampled], groups, k))
    final = pyfunc_frame(valid.head(50))
    mlflow.log_dict({"input": final.to_dict(orient="list"), "scores": pyfunc.predict(final)["score"].tolist()},
                    "final_scores.json")
    return info, pyfunc, scores
