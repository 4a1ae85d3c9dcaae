"""The ranker compiled for scoring: one user's candidate list exported to ONNX and run with ONNX Runtime, and
an int8 variant of that graph (weights of its matrix products and embedding tables quantised to int8, the
activations quantised per batch: ``onnxruntime.quantization.quantize_dynamic``).

The exported graph is ``Ranker.forward_shared``: item_idx (M,) int64, recent_idx (L,) int64 (0 = padding),
dense (M, n_dense) float32 -> logits (M,) float32, M free. ``VARIANTS`` names what a ranker version can score
with; ``train_ranker`` measures each on its validation rows (pairs/s, NDCG against the full-precision
scores) and records the default (``choose``), ``ranker.scoring_variant`` overrides it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

TORCH, ONNX, INT8 = "torch", "onnx", "int8"
VARIANTS = (TORCH, ONNX, INT8)  # eager PyTorch (full precision), ONNX Runtime (full precision), ONNX Runtime int8
FILES = {ONNX: "ranker.onnx", INT8: "ranker_int8.onnx"}  # the artifact file of each compiled variant
INPUTS = ("item_idx", "recent_idx", "dense")
AUTO = "auto"  # ranker.scoring_variant: the variant the version's training chose


def check_variant(name: str) -> str:
    """``ranker.scoring_variant``, checked: ``AUTO`` or one of ``VARIANTS``."""
    from liverec.errors import InputError

    if name != AUTO and name not in VARIANTS:
        raise InputError(f"ranker.scoring_variant must be {AUTO} or one of {', '.join(VARIANTS)}, got {name!r}")
    return name


def require(folder: Path, name: str, what: str) -> None:
    """The ranker version in ``folder`` (``what``: its URI, for the message) holds ``ranker.scoring_variant``
    ``name``: an InputError naming what it holds, before any executor loads it. Only a folder that is a liverec
    ranker (a meta.json inside) is judged; another model is left to its own checks."""
    from liverec.errors import InputError

    if name in (AUTO, TORCH) or not list(folder.rglob("meta.json")):
        return
    if not list(folder.rglob(FILES[name])):
        have = [v for v, f in FILES.items() if list(folder.rglob(f))]
        raise InputError(f"ranker.scoring_variant={name}, but {what} has no {name} variant (it has: torch"
                         f"{''.join(', ' + v for v in have)}): retrain it (ranker.export_variants: true) or use auto")


def choose(scorer: Any, name: str, threads: int) -> Any:
    """``scorer`` (a ``pyfunc.RankerModel``) switched to ``ranker.scoring_variant`` ``name`` (``AUTO``: the one it
    starts on) with ``threads`` intra-op threads; a scorer of another kind is returned as it is."""
    if not hasattr(scorer, "use"):
        return scorer
    return scorer.use(scorer.variant if name == AUTO else name, threads)


class _Drop(logging.Filter):
    """Drops the records starting with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def _quiet_exporters():
    """The exporter's and the quantiser's notes that concern neither this graph nor its user (torchvision ops not
    registered, an axis name merged, constant folding skipped, a deprecation inside torch.export, a pre-processing
    hint): off while exporting."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    hint = _Drop("Please consider to run pre-processing")
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)  # torch.export's own
            yield
    finally:
        root.removeFilter(hint)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export(model: Any, folder: Path, recent_len: int) -> dict[str, Path]:
    """Export ``model`` (a ``Ranker``) into ``folder`` as ONNX, and its int8 quantisation: {variant: file}."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class OneList(torch.nn.Module):
        def __init__(self, ranker: Any):
            super().__init__()
            self.ranker = ranker
            with torch.no_grad():  # the item representations are constants of a frozen model: looked up, not computed
                self.register_buffer("table", ranker.repr_table())

        def forward(self, item_idx: torch.Tensor, recent_idx: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
            return self.ranker.forward_shared(item_idx, recent_idx, dense, self.table)

    folder.mkdir(parents=True, exist_ok=True)
    full, small = folder / FILES[ONNX], folder / FILES[INT8]
    n = 8  # any list length: the candidate axis is exported as dynamic
    args = (torch.arange(1, n + 1, dtype=torch.int64) % model.shape.n_items,
            torch.zeros(recent_len, dtype=torch.int64), torch.zeros(n, model.shape.n_dense))
    m = torch.export.Dim("candidates", min=1)
    was_training = model.training
    model.eval()
    try:
        with _quiet_exporters(), tempfile.TemporaryDirectory(prefix="liverec-onnx-") as tmp:
            # the exporter writes its report files into the working directory: keep them out of it
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                with torch.no_grad():  # the scoring form of Ranker.forward_lists
                    torch.onnx.export(OneList(model).eval(), args, str(full), input_names=list(INPUTS),
                                      output_names=["score"],
                                      dynamic_shapes={"item_idx": {0: m}, "recent_idx": None, "dense": {0: m}},
                                      dynamo=True, external_data=False, verbose=False)
            finally:
                os.chdir(cwd)
            quantize_dynamic(str(full), str(small), weight_type=QuantType.QInt8)
    finally:
        model.train(was_training)
    return {ONNX: full, INT8: small}


class OrtList:
    """One compiled variant, loaded in ONNX Runtime with ``threads`` intra-op threads (0 = its default)."""

    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(int(threads), 0)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, item_idx: np.ndarray, recent_idx: np.ndarray, dense: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {"item_idx": np.ascontiguousarray(item_idx, dtype=np.int64),
                                         "recent_idx": np.ascontiguousarray(recent_idx, dtype=np.int64),
                                         "dense": np.ascontiguousarray(dense, dtype=np.float32)})
        return out.astype(np.float64)


def measure(model: Any, valid: Any, k: int, max_loss: float) -> tuple[dict[str, dict[str, float]], str]:
    """Every variant ``model`` (a ``pyfunc.RankerModel`` with its files) has, on the validation rows ``valid``:
    {variant: {pairs_per_s (best of two, one thread), ndcg_at_<k> (on the sampled rows, as the training loop),
    max_abs_diff (to eager PyTorch's scores)}}, and the default among them (``default_of``)."""
    import time

    from liverec.metrics import ndcg_at_k
    from liverec.ranker.pyfunc import score_examples

    sampled = valid["sampled"].to_numpy(dtype=bool)
    labels = valid["label"].to_numpy(dtype=np.float64)[sampled]
    groups = np.unique(valid["user_id"][sampled].to_numpy(), return_inverse=True)[1]
    report: dict[str, dict[str, float]] = {}
    reference = None
    for variant in VARIANTS:
        if variant != TORCH and not (Path(model.folder) / FILES[variant]).exists():
            continue
        model.use(variant, threads=1)
        score_examples(model, valid.head(64))  # warm-up: first-call allocations are not the variant's speed
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            scores = score_examples(model, valid)
            seconds.append(time.perf_counter() - start)
        reference = scores if reference is None else reference
        report[variant] = {"pairs_per_s": len(valid) / max(min(seconds), 1e-9),
                           f"ndcg_at_{k}": ndcg_at_k(scores[sampled], labels, groups, k),
                           "max_abs_diff": float(np.max(np.abs(scores - reference))) if len(scores) else 0.0}
    model.use(TORCH)
    return report, default_of(report, k, max_loss)


def default_of(report: dict[str, dict[str, float]], k: int, max_loss: float) -> str:
    """The fastest variant of ``measure``'s report whose NDCG@k is at least (1 - ``max_loss``) x eager PyTorch's,
    the full-precision ONNX graph only within 1e-4 of eager's scores (else its export is wrong, not faster)."""
    full = report[TORCH][f"ndcg_at_{k}"]
    allowed = [v for v, r in report.items() if r[f"ndcg_at_{k}"] >= full * (1 - max_loss)
               and (v != ONNX or r["max_abs_diff"] <= 1e-4)]
    return max(allowed, key=lambda v: report[v]["pairs_per_s"])
