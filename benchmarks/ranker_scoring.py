"""The champion's scoring step alone, on the driver: pairs/s through MLflow's ``predict`` (its input check on
every row) and through ``liverec.ranker.pyfunc.score_examples`` (what the nightly job, the promotion gate and
the evaluation call), on the same rows and the same logged model.

    python benchmarks/ranker_scoring.py [--users 100] [--candidates 400] [--items 2000] [--repeat 3]

An untrained ranker of conf/base.yaml's shape (weights do not change the arithmetic) over ``--items`` items is
logged to a throw-away MLflow store and loaded back; each user gets ``--candidates`` random candidates and a
history of ranker.recent_items items. Both paths must give the same scores (checked, max abs difference
reported). torch runs with ranker.score_threads threads, as in the nightly job's Python workers.

Writes benchmarks/results/ranker_scoring.{json,md}.
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
    ap.add_argument("--candidates", type=int, default=400)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import mlflow
    import torch

    from liverec.config import load_settings
    from liverec.features import DENSE_FEATURES
    from liverec.ranker.model import Ranker, RankerShape
    from liverec.ranker.pyfunc import log_model, pyfunc_frame, score_examples

    settings = load_settings()
    conf = settings.ranker
    if conf.score_threads > 0:
        torch.set_num_threads(conf.score_threads)
    torch.manual_seed(0)
    # id embedding as wide as the ALS factors; 384 = the width of the default encoder's (all-MiniLM-L6-v2) vectors
    shape = RankerShape(n_items=args.items + 1, id_dim=settings.als.rank, text_in=384, text_dim=conf.text_dim,
                        n_dense=len(DENSE_FEATURES), attention_hidden=conf.attention_hidden,
                        cross_layers=conf.cross_layers, hidden_units=tuple(conf.hidden_units), dropout=0.0)
    rng = np.random.default_rng(0)
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

    with tempfile.TemporaryDirectory(prefix="liverec-bench-") as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        mlflow.set_experiment("bench")
        with mlflow.start_run():
            info = log_model(shape, state, vocab, conf.recent_items, pyfunc_frame(frame.head(5)))
        model = mlflow.pyfunc.load_model(info.model_uri)
        timings: dict[str, list[float]] = {"mlflow_predict": [], "score_examples": []}
        for _ in range(args.repeat):
            t = time.perf_counter()
            slow = model.predict(pyfunc_frame(frame))["score"].to_numpy()
            timings["mlflow_predict"].append(time.perf_counter() - t)
            t = time.perf_counter()
            fast = score_examples(model, frame)
            timings["score_examples"].append(time.perf_counter() - t)
    diff = float(np.max(np.abs(slow - fast)))
    if diff > 1e-9:
        raise SystemExit(f"the two paths disagree: max abs difference {diff}")
    pairs = len(frame)
    best = {k: min(v) for k, v in timings.items()}
    payload = {"machine": machine(), "users": args.users, "candidates": args.candidates, "items": args.items,
               "pairs": pairs, "threads": conf.score_threads, "seconds": timings,
               "pairs_per_s": {k: pairs / v for k, v in best.items()}, "max_abs_difference": diff}
    lines = [
        "# The ranker's scoring step: MLflow predict against score_examples", "",
        f"Machine: {machine()}. Command: `cd benchmarks && python ranker_scoring.py` ({args.users} users x "
        f"{args.candidates} candidates = {pairs:,} pairs, {args.items:,} items, torch threads "
        f"{conf.score_threads}; best of {args.repeat}).", "",
        "| path | seconds | pairs/s |", "|---|---|---|",
        *[f"| {k} | {best[k]:.2f} | {pairs / best[k]:,.0f} |" for k in ("mlflow_predict", "score_examples")], "",
        f"Same scores on both paths (max abs difference {diff:.1e}). MLflow's predict checks every row of the "
        "input against the signature (the recent_items list column dominates) before the model runs; the "
        "nightly job, the promotion gate and the evaluation now score through score_examples.", ""]
    write_results("ranker_scoring", payload, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
