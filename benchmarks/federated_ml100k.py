"""Federated training of the ranker with Flower (train_ranker_federated) on MovieLens 100K against central training.

    python benchmarks/federated_ml100k.py [--seed 42] [--silos 4] [--rounds 10 20]

``product_ml100k``'s protocol and scoring. The central run is ``privacy_ranker_ml100k``'s base run (label
``privacy-base``: the whole pipeline, train_ranker on 2 DDP processes), reused when it exists. For each ``--rounds``
the run is copied and train_ranker_federated (``--silos`` silo processes + a server, FedAvg, one local epoch per
round) and recommend_nightly run on it (``liverec run``) under a champion alias of its own. Reported: the validation
NDCG@10 of the best round against the central run's best epoch (the issue's target: at least 95%), the gate's decision, the
published table's nDCG@10 and the training time. Writes benchmarks/results/federated_ml100k.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import time
from pathlib import Path

from _measure import isolated_args, machine, relocate_registry, run_measured, write_results
from privacy_ranker_ml100k import last_training
from product_ml100k import DS, OVERLAY, REPO, STAGES, load, one_seed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--silos", type=int, default=4)
    ap.add_argument("--rounds", type=int, nargs="+", default=[10])
    args = ap.parse_args()
    rows = load(Path(args.data))
    work = REPO / ".liverec" / "bench-product"
    base_dir = work / f"privacy-base-{args.seed}"
    common = {"data": args.data, "ease_lambda": 500.0}
    base = one_seed(argparse.Namespace(**common, reuse=True, label="privacy-base", from_label=None, stages=STAGES,
                                       set=[]), rows, args.seed)
    central = last_training(base_dir / "mlflow.db")
    results = [{"name": "central (train_ranker, 2 DDP processes)", "gate": central, "models": base["models"]}]
    flower = REPO / ".venv-flower" / "bin" / "python"
    liverec = str(Path(sys.executable).parent / "liverec")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    for rounds in args.rounds:
        # train_ranker_federated is not a pipeline stage: a copy of the base run, then the two stages by `liverec run`
        label = f"federated-s{args.silos}-r{rounds}"
        target = work / f"{label}-{args.seed}"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(base_dir, target)
        relocate_registry(target / "mlflow.db", base_dir, target)
        sets = [x for kv in (f"ranker.federated.python={flower}", f"ranker.champion_alias=fed_{args.silos}_{rounds}")
                for x in ("--set", kv)]
        common_args = [*isolated_args(target, "6g"), *OVERLAY, *sets, "--ds", DS]
        started = time.monotonic()
        run_measured([liverec, "run", "train_ranker_federated", *common_args, "--silos", str(args.silos),
                      "--rounds", str(rounds)], env, target / "federated.log")
        run_measured([liverec, "run", "recommend_nightly", *common_args], env, target / "recommend.log")
        seconds = time.monotonic() - started
        out = one_seed(argparse.Namespace(**common, reuse=True, label=label, from_label=None, stages=STAGES, set=[]),
                       rows, args.seed)
        results.append({"name": f"federated, {args.silos} silos, {rounds} rounds", "models": out["models"],
                        "gate": last_training(target / "mlflow.db"), "pipeline": {"seconds": seconds}})
    ref = float(central["best_val_ndcg_at_10"])
    command = "python benchmarks/federated_ml100k.py " + " ".join(sys.argv[1:])
    payload = {"benchmark": "federated_ml100k", "date": dt.date.today().isoformat(), "machine": machine(),
               "command": command, "seed": args.seed, "rows": results}
    lines = ["# federated_ml100k", "", f"Measured {payload['date']} on {payload['machine']}; `{command}`.", "",
             f"MovieLens 100K, product_ml100k's per-user 75/25 split (seed {args.seed}). Validation NDCG@10: the "
             "training loop's metric on the validation users' sampled rows (best epoch, or best round); the target "
             "is at least 95% of the central run's.", "",
             "| ranker | best val NDCG@10 | vs central | promoted | gate: ranker / best baseline NDCG@10 | "
             "published nDCG@10 | seconds (train + recommend) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        g = r["gate"]
        val = float(g["best_val_ndcg_at_10"])
        seconds = r.get("pipeline", {}).get("seconds")
        lines.append(f"| {r['name']} | {val:.4f} | {val / ref:.1%} | {g.get('promotion.promoted')} | "
                     f"{float(g['promotion.new_ndcg_at_10']):.4f} / {float(g['promotion.best_baseline_ndcg_at_10']):.4f} "
                     f"| {r['models']['product']['ndcg']:.4f} | " + (f"{seconds:.0f} |" if seconds else "- |"))
    write_results("federated_ml100k", payload, lines + [""])
    return 0


if __name__ == "__main__":
    sys.exit(main())
