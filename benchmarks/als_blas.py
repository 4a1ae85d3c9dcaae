"""Spark ALS with native BLAS/LAPACK (OpenBLAS through netlib's JNI) against the Java fallback.

    python benchmarks/als_blas.py [--data ../shared/data/ml-100k] [--rank 48] [--repeats 3]

Native needs the system OpenBLAS (`apt-get install libopenblas0-pthread liblapack3`); Spark's
netlib loader (dev.ludovic.netlib) looks for libblas.so.3 / liblapack.so.3, and when it cannot load
them falls back to its Java implementation (VectorBLAS on JDK 17). Each mode runs in a fresh JVM; the
Java mode is forced by pointing the loader at a library name that does not exist. The log is
checked for which implementation actually loaded. Writes benchmarks/results/als_blas.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

from _measure import machine, write_results

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import dataclasses, json, sys, time
    from pyspark.sql import functions as F
    from liverec import als, readers
    from liverec.cleaning import parse_ts
    from liverec.config import load_settings
    from liverec.session import build_spark
    data, rank, repeats, java_opts, scratch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    s = load_settings(overrides=[f"scratch_dir={scratch}", "spark.master=local[2]", "spark.shuffle_partitions=4",
                                 f"spark.conf.spark.driver.extraJavaOptions={java_opts}"])
    spark = build_spark(s, "bench-blas")
    ev = readers.read_movielens(spark, data).events.select(
        "user_id", "item_id", "event_type", F.col("value").cast("double").alias("value"),
        parse_ts(F.col("ts")).alias("ts"))
    pairs = als.strengths(ev, s.als, s.clean.event_weights)
    users, items = als.index_ids(pairs)
    ratings = pairs.join(users, "user_id").join(items, "item_id").select("user_idx", "item_idx", "strength").cache()
    ratings.count()
    conf = dataclasses.replace(s.als, rank=rank, max_iter=15)
    times = []
    for _ in range(repeats + 1):  # the first fit warms the JVM up and is not counted
        t = time.monotonic()
        model = als.fit(spark, ratings, conf, scratch + "/ckpt")
        model.itemFactors.count()
        times.append(time.monotonic() - t)
    print("RESULT " + json.dumps({"fit_s": times[1:]}))
    spark.stop()
""")


def run_mode(name: str, java_opts: str, args: argparse.Namespace) -> dict:
    scratch = REPO / ".liverec" / f"bench-blas-{name}"
    scratch.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", CHILD, args.data, str(args.rank), str(args.repeats), java_opts,
                           str(scratch)], capture_output=True, text=True, env={**os.environ}, timeout=1800)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{name} run failed:\n{log[-3000:]}")
    result = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
    result["blas"] = "java" if "Failed to load implementation from:dev.ludovic.netlib.blas.JNIBLAS" in log else "native"
    result["lapack"] = ("java" if "Failed to load implementation from:dev.ludovic.netlib.lapack.JNILAPACK" in log
                        else "native")
    result["median_s"] = statistics.median(result["fit_s"])
    print(f"{name}: blas={result['blas']} lapack={result['lapack']} fits {result['fit_s']}", flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--rank", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    native = run_mode("native", "-Dliverec.blas=native", args)
    java = run_mode("java", "-Ddev.ludovic.netlib.blas.nativeLib=liverec-no-such-blas.so "
                            "-Ddev.ludovic.netlib.lapack.nativeLib=liverec-no-such-lapack.so", args)
    result = {"benchmark": "als_blas", "date": dt.date.today().isoformat(), "machine": machine(),
              "data": "MovieLens 100K, 100,000 ratings", "rank": args.rank, "iterations": 15,
              "native": native, "java": java, "speedup_native_over_java": java["median_s"] / native["median_s"]}
    lines = ["# ALS: native BLAS against the Java fallback", "",
             f"Measured {result['date']} on {result['machine']}; `python benchmarks/als_blas.py --rank {args.rank}`. "
             f"ALS fit on MovieLens 100K, rank {args.rank}, 15 iterations, local[2]; median of {args.repeats} fits "
             "after a warm-up fit, each mode in its own JVM.", "",
             "| mode | BLAS loaded | LAPACK loaded | fits s | median s |", "|---|---|---|---|---|"]
    for name, r in (("native", native), ("java", java)):
        lines.append(f"| {name} | {r['blas']} | {r['lapack']} | {', '.join(f'{x:.2f}' for x in r['fit_s'])} | "
                     f"{r['median_s']:.2f} |")
    lines += ["", f"Java median / native median: {result['speedup_native_over_java']:.2f}.", ""]
    write_results("als_blas", result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
