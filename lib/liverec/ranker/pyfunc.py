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
from liverec.ranker.compiled import TORCH
from liverec.ranker.model import RankerShape

# what a logged ranker (and the online model that carries one) needs installed to load and score
PIP_REQUIREMENTS = ("torch", "numpy", "pandas", "onnxruntime")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # lib/liverec, shipped with the model as code


class RankerModel(mlflow.pyfunc.PythonModel):
    """A ranker version's scorer. It scores with one of ``compiled.VARIANTS``: eager PyTorch, or the ONNX graphs
    the version logged (``use``); a version starts on the default its training measured (meta.json)."""

    @classmethod
    def from_parts(cls, shape: RankerShape, state: dict[str, np.ndarray], vocab: dict[str, int],
                   recent_items: int, folder: Path | None = None, variant: str = TORCH) -> RankerModel:
        """The scorer without MLflow (benchmarks, tests, the online bundle): the same code path as the served
        model; ``folder`` holds the compiled variants' files, if any."""
        from liverec.ranker.train import load_model

        self = cls()
        self.shape, self.recent_len, self.vocab = shape, int(recent_items), vocab
        self.model = load_model(shape, state)
        self.folder, self.variant, self.threads, self._compiled, self._table = folder, TORCH, 1, {}, None
        self.use(variant)
        return self

    @classmethod
    def from_folder(cls, folder: Path, variant: str | None = None) -> RankerModel:
        """The scorer from the files a ranker version logs (meta.json, weights.npz, vocab.json, the ONNX files),
        scoring with ``variant`` (None: the version's measured default, eager PyTorch for older versions)."""
        meta = json.loads((folder / "meta.json").read_text())
        with np.load(folder / "weights.npz") as z:
            state = {k: z[k] for k in z.files}
        vocab = json.loads((folder / "vocab.json").read_text())
        self = cls.from_parts(RankerShape.from_dict(meta["shape"]), state, vocab, int(meta["recent_items"]), folder,
                              variant or meta.get("default_variant", TORCH))
        # what its training measured of each variant (compiled.measure), or why none was exported
        self.variants, self.variants_skipped = meta.get("variants", {}), meta.get("variants_skipped")
        return self

    def load_context(self, context: Any) -> None:
        loaded = RankerModel.from_folder(Path(context.artifacts["meta"]).parent)
        self.__dict__.update(loaded.__dict__)

    def use(self, variant: str, threads: int | None = None) -> RankerModel:
        """Score with ``variant`` (``compiled.VARIANTS``) from now on, ONNX Runtime with ``threads`` intra-op
        threads (``ranker.score_threads``; 0 = its default). A compiled variant the version did not log is an
        error naming what it has."""
        from liverec.ranker import compiled

        if variant not in compiled.VARIANTS:
            raise ValueError(f"unknown ranker variant {variant!r}: one of {', '.join(compiled.VARIANTS)}")
        if threads is not None and threads != self.threads:
            self.threads, self._compiled = int(threads), {}
        if variant != compiled.TORCH and variant not in self._compiled:
            path = None if self.folder is None else Path(self.folder) / compiled.FILES[variant]
            if path is None or not path.exists():
                have = [v for v, f in compiled.FILES.items() if self.folder and (Path(self.folder) / f).exists()]
                raise ValueError(f"this ranker version has no {variant} variant (it has: torch"
                                 f"{''.join(', ' + v for v in have)}); retrain it to export one")
            self._compiled[variant] = compiled.OrtList(path, self.threads)
        self.variant = variant
        return self

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
        recent = np.zeros(self.recent_len, dtype=np.int64)
        idx = [self.vocab.get(str(i), 0) for i in recent_items][:self.recent_len]
        recent[:len(idx)] = idx
        if self.variant != TORCH:
            return self._compiled[self.variant](item_idx, recent, dense)
        import torch

        with torch.inference_mode():  # no autograd bookkeeping at all (a tenth of the online request's time)
            if self._table is None:  # the item representations of the frozen model, once
                self._table = self.model.repr_table()
            out = self.model.forward_shared(torch.as_tensor(item_idx), torch.as_tensor(recent),
                                            torch.as_tensor(dense), self._table)
        return out.numpy().astype(np.float64)


def score_examples(model: Any, rows: pd.DataFrame) -> np.ndarray:
    """Scores of example rows (item_id, recent_items, dense array: what ``liverec.candidates.candidate_rows`` writes) by a
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


def write_files(folder: Path, shape: RankerShape, state: dict[str, np.ndarray], vocab: dict[str, int],
                recent_items: int) -> dict[str, Any]:
    """A ranker version's files in ``folder`` (weights.npz, vocab.json, meta.json, eager PyTorch its default);
    returns the meta written."""
    from liverec.ranker import compiled

    np.savez(folder / "weights.npz", **state)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    meta: dict[str, Any] = {"shape": shape.to_dict(), "recent_items": recent_items,
                            "dense_features": list(DENSE_FEATURES), "default_variant": compiled.TORCH}
    (folder / "meta.json").write_text(json.dumps(meta))
    return meta


def log_model(shape: RankerShape, state: dict[str, np.ndarray], vocab: dict[str, int], recent_items: int,
              example: pd.DataFrame, name: str = "ranker", valid: pd.DataFrame | None = None, k: int = 10,
              max_loss: float = 0.005, export: bool = True) -> Any:
    """Log the pyfunc (with signature and input example) to the active run; returns MLflow's ModelInfo. With
    ``valid`` (validation rows: user_id, item_id, recent_items, dense, label, sampled) the ranker is also
    exported to ONNX and int8 (``compiled.export``), each variant is measured on those rows
    (``compiled.measure``: pairs/s, NDCG@k, distance to eager PyTorch; metrics ``variant.<name>.*``) and the
    fastest that loses at most ``max_loss`` of eager's NDCG@k becomes the version's default. ``export`` False
    (``ranker.export_variants``), or the exporter's packages missing, logs eager PyTorch alone and says why in
    meta.json (``variants_skipped``) and the tag ``variants_skipped``."""
    from mlflow.models import infer_signature

    from liverec.ranker import compiled
    from liverec.ranker.train import load_model

    with tempfile.TemporaryDirectory(prefix="liverec-ranker-") as folder:  # MLflow copies the artifacts
        tmp = Path(folder)
        meta = write_files(tmp, shape, state, vocab, recent_items)
        artifacts = {"meta": str(tmp / "meta.json"), "weights": str(tmp / "weights.npz"),
                     "vocab": str(tmp / "vocab.json")}
        files, skipped = {}, "ranker.export_variants is false" if not export else None
        if valid is not None and export:
            try:
                files = compiled.export(load_model(shape, state), tmp, recent_items)
            except ImportError as exc:  # onnx / onnxscript are the training extra's: a bare install scores eagerly
                skipped = f"the ONNX exporter is not installed ({exc}): pip install 'liverec[training]'"
        if skipped and valid is not None:
            meta["variants_skipped"] = skipped
            (tmp / "meta.json").write_text(json.dumps(meta))
            mlflow.set_tag("variants_skipped", skipped)
        if files:
            artifacts.update({f"variant_{v}": str(path) for v, path in files.items()})
            report, default = compiled.measure(RankerModel.from_folder(tmp, compiled.TORCH), valid, k, max_loss)
            meta.update(variants=report, default_variant=default)
            (tmp / "meta.json").write_text(json.dumps(meta))
            mlflow.log_metrics({f"variant.{v}.{m}": float(x) for v, r in report.items() for m, x in r.items()})
        if valid is not None:
            mlflow.log_param("default_variant", meta["default_variant"])
        model = RankerModel.from_folder(tmp)
        signature = infer_signature(example, model.predict(None, example))
        return mlflow.pyfunc.log_model(
            name=name, python_model=RankerModel(), signature=signature, input_example=example, artifacts=artifacts,
            code_paths=[str(PACKAGE_DIR)], pip_requirements=list(PIP_REQUIREMENTS))


def log_and_check(result: Any, vocab: Any, recent_items: int, valid: pd.DataFrame, k: int, max_loss: float,
                  export: bool = True) -> tuple[Any, Any, np.ndarray]:
    """Log the trained ranker (a ``train.TrainResult``; ``vocab`` its gold.ranker_items rows) as a pyfunc to the
    active run, with its compiled variants measured on ``valid`` (``log_model``), load it back and score the
    validation rows with it in full precision: (ModelInfo, the loaded pyfunc, its eager scores of ``valid``,
    what the promotion gate judges). On the ``sampled`` rows the loaded model must reproduce the training loop's
    validation NDCG (the metric ``pyfunc_val_ndcg_at_<k>``, k = ``ranker.val_k``); ``final_scores.json`` keeps
    inputs and the scores of the version's default variant."""
    ids = vocab.select("item_id", "item_idx").toPandas()  # the model's vocabulary, through Arrow
    vocab_map = dict(zip(ids["item_id"], ids["item_idx"].astype(int).tolist(), strict=True))
    info = log_model(result.shape, result.state, vocab_map, recent_items, pyfunc_frame(valid.head(5)), valid=valid,
                     k=k, max_loss=max_loss, export=export)
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    inner = pyfunc.unwrap_python_model()
    default = inner.variant
    scores = score_examples(inner.use(TORCH), valid)
    inner.use(default)
    sampled = valid["sampled"].to_numpy(dtype=bool)
    groups = pd.factorize(valid["user_id"][sampled])[0]
    mlflow.log_metric(f"pyfunc_val_ndcg_at_{k}", ndcg_at_k(
        scores[sampled], valid["label"].to_numpy(dtype=np.float64)[sampled], groups, k))
    final = pyfunc_frame(valid.head(50))
    mlflow.log_dict({"input": final.to_dict(orient="list"), "scores": pyfunc.predict(final)["score"].tolist(),
                     "variant": default}, "final_scores.json")
    return info, pyfunc, scores
