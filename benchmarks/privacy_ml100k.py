"""Differentially private popularity on MovieLens 100K: what each epsilon costs the popularity source.

    python benchmarks/privacy_ml100k.py [--seed 42] [--epsilons 0.5 1] [--max-items 50 200] [--repeats 5]

The product benchmark's split (``product_ml100k.split``: per user 75/25, numpy ``default_rng(seed)``); the training
part as events; the public catalogue is every item id of u.item (1,682). Per contribution bound (``--max-items``,
conf privacy.popularity_max_items) and epsilon, ``--repeats`` releases by ``liverec.privacy.item_popularity`` (Spark
for the bound, OpenDP's discrete Laplace for the noise): the mean absolute error of the released counts against the
exact distinct users per item (and against the bounded counts, the noise alone), and the nDCG@10 / precision@10 of
the popularity source ranked by them (every user's top 10 unseen items, scored on the held-out part, as
product_ml100k scores its popularity row). Writes benchmarks/results/privacy_ml100k.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np
from _measure import machine, write_results
from product_ml100k import load, ndcg_precision, split, top_unseen

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ml-100k")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--max-items", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from liverec import privacy
    from liverec.config import load_settings
    from liverec.session import build_spark

    work = REPO / ".liverec" / "bench-privacy"
    settings = load_settings(overrides=[f"lakehouse_root={work / 'lakehouse'}", f"scratch_dir={work / 'scratch'}",
                                        "spark.shuffle_partitions=4", "demo_mode=true"])
    spark = build_spark(settings, "privacy_ml100k")
    rows = load(args.data)
    train, test = split(rows, args.seed)
    n_users, n_items = int(rows[:, 0].max()), 1682
    x = np.zeros((n_users, n_items), dtype=bool)
    x[rows[train, 0] - 1, rows[train, 1] - 1] = True
    tests: dict[int, set[int]] = {}
    for u, i in rows[test][:, :2]:
        tests.setdefault(int(u) - 1, set()).add(int(i) - 1)
    exact = x.sum(axis=0).astype(np.float64)

    def quality(counts: np.ndarray) -> dict[str, float]:
        top = top_unseen(np.tile(counts, (n_users, 1)), x)
        return ndcg_precision({u: list(top[u]) for u in range(n_users)}, tests)

    events = spark.createDataFrame([(str(u), str(i)) for u, i in rows[train][:, :2]], "user_id string, item_id string")
    events = events.cache()
    catalogue = spark.createDataFrame([(str(i),) for i in range(1, n_items + 1)], "item_id string")
    key = settings.ids.demo_key.encode()

    def vector(release: privacy.Release) -> np.ndarray:
        out = np.zeros(n_items)
        for r in release.counts.collect():
            out[int(r["item_id"]) - 1] = r["users"]
        return out

    results = {"exact": {"mae": 0.0, **quality(exact)}, "bounds": {}}
    for bound in args.max_items:
        bounded = np.zeros(n_items)
        for r in privacy.bounded_pairs(events, bound, key).groupBy("item_id").count().collect():
            bounded[int(r["item_id"]) - 1] = r["count"]
        per = {"bounded_only": {"mae": float(np.abs(bounded - exact).mean()), **quality(bounded)}}
        for eps in args.epsilons:
            reps = []
            for _ in range(args.repeats):
                noisy = vector(privacy.item_popularity(events, catalogue, eps, bound, key))
                reps.append({"mae": float(np.abs(noisy - exact).mean()),
                             "mae_vs_bounded": float(np.abs(noisy - bounded).mean()), **quality(noisy)})
            per[f"eps={eps:g}"] = {m: [r[m] for r in reps] for m in reps[0]}
        results["bounds"][str(bound)] = per
    spark.stop()

    command = "python benchmarks/privacy_ml100k.py " + " ".join(sys.argv[1:])
    payload = {"benchmark": "privacy_ml100k", "date": dt.date.today().isoformat(), "machine": machine(),
               "command": command, "seed": args.seed, "repeats": args.repeats, "results": results}
    ex = results["exact"]
    lines = ["# privacy_ml100k", "",
             f"Measured {payload['date']} on {payload['machine']}; `{command}`. MovieLens 100K, per-user 75/25 split "
             f"(seed {args.seed}); the popularity source (every user's 10 most popular unseen items) ranked by exact "
             "counts, by the bounded counts alone, and by differentially private releases (liverec.privacy: "
             f"user-level, discrete Laplace, {args.repeats} releases each: mean and standard deviation).", "",
             "| counts | per-user bound | epsilon | MAE vs exact (users per item) | MAE vs bounded (the noise) | "
             "nDCG@10 | precision@10 |", "|---|---|---|---|---|---|---|",
             f"| exact | - | - | 0 | - | {ex['ndcg']:.4f} | {ex['precision']:.4f} |"]
    for bound, per in results["bounds"].items():
        b = per["bounded_only"]
        lines.append(f"| bounded, no noise | {bound} | - | {b['mae']:.2f} | 0 | {b['ndcg']:.4f} | {b['precision']:.4f} |")
        for name, r in per.items():
            if name == "bounded_only":
                continue

            def ms(v: list[float], digits: int) -> str:
                return f"{np.mean(v):.{digits}f} ± {np.std(v):.{digits}f}"

            lines.append(f"| DP | {bound} | {name.split('=')[1]} | {ms(r['mae'], 2)} | {ms(r['mae_vs_bounded'], 2)} | "
                         f"{ms(r['ndcg'], 4)} | {ms(r['precision'], 4)} |")
    lines += ["", f"{n_items:,} catalogue items; the exact counts' mean is {exact.mean():.1f} users per item. The "
                  "ranker trained with DP-SGD at epsilon 1, 4 and 8: privacy_ranker_ml100k.md."]
    write_results("privacy_ml100k", payload, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
