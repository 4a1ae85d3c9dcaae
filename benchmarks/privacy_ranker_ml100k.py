"""The ranker trained with differential privacy (DP-SGD, ranker.privacy) on MovieLens 100K: what each epsilon costs
the published table.

    python benchmarks/privacy_ranker_ml100k.py [--seed 42] [--epsilons 1 4 8]

``product_ml100k``'s protocol and scoring (per user 75/25, nDCG@10 of gold.recommendations on the held-out part).
The pipeline runs once without DP (label ``privacy-base``); each epsilon then copies that run (its tables and
registry) and reruns train_ranker and recommend_nightly with ``ranker.privacy.enabled=true`` and
``target_epsilon`` = epsilon, under a champion alias of its own, so the DP version competes with the baselines
only (not with the non-DP champion) and the nightly job ranks with it when the gate promotes it. Reported per
row: the published table's nDCG@10 (what users get: the gate publishes the best baseline when the DP ranker loses
to it), the gate's numbers (the new version's NDCG@10 on the validation users against the best baseline's), the
epsilon spent and the training time. Writes benchmarks/results/privacy_ranker_ml100k.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import sys
from pathlib import Path

from _measure import machine, write_results
from product_ml100k import REPO, STAGES, load, one_seed

GATE = ("promotion.promoted", "promotion.new_ndcg_at_10", "promotion.best_baseline", "promotion.best_baseline_ndcg_at_10")


def last_training(db: Path) -> dict[str, str]:
    """Params and metrics of the newest run that has a promotion decision (train_ranker's)."""
    with sqlite3.connect(db) as con:
        row = con.execute("select r.run_uuid from runs r join params p on p.run_uuid = r.run_uuid where "
                          "p.key = 'promotion.promoted' order by r.start_time desc limit 1").fetchone()
        if row is None:
            return {}
        out = dict(con.execute("select key, value from params where run_uuid = ?", row).fetchall())
        out |= {k: str(v) for k, v in con.execute("select key, value from metrics where run_uuid = ?", row)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    ap.add_argument("--reuse-base", action="store_true", help="score the earlier privacy-base run instead of rerunning")
    args = ap.parse_args()
    rows = load(Path(args.data))
    common = {"data": args.data, "ease_lambda": 500.0, "reuse": False}
    base = one_seed(argparse.Namespace(**{**common, "reuse": args.reuse_base}, label="privacy-base", from_label=None,
                                       stages=STAGES, set=[]), rows, args.seed)
    work = REPO / ".liverec" / "bench-product"
    results = [{"name": "no DP", "epsilon": None, "models": base["models"], "pipeline": base["pipeline"],
                "gate": last_training(work / f"privacy-base-{args.seed}" / "mlflow.db")}]
    for eps in args.epsilons:
        label = f"privacy-eps{eps:g}".replace(".", "_")
        sets = ["ranker.privacy.enabled=true", f"ranker.privacy.target_epsilon={eps}",
                f"ranker.champion_alias=dp_{label.replace('-', '_')}"]
        out = one_seed(argparse.Namespace(**common, label=label, from_label="privacy-base",
                                          stages="train_ranker,recommend_nightly", set=sets), rows, args.seed)
        results.append({"name": f"DP-SGD, target epsilon {eps:g}", "epsilon": eps, "models": out["models"],
                        "pipeline": out["pipeline"], "gate": last_training(work / f"{label}-{args.seed}" / "mlflow.db")})
    command = "python benchmarks/privacy_ranker_ml100k.py " + " ".join(sys.argv[1:])
    payload = {"benchmark": "privacy_ranker_ml100k", "date": dt.date.today().isoformat(), "machine": machine(),
               "command": command, "seed": args.seed, "rows": results}
    lines = ["# privacy_ranker_ml100k", "", f"Measured {payload['date']} on {payload['machine']}; `{command}`.", "",
             f"MovieLens 100K, product_ml100k's per-user 75/25 split (seed {args.seed}). The published table's "
             "nDCG@10 on the held-out part; the gate's NDCG@10 of the new ranker version and of the best baseline "
             "on the validation users (every candidate); the epsilon DP-SGD spent (delta "
             "ranker.privacy.delta, one training list as the unit: docs/privacy.md).", "",
             "| ranker | epsilon spent | promoted | gate: ranker / best baseline NDCG@10 | published nDCG@10 | "
             "EASE / ALS / popularity nDCG@10 | train_ranker + recommend_nightly s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        g, m = r["gate"], r["models"]
        spent = g.get("privacy.epsilon")
        lines.append(f"| {r['name']} | {float(spent):.2f} | " if spent else f"| {r['name']} | - | ")
        lines[-1] += (f"{g.get('promotion.promoted', '?')} | {float(g.get('promotion.new_ndcg_at_10', 'nan')):.4f} / "
                      f"{float(g.get('promotion.best_baseline_ndcg_at_10', 'nan')):.4f} "
                      f"({g.get('promotion.best_baseline', '?')}) | {m['product']['ndcg']:.4f} | "
                      f"{m['ease']['ndcg']:.4f} / {m['als']['ndcg']:.4f} / {m['popularity']['ndcg']:.4f} | "
                      f"{r['pipeline'].get('seconds', float('nan')):.0f} |")
    lines += ["", "The no-DP row runs the whole pipeline (its time is the whole pipeline's); each DP row reruns "
              "train_ranker and recommend_nightly on a copy of it.", ""]
    write_results("privacy_ranker_ml100k", payload, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
