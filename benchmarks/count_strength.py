"""Counts as strength: ALS trained with purchase quantities (``als.count_events``) against the same log with
every purchase counted once, on a real count log (UCI Online Retail: each invoice line's Quantity).

    python benchmarks/count_strength.py [--data ../shared/data/uci-online-retail/online_retail.csv.xz]
                                        [--seeds 42 7 2024]

The log is ingested and cleaned once by the pipeline's own stages; then, per setting, the evaluation's ALS
baseline (the tuned defaults) on the random per-user 75/25 split (three seeds) and the temporal split
(the newest 20% of the log's time), nDCG@10 and recall@10 on the held-out pairs (every pair counts once
as relevant: the question is whether quantities help ALS find what a customer buys, not whether it
predicts quantities). Writes benchmarks/results/count_strength.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import statistics
import sys
from pathlib import Path

from _measure import isolated_args, machine, run_measured, write_results

REPO = Path(__file__).resolve().parents[1]
DS = "2024-01-15"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "uci-online-retail" /
                                          "online_retail.csv.xz"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 2024])
    args = ap.parse_args()
    work = REPO / ".liverec" / "bench-count"
    liverec = str(Path(sys.executable).parent / "liverec")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    common = [*isolated_args(work, "6g"), "--ds", DS]
    if not (work / "lakehouse" / "silver" / "events").exists():
        work.mkdir(parents=True, exist_ok=True)
        run_measured([liverec, "run", "ingest", *common, "--source", "online_retail", "--input", args.data], env,
                     work / "ingest.log")
        run_measured([liverec, "run", "clean", *common], env, work / "clean.log")

    from liverec import catalog, evaluation
    from liverec.config import load_settings
    from liverec.session import build_spark

    base = load_settings(overrides=[common[i + 1] for i in range(0, len(common) - 2, 2)])
    base = dataclasses.replace(base, ease=dataclasses.replace(base.ease, enabled=False))  # only ALS is compared
    spark = build_spark(base, "bench-count")
    events = catalog.events_until(spark, base, DS).cache()
    n_events = events.count()
    results: dict[str, dict] = {}
    for label, counted in (("counted once", []), ("quantity as count", ["purchase", "return"])):
        settings = dataclasses.replace(base, als=dataclasses.replace(base.als, count_events=counted))
        runs = []
        for seed in args.seeds:
            s = dataclasses.replace(settings, evaluate=dataclasses.replace(settings.evaluate, seed=seed))
            (r, _), = evaluation.run(spark, s, events, ["random"], 10, str(work / "ckpt"), None)
            runs.append({"split": f"random seed {seed}", **{m: r.results["als"][m] for m in ("ndcg", "recall")}})
        (r, _), = evaluation.run(spark, settings, events, ["temporal"], 10, str(work / "ckpt"), None)
        runs.append({"split": "temporal", **{m: r.results["als"][m] for m in ("ndcg", "recall")}})
        results[label] = {"count_events": counted, "runs": runs,
                          "random_mean_ndcg": statistics.mean(x["ndcg"] for x in runs[:-1])}
        print(label, [round(x["ndcg"], 4) for x in runs], flush=True)
    command = "python benchmarks/count_strength.py " + " ".join(sys.argv[1:])
    payload = {"benchmark": "count_strength", "date": dt.date.today().isoformat(), "machine": machine(),
               "command": command, "events": n_events, "count_cap": base.als.count_cap, "results": results}
    labels = list(results)
    lines = ["# count_strength", "", f"Measured {payload['date']} on {payload['machine']}; `{command}`.", "",
             f"UCI Online Retail after clean ({n_events:,} events: purchase lines with Quantity as value, "
             f"returns); ALS with the tuned defaults; strength of a counted event = weight x (1 + ln(min(value, "
             f"{base.als.count_cap:g}))).", "",
             "| split | " + " | ".join(f"{x} nDCG@10" for x in labels) + " | " +
             " | ".join(f"{x} recall@10" for x in labels) + " |", "|---" * (1 + 2 * len(labels)) + "|"]
    for i, run in enumerate(results[labels[0]]["runs"]):
        lines.append(f"| {run['split']} | " + " | ".join(f"{results[x]['runs'][i]['ndcg']:.4f}" for x in labels) +
                     " | " + " | ".join(f"{results[x]['runs'][i]['recall']:.4f}" for x in labels) + " |")
    lines += ["", "Random split, mean nDCG@10: " + ", ".join(
        f"{x} {results[x]['random_mean_ndcg']:.4f}" for x in labels), ""]
    write_results("count_strength", payload, lines)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
