"""liverec's ALS fit (Spark ML, ``liverec.als.fit``) against the ``implicit`` library's CPU ALS on the same pairs.

    python benchmarks/als_vs_implicit.py [--work .liverec/bench-scale-20m] [--ds 2026-11-02] [--label NAME]

The pairs are train_als' own: silver.events up to ds of a benchmark lakehouse (``nightly_scale.py`` leaves one per
size) through ``als.strengths`` and ``als.index_ids``, cached, then fitted by Spark with conf's rank, iterations,
regularisation, alpha and blocks, and by implicit (0.7, the bench extra) with the same rank, iterations,
regularisation and confidence matrix 1 + alpha x strength, on 2 threads (the machine's cores), once with its
default conjugate-gradient solver (3 steps per factor) and once with the exact solve Spark also does (Cholesky per
row). Only the fits are timed (Spark's includes its shuffles of the rating blocks; implicit's gets the matrix
ready in memory). Writes benchmarks/results/als_vs_implicit[_<label>].{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(REPO / ".liverec" / "bench-scale-20m"))
    ap.add_argument("--ds", default="2026-11-02")
    ap.add_argument("--driver-memory", default="10g")
    ap.add_argument("--label", default="")
    ap.add_argument("--set", action="append", default=[], help="conf override (KEY=VALUE) for the Spark fit")
    ap.add_argument("--spark-only", action="store_true", help="time the Spark fit alone (no implicit, no results)")
    args = ap.parse_args()

    import implicit
    import numpy as np
    import scipy.sparse as sp
    from _measure import machine, write_results
    from pyspark import StorageLevel
    from threadpoolctl import threadpool_limits

    from liverec import als, catalog
    from liverec.config import load_settings
    from liverec.session import build_spark

    work = Path(args.work)
    settings = load_settings(overrides=[f"lakehouse_root={work / 'lakehouse'}", f"scratch_dir={work / 'scratch-als'}",
                                        "demo_mode=true", f"spark.driver_memory={args.driver_memory}", *args.set])
    conf = settings.als
    spark = build_spark(settings, "als-vs-implicit")
    events = catalog.events_until(spark, settings, args.ds, conf.window_days)
    pairs = als.strengths(events, conf, settings.clean.event_weights).persist(StorageLevel.MEMORY_AND_DISK)
    users, items = als.index_ids(pairs)
    ratings = (pairs.join(users, "user_id").join(items, "item_id").select("user_idx", "item_idx", "strength")
               .persist(StorageLevel.MEMORY_AND_DISK))
    n_pairs = ratings.count()
    start = time.monotonic()
    model = als.fit(spark, ratings, conf, str(work / "scratch-als" / "ckpt"))
    model.userFactors.count()
    spark_s = time.monotonic() - start
    print(f"spark ALS: {n_pairs:,} pairs, {spark_s:.1f}s", flush=True)
    if args.spark_only:
        return 0
    table = ratings.toPandas()
    spark.stop()
    n_u, n_i = int(table.user_idx.max()) + 1, int(table.item_idx.max()) + 1
    conf_matrix = sp.csr_matrix((1.0 + conf.alpha * table.strength.to_numpy(dtype=np.float32),
                                 (table.user_idx.to_numpy(), table.item_idx.to_numpy())), shape=(n_u, n_i),
                                dtype=np.float32)
    fits = {}
    for name, cg in (("implicit (conjugate gradient, its default)", True), ("implicit (exact solve)", False)):
        model = implicit.cpu.als.AlternatingLeastSquares(factors=conf.rank, regularization=conf.reg_param,
                                                         iterations=conf.max_iter, random_state=conf.seed,
                                                         use_cg=cg, num_threads=2, calculate_training_loss=False)
        with threadpool_limits(1, "blas"):
            start = time.monotonic()
            model.fit(conf_matrix, show_progress=False)
            fits[name] = time.monotonic() - start
        print(f"{name}: {fits[name]:.1f}s", flush=True)
    payload = {"date": dt.date.today().isoformat(), "machine": machine(), "pairs": n_pairs, "users": n_u,
               "items": n_i, "rank": conf.rank, "iterations": conf.max_iter, "spark_fit_s": spark_s,
               "implicit_fit_s": fits, "implicit_version": implicit.__version__}
    name = "als_vs_implicit" + (f"_{args.label}" if args.label else "")
    lines = [f"# {name}", "", f"Measured {payload['date']} on {machine()}; `python benchmarks/als_vs_implicit.py "
             f"{' '.join(sys.argv[1:])}`: {n_pairs:,} user-item pairs ({n_u:,} users, {n_i:,} items) of "
             f"{work.name}'s silver.events, rank {conf.rank}, {conf.max_iter} iterations, implicit "
             f"{implicit.__version__} on 2 threads.", "", "| fit | seconds | per iteration | Spark / this |",
             "|---|---|---|---|",
             f"| Spark ML ALS (liverec.als.fit) | {spark_s:.1f} | {spark_s / conf.max_iter:.2f} | 1.0 |",
             *[f"| {k} | {v:.1f} | {v / conf.max_iter:.2f} | {spark_s / v:.1f} |" for k, v in fits.items()], ""]
    write_results(name, payload, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
