"""The calibrated re-ranker (recommend.reranker=calibrated) on the published table, MovieLens 100K: nDCG@10 against
the calibration KL, per recommend.calibration_lambda, beside the default MMR.

    python benchmarks/calibration_ml100k.py [--seed 42] [--lambdas 0.1 0.3 0.5 0.7] [--reuse-base]

``product_ml100k``'s protocol and scoring (per user 75/25, nDCG@10 of gold.recommendations on the held-out part).
The pipeline runs once with the defaults (label ``privacy-base``, shared with privacy_ranker_ml100k; ``--reuse-base``
scores an earlier run of it); the default MMR and each lambda copy that run and rerun recommend_nightly alone, so
the candidates, the champion ranker and its scores are the same and only the re-ranking differs.
calibration KL: the mean over users of KL(p || 0.99 q + 0.01 p), p the genre mix of the user's training items, q
that of their published top 10 (computed here with numpy from u.item). Writes
benchmarks/results/calibration_ml100k.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from _measure import machine, write_results
from product_ml100k import REPO, STAGES, load, one_seed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7])
    ap.add_argument("--reuse-base", action="store_true", help="score the earlier privacy-base run instead of rerunning")
    args = ap.parse_args()
    rows = load(Path(args.data))
    common = {"data": args.data, "ease_lambda": 500.0}
    base = one_seed(argparse.Namespace(**common, reuse=args.reuse_base, label="privacy-base", from_label=None,
                                       stages=STAGES, set=[]), rows, args.seed)
    results = []
    for lam in [None, *args.lambdas]:  # None: the default MMR, rerun the same way
        label = "calibrated-mmr" if lam is None else f"calibrated-{lam:g}".replace(".", "_")
        sets = [] if lam is None else ["recommend.reranker=calibrated", f"recommend.calibration_lambda={lam}"]
        out = one_seed(argparse.Namespace(**common, reuse=False, label=label, from_label="privacy-base",
                                          stages="recommend_nightly", set=sets), rows, args.seed)
        results.append({"reranker": "mmr (default)" if lam is None else "calibrated", "lambda": lam,
                         "models": out["models"], "pipeline": out["pipeline"]})
    command = "python benchmarks/calibration_ml100k.py " + " ".join(sys.argv[1:])
    payload = {"benchmark": "calibration_ml100k", "date": dt.date.today().isoformat(), "machine": machine(),
               "command": command, "seed": args.seed, "rows": results}
    base_ndcg = results[0]["models"]["product"]["ndcg"]
    als = base["models"]["als"]
    lines = ["# calibration_ml100k", "", f"Measured {payload['date']} on {payload['machine']}; `{command}`.", "",
             f"MovieLens 100K, product_ml100k's per-user 75/25 split (seed {args.seed}); the published table "
             "(gold.recommendations) of one pipeline run, re-ranked by each setting (recommend_nightly rerun on a "
             "copy). calibration KL: mean over users of KL(history genre mix || top-10 genre mix smoothed with "
             "alpha 0.01); lower is better calibrated.", "",
             "| re-ranker | calibration_lambda | published nDCG@10 | vs MMR | calibration KL | recommend_nightly s |",
             "|---|---|---|---|---|---|"]
    for r in results:
        m = r["models"]["product"]
        lam = "-" if r["lambda"] is None else f"{r['lambda']:g}"
        secs = r["pipeline"].get("seconds")
        lines.append(f"| {r['reranker']} | {lam} | {m['ndcg']:.4f} | {m['ndcg'] / base_ndcg - 1:+.1%} | "
                     f"{m['calibration_kl']:.4f} | {'-' if secs is None else f'{secs:.0f}'} |")
    b = base["models"]["product"]
    lines += ["", f"ALS's own top 10 on the same split: nDCG@10 {als['ndcg']:.4f}, calibration KL "
              f"{als['calibration_kl']:.4f}. The base pipeline run's own table (MMR): nDCG@10 {b['ndcg']:.4f}, "
              f"calibration KL {b['calibration_kl']:.4f}. Each row's time is its recommend_nightly process.", ""]
    write_results("calibration_ml100k", payload, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
