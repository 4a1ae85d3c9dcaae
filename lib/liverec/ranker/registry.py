"""The ranker as an MLflow pyfunc model, its registration, and the promotion gate.

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

from liverec.ranker.examples import DENSE_FEATURES
from liverec.ranker.model import RankerShape, ndcg_at_k

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
        missing = [c for c in ("item_id", "recent_items", *DENSE_FEATURES) if c not in frame.columns]
        if missing:
            raise ValueError(f"ranker input lacks columns {missing}")
        item = np.array([self.vocab.get(str(i), 0) for i in frame["item_id"]], dtype=np.int64)
        recent = np.zeros((len(frame), self.recent_len), dtype=np.int64)
        for row, ids in enumerate(frame["recent_items"]):
            idx = [self.vocab.get(str(i), 0) for i in (list(ids) if ids is not None else [])][:self.recent_len]
            recent[row, :len(idx)] = idx
        return self._forward(item, recent, frame[list(DENSE_FEATURES)].to_numpy(dtype=np.float32))

    def score_ids(self, items: list[str], recent_items: list[str], dense: np.ndarray) -> np.ndarray:
        """Scores of ``items`` for one user: the same recent items (newest first) and a dense row per item
        (DENSE_FEATURES order). The online scorer's path: no DataFrame per request."""
        import torch

        item = np.array([self.vocab.get(str(i), 0) for i in items], dtype=np.int64)
        recent = np.zeros(self.recent_len, dtype=np.int64)
        idx = [self.vocab.get(str(i), 0) for i in recent_items][:self.recent_len]
        recent[:len(idx)] = idx
        with torch.no_grad():
            out = self.model.forward_shared(torch.as_tensor(item), torch.as_tensor(recent),
                                            torch.as_tensor(np.asarray(dense, dtype=np.float32)))
        return out.numpy().astype(np.float64)

    def _forward(self, item: np.ndarray, recent: np.ndarray, dense: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.model(torch.as_tensor(item), torch.as_tensor(recent), torch.as_tensor(dense))
        return out.numpy().astype(np.float64)


def pyfunc_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Examples (item_id, recent_items, dense array) -> the pyfunc's input columns."""
    dense = np.stack(rows["dense"].to_numpy()).astype(np.float64) if len(rows) else \
        np.zeros((0, len(DENSE_FEATURES)))
    out = pd.DataFrame({"item_id": rows["item_id"].astype(str).to_numpy(),
                        "recent_items": [list(x) if x is not None else [] for x in rows["recent_items"]]})
    for i, name in enumerate(DENSE_FEATURES):
        out[name] = dense[:, i]
    return out


def validation_ndcg(scorer: Any, rows: pd.DataFrame) -> float:
    """NDCG@10 per user over ``rows`` (examples with user_id and label), scored by ``scorer``."""
    scores = np.asarray(scorer(pyfunc_frame(rows)), dtype=np.float64).reshape(-1)
    groups = pd.factorize(rows["user_id"])[0]
    return ndcg_at_k(scores, rows["label"].to_numpy(dtype=np.float64), groups, 10)


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


def promote(name: str, alias: str, version: str, new_ndcg: float, valid_rows: pd.DataFrame) -> dict[str, Any]:
    """Set ``alias`` on ``version`` when it beats the current holder's NDCG@10 on *these* validation rows (the
    champion is re-scored on them, so both numbers measure the same thing), or when there is none."""
    client = mlflow.MlflowClient()
    try:
        champion = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        champion = None
    decision: dict[str, Any] = {"new_version": version, "new_val_ndcg_at_10": new_ndcg}
    if champion is None:
        decision.update(promoted=True, reason="no champion yet", champion_version=None, champion_val_ndcg_at_10=None)
    else:
        try:
            old = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
            old_ndcg = validation_ndcg(lambda f: old.predict(f)["score"].to_numpy(), valid_rows)
        except (ValueError, KeyError, mlflow.exceptions.MlflowException) as err:
            # e.g. the feature set changed since the champion was trained: it cannot score today's inputs,
            # so it could not serve them either; the new version replaces it, and the run says why
            decision.update(promoted=True, champion_version=champion.version, champion_val_ndcg_at_10=None,
                            reason=f"champion v{champion.version} cannot score this run's examples ({err})")
        else:
            better = new_ndcg > old_ndcg
            decision.update(promoted=better, champion_version=champion.version, champion_val_ndcg_at_10=old_ndcg,
                            reason=("beats" if better else "does not beat") +
                            f" champion v{champion.version}: {new_ndcg:.4f} vs {old_ndcg:.4f}")
    if decision["promoted"]:
        client.set_registered_model_alias(name, alias, version)
    return decision
