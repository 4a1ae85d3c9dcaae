"""The champion's scoring step alone, on the driver: pairs/s of each scoring variant of one logged ranker
(eager PyTorch, ONNX Runtime, ONNX Runtime int8: ``liverec.ranker.compiled``) through
``liverec.ranker.pyfunc.score_examples`` (what the nightly job, the promotion gate and the evaluation call),
and of eager PyTorch through MLflow's ``predict`` (its input check on every row), on the same rows.

    python benchmarks/ranker_scoring.py [--users 100] [--candidates 300] [--items 2000] [--repeat 3]
                                        [--tracking-uri URI --model models:/NAME/VERSION] [--label NAME]

An untrained ranker of conf/base.yaml's shape (weights do not change the arithmetic) over ``--items`` items is
logged to a throw-away MLflow store the way train_ranker logs one (exported to ONNX and int8, each variant
measured) and loaded back; or, with ``--model``, a version train_ranker registered (e.g. the one
product_ml100k.py trains: ``--tracking-uri sqlite:///.liverec/bench-product/<label>-42/mlflow.db``). Each user
gets ``--candidates`` random candidates and a history of ranker.recent_items items. Every variant's scores are
compared with eager PyTorch's (max abs difference; the full-precision ONNX graph must be within 1e-4). One
intra-op thread (ranker.score_threads), as in the nightly job's Python workers; then the same on 2 cores: two
processes (one thread each, as two Spark tasks) scoring half the users each at the same time, pairs/s = all
pairs / the slower one's seconds. NDCG@10 of the variants needs a trained ranker: product_ml100k.py reports it
for the ranker it trains on MovieLens 100K.

Writes benchmarks/results/ranker_scoring[_<label>].{json,md}.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _measure import machine, write_results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=300)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tracking-uri", help="MLflow store of --model")
    ap.add_argument("--model", help="a registered ranker version (models:/NAME/VERSION) instead of a random one")
    ap.add_argument("--label", default="", help="suffix of the result files (e.g. ml100k)")
    args = ap.parse_args()

    import mlflow
    import torch

    from liverec.config import load_settings
    from liverec.features import DENSE_FEATURES
    from liverec.ranker import compiled
    from liverec.ranker.model import Ranker, RankerShape
    from liverec.ranker.pyfunc import log_model, pyfunc_frame, score_examples

    settings = load_settings()
    conf = settings.ranker
    if conf.score_threads > 0:
        torch.set_num_threads(conf.score_threads)
    rng = np.random.default_rng(0)
    if args.model:
        mlflow.set_tracking_uri(args.tracking_uri)
        trained = mlflow.pyfunc.load_model(args.model).unwrap_python_model()
        shape, vocab = trained.shape, trained.vocab
    else:
        torch.manual_seed(0)
        # id embedding as wide as the ALS factors; 384 = the width of the default encoder's (all-MiniLM-L6-v2)
        # vectors
        shape = RankerShape(n_items=args.items + 1, id_dim=settings.als.rank, text_in=384, text_dim=conf.text_dim,
                            n_dense=len(DENSE_FEATURES), attention_hidden=conf.attention_hidden,
                            cross_layers=conf.cross_layers, hidden_units=tuple(conf.hidden_units), dropout=0.0)
        state = {k: v.numpy() for k, v in Ranker(shape, text_table=rng.normal(size=(args.items + 1, 384)))
                 .state_dict().items()}
        vocab = {f"i{n}": n for n in range(1, args.items + 1)}
    ids = list(vocab)
    rows = []
    for u in range(args.users):
        recent = list(rng.choice(ids, conf.recent_items))
        for item in rng.choice(ids, args.candidates):
            rows.append((f"u{u}", item, recent, rng.normal(size=len(DENSE_FEATURES)).astype(np.float32)))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "recent_items", "dense"])
    # labels only so that log_model can measure the variants as train_ranker does (their NDCG here is noise)
    valid = frame.assign(label=(rng.random(len(frame)) < 0.05).astype(float), sampled=True)

    with tempfile.TemporaryDirectory(prefix="liverec-bench-") as tmp:
        log_seconds = None
        if args.model:
            model = mlflow.pyfunc.load_model(args.model)
        else:
            mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
            mlflow.set_experiment("bench")
            with mlflow.start_run():
                start = time.perf_counter()
                info = log_model(shape, state, vocab, conf.recent_items, pyfunc_frame(frame.head(5)),
                                 valid=valid.head(4000))
                log_seconds = time.perf_counter() - start
            model = mlflow.pyfunc.load_model(info.model_uri)
        inner = model.unwrap_python_model()
        default = inner.variant
        timings: dict[str, list[float]] = {"mlflow_predict (torch)": []} | {v: [] for v in compiled.VARIANTS}
        scores: dict[str, np.ndarray] = {}
        for _ in range(args.repeat):
            inner.use(compiled.TORCH, conf.score_threads)
            t = time.perf_counter()
            slow = model.predict(pyfunc_frame(frame))["score"].to_numpy()
            timings["mlflow_predict (torch)"].append(time.perf_counter() - t)
            for variant in compiled.VARIANTS:
                inner.use(variant, conf.score_threads)
                t = time.perf_counter()
                scores[variant] = score_examples(model, frame)
                timings[variant].append(time.perf_counter() - t)
        parallel = {v: two_cores(Path(inner.folder), v, frame, args.repeat) for v in compiled.VARIANTS}
    eager = scores[compiled.TORCH]
    diff = {v: float(np.max(np.abs(s - eager))) for v, s in scores.items()} | {
        "mlflow_predict (torch)": float(np.max(np.abs(slow - eager)))}
    if diff["mlflow_predict (torch)"] > 1e-9 or diff[compiled.ONNX] > 1e-4:
        raise SystemExit(f"a path disagrees with eager PyTorch: max abs differences {diff}")
    pairs = len(frame)
    best = {k: min(v) for k, v in timings.items()}
    payload = {"machine": machine(), "users": args.users, "candidates": args.candidates, "items": args.items,
               "pairs": pairs, "threads": conf.score_threads, "seconds": timings,
               "pairs_per_s": {k: pairs / v for k, v in best.items()}, "max_abs_difference": diff,
               "log_model_seconds": log_seconds, "default_variant": default, "model": args.model,
               "two_processes_seconds": parallel,
               "two_processes_pairs_per_s": {v: pairs / min(t) for v, t in parallel.items()}}
    lines = [
        "# The ranker's scoring step: each scoring variant, and MLflow predict", "",
        f"Machine: {machine()}. Command: `python benchmarks/ranker_scoring.py` ({args.users} users x "
        f"{args.candidates} candidates = {pairs:,} pairs, "
        + (f"the registered ranker {args.model} ({len(vocab):,} items)" if args.model else
           f"{args.items:,} items, an untrained ranker of conf/base.yaml's shape")
        + f", intra-op threads {conf.score_threads}; best of {args.repeat}).", "",
        "| path | seconds | pairs/s, one process | pairs/s, two processes (2 cores) | max abs difference to eager |",
        "|---|---|---|---|---|",
        *[f"| {k} | {best[k]:.2f} | {pairs / best[k]:,.0f} | "
          f"{payload['two_processes_pairs_per_s'][k]:,.0f} | {diff[k]:.1e} |" if k in parallel else
          f"| {k} | {best[k]:.2f} | {pairs / best[k]:,.0f} | | {diff[k]:.1e} |" for k in timings], "",
        "torch, onnx and int8 are `score_examples` with the version switched to that variant "
        "(`RankerModel.use`); one call scores one user's list (`Ranker.forward_shared`: the history encoded once, "
        "the pair term one matrix product). MLflow's predict checks every row of the input against the signature "
        "(the recent_items list column dominates) before the model runs; the nightly job, the promotion gate and "
        "the evaluation score through score_examples.", "",
        (f"Logging the version (export to ONNX, int8 quantisation, measuring each variant on 4,000 rows) took "
         f"{log_seconds:.1f} s. Its default here: {default} (on random labels, so not a quality judgement: "
         "NDCG@10 of each variant of a trained ranker is in product_ml100k_variants.md)." if log_seconds is not None
         else f"The version's default, as its training measured it: {default}."), ""]
    write_results("ranker_scoring" + (f"_{args.label}" if args.label else ""), payload, lines)
    return 0


def _score_part(folder: str, variant: str, part: pd.DataFrame, repeat: int, barrier) -> list[float]:
    """One process of ``two_cores``: the version's files loaded, one warm-up, then ``repeat`` timed passes, each
    started with the other process."""
    import torch

    from liverec.ranker.pyfunc import RankerModel, score_examples

    torch.set_num_threads(1)
    model = RankerModel.from_folder(Path(folder), variant).use(variant, 1)
    score_examples(model, part.head(300))
    seconds = []
    for _ in range(repeat):
        barrier.wait()
        t = time.perf_counter()
        score_examples(model, part)
        seconds.append(time.perf_counter() - t)
    return seconds


def two_cores(folder: Path, variant: str, frame: pd.DataFrame, repeat: int) -> list[float]:
    """Seconds per pass of two processes (one thread each) scoring half the users each at once: the slower's."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    users = frame["user_id"].unique()
    halves = [frame[frame["user_id"].isin(users[i::2])] for i in range(2)]
    ctx = mp.get_context("spawn")  # no fork of a process whose torch thread pool already ran
    with ctx.Manager() as manager, ProcessPoolExecutor(2, mp_context=ctx) as pool:
        barrier = manager.Barrier(2)
        runs = [pool.submit(_score_part, str(folder), variant, h, repeat, barrier) for h in halves]
        per = [r.result() for r in runs]
    return [max(a, b) for a, b in zip(*per, strict=True)]


if __name__ == "__main__":
    raise SystemExit(main())
