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

from liverec.features import DENSE_FEATURES
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
        """One score per row. Rows that share their recent items (a user's candidates) are scored as one list
        (``Ranker.forward_shared``: the history is encoded once per list, not once per row)."""
        import torch

        missing = [c for c in ("item_id", "recent_items", *DENSE_FEATURES) if c not in frame.columns]
        if missing:
            raise ValueError(f"ranker input lacks columns {missing}")
        item = frame["item_id"].astype(str).map(self.vocab).fillna(0).to_numpy(dtype=np.int64)
        dense = frame[list(DENSE_FEATURES)].to_numpy(dtype=np.float32)
        keys = [tuple(x) if x is not None else () for x in frame["recent_items"]]
        codes, uniques = pd.factorize(pd.Series(keys, dtype=object))
        out = np.zeros(len(frame), dtype=np.float64)
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0, True])
        with torch.no_grad():
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                rows = order[a:b]
                ids = [self.vocab.get(str(i), 0) for i in uniques[codes[rows[0]]]][:self.recent_len]
                recent = np.zeros(self.recent_len, dtype=np.int64)
                recent[:len(ids)] = ids
                got = self.model.forward_shared(torch.as_tensor(item[rows]), torch.as_tensor(recent),
                                                torch.as_tensor(dense[rows]))
                out[rows] = got.numpy()
        return out

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


def log_and_check(result: Any, vocab: Any, recent_items: int, valid: pd.DataFrame) -> tuple[Any, Any, np.ndarray]:
    """Log the trained ranker (a ``train.TrainResult``; ``vocab`` its gold.ranker_items rows) as a pyfunc to the
    active run, load it back and score the validation rows with it: (ModelInfo, the loaded pyfunc, its scores
    of ``valid``). On the ``sampled`` rows the loaded model must reproduce the training loop's validation NDCG
    (the metric ``pyfunc_val_ndcg_at_10``; ``final_scores.json`` keeps inputs and scores)."""
    ids = vocab.select("item_id", "item_idx").toPandas()  # the model's vocabulary, through Arrow
    vocab_map = dict(zip(ids["item_id"], ids["item_idx"].astype(int).tolist(), strict=True))
    info = log_model(result.shape, result.state, vocab_map, recent_items, pyfunc_frame(valid.head(5)))
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    scores = pyfunc.predict(pyfunc_frame(valid))["score"].to_numpy()
    sampled = valid["sampled"].to_numpy(dtype=bool)
    groups = pd.factorize(valid["user_id"][sampled])[0]
    mlflow.log_metric("pyfunc_val_ndcg_at_10", ndcg_at_k(
        scores[sampled], valid["label"].to_numpy(dtype=np.float64)[sampled], groups, 10))
    final = pyfunc_frame(valid.head(50))
    mlflow.log_dict({"input": final.to_dict(orient="list"), "scores": pyfunc.predict(final)["score"].tolist()},
                    "final_scores.json")
    return info, pyfunc, scores


BASELINES = ("ease", "als")  # the baselines whose lists the validation candidates hold (their rank columns)
BEST_BASELINE_TAG = "best_baseline"  # registered-model tag: the baseline the last gate measured best


def top_n_ndcg(rows: pd.DataFrame, order: np.ndarray, n: int) -> float:
    """Mean NDCG@n over the users of ``rows`` (user_id, label, n_labels) when each user's list is their rows by
    ``order`` (higher first; NaN = not in the list), the ideal DCG over min(n_labels, n) items."""
    if rows.empty:
        return 0.0
    frame = pd.DataFrame({"u": rows["user_id"].to_numpy(), "o": np.asarray(order, dtype=np.float64),
                          "y": rows["label"].to_numpy(dtype=np.float64),
                          "m": rows["n_labels"].to_numpy(dtype=np.int64)})
    listed = frame[np.isfinite(frame["o"])].sort_values(["u", "o"], ascending=[True, False], kind="stable")
    listed = listed.assign(pos=listed.groupby("u").cumcount()).query(f"pos < {n}")
    disc = 1.0 / np.log2(np.arange(2, n + 2))
    dcg = (listed["y"] * disc[listed["pos"].to_numpy()]).groupby(listed["u"]).sum()
    users = frame.groupby("u")["m"].first()
    ideal = np.cumsum(disc)[np.minimum(users.to_numpy(), n) - 1]
    return float((dcg.reindex(users.index, fill_value=0.0).to_numpy() / ideal).mean())


def list_quality(rows: pd.DataFrame, scores: np.ndarray, n: int) -> dict[str, float]:
    """NDCG@n on the validation users of ``rows`` (validation examples: every candidate of the user, with
    label, n_labels, als_rank, ease_rank) for the ranker's ``scores`` and for each baseline's own list (its
    ranks; a baseline without any rank on these rows is left out)."""
    out = {"ranker": top_n_ndcg(rows, scores, n)}
    for name in BASELINES:
        rank = rows[f"{name}_rank"].to_numpy(dtype=np.float64) if f"{name}_rank" in rows else np.array([np.nan])
        if np.isfinite(rank).any():
            out[name] = top_n_ndcg(rows, -rank, n)
    return out


def promote(name: str, alias: str, version: str, valid_rows: pd.DataFrame, new_scores: np.ndarray, n: int
            ) -> dict[str, Any]:
    """The promotion gate. On *these* validation users (the rows of ``valid_rows``: every candidate of each),
    the new version's top ``n`` must beat the best baseline's top ``n`` (EASE's and ALS's own lists), and the
    current ``alias`` holder's (re-scored on the same rows), to take the alias. A champion that no longer
    beats the best baseline loses the alias: the nightly job then publishes that baseline, never worse."""
    client = mlflow.MlflowClient()
    quality = list_quality(valid_rows, new_scores, n)
    baselines = {k: v for k, v in quality.items() if k != "ranker"}
    best = max(baselines, key=baselines.get) if baselines else None
    floor = baselines[best] if best else -1.0
    new = quality["ranker"]
    decision: dict[str, Any] = {"new_version": version, f"new_ndcg_at_{n}": new, "best_baseline": best,
                                f"best_baseline_ndcg_at_{n}": floor if best else None,
                                **{f"{k}_ndcg_at_{n}": v for k, v in baselines.items()}}
    try:
        champion = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        champion = None
    old = None
    if champion is not None and str(champion.version) != str(version):
        try:
            model = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
            old = top_n_ndcg(valid_rows, model.predict(pyfunc_frame(valid_rows))["score"].to_numpy(), n)
        except (ValueError, KeyError, mlflow.exceptions.MlflowException) as err:
            # e.g. the feature set changed since the champion was trained: it cannot score today's inputs, so it
            # could not serve them either
            decision["champion_error"] = str(err)
    decision.update(champion_version=champion.version if champion else None, **{f"champion_ndcg_at_{n}": old})
    beats_baseline = new > floor
    if not beats_baseline:
        reason = f"does not beat the best baseline {best}: {new:.4f} vs {floor:.4f}"
    elif old is not None and new <= old:
        reason = f"does not beat champion v{champion.version}: {new:.4f} vs {old:.4f}"
    else:
        reason = (f"beats the best baseline {best} ({new:.4f} vs {floor:.4f})" if best else "no baseline to beat") + (
            f" and champion v{champion.version} ({old:.4f})" if old is not None else
            (f"; champion v{champion.version} cannot score these examples" if champion is not None else
             "; no champion yet"))
    promoted = beats_baseline and (old is None or new > old)
    decision.update(promoted=promoted, reason=reason, champion_removed=False)
    if promoted:
        client.set_registered_model_alias(name, alias, version)
    elif champion is not None and (old is None or old <= floor):
        # the holder cannot score these users or loses to the baseline on them: publish the baseline instead
        client.delete_registered_model_alias(name, alias)
        decision["champion_removed"] = True
        decision["reason"] += (f"; champion v{champion.version} " + (
            f"loses to {best} too ({old:.4f}): alias removed, the nightly job publishes {best}" if old is not None
            else "cannot score these examples: alias removed"))
    if best:
        client.set_registered_model_tag(name, BEST_BASELINE_TAG, best)
    return decision
