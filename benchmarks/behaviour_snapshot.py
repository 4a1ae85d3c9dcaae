"""Behaviour snapshot for refactors: run the demo chain (the test suite's demo_pipeline size) and the MovieLens 100K
chain, then write per table and per column a row count and an order-independent hash (floats rounded to 5
places), plus the evaluation's metrics. Run it on the code before and after a change and compare the two with
behaviour_compare.py (results/behaviour_refactor.md: the stages-package refactor).

    cd <repo> && python benchmarks/behaviour_snapshot.py OUT_DIR      (with the Makefile's RUN_ENV; ~17 min)
"""

import hashlib
import json
import os
import sys
from pathlib import Path

sys.path[:0] = [os.path.join(os.getcwd(), "lib"), os.path.join(os.getcwd(), "tests")]

from conftest import SHARED_DATA, cli_args, settings_for  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from liverec.cli import main  # noqa: E402
from liverec.session import build_spark  # noqa: E402


def snapshot(spark, lakehouse: Path, reports: Path) -> dict:
    """{layer.table: {rows, columns: {name: hash}}, evaluation: the newest evaluation.json under reports}."""
    out = {}
    for layer in sorted(p for p in lakehouse.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for table in sorted(p for p in layer.iterdir() if (p / "_delta_log").is_dir()):
            df = spark.read.format("delta").load(str(table))
            cols = {}
            for name, typ in df.dtypes:
                col = F.col(name)
                if typ in ("double", "float"):
                    col = F.round(col, 5)
                elif typ.startswith(("array<double", "array<float")):
                    col = F.transform(col, lambda x: F.round(x, 5))
                vals = [r[0] for r in df.select(F.to_json(F.struct(col.alias("v")))).collect()]
                cols[name] = hashlib.sha1("\n".join(sorted(vals)).encode()).hexdigest()[:12]
            out[f"{layer.name}.{table.name}"] = {"rows": df.count(), "columns": cols}
    found = sorted(reports.rglob("evaluation.json")) if reports.is_dir() else []
    out["evaluation"] = json.loads(found[-1].read_text()) if found else None
    return out


def run(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    root = out / "work"
    demo_reports = root / "demo" / "reports"
    demo = settings_for(root / "demo", f"evaluate.report_dir={demo_reports}")
    spark = build_spark(demo, "snapshot")
    small = ["--set", "demo.events=20000", "--set", "demo.users=400", "--set", "demo.items=300", "--set",
             "ranker.epochs=3", "--set", "evaluate.splits=[temporal]", "--set", f"evaluate.report_dir={demo_reports}"]
    assert main(["pipeline", *cli_args(demo), *small, "--ds", "2026-11-02"]) == 0
    (out / "demo.json").write_text(json.dumps(snapshot(spark, Path(demo.lakehouse_root), demo_reports), indent=1,
                                              sort_keys=True, default=str))
    ml_reports = root / "ml" / "reports"
    light = ("ranker.epochs=3", "ranker.num_processes=1", "recommend.als_candidates=100",
             "recommend.ease_candidates=100", "recommend.mmr_pool=30", "evaluate.splits=[random]",
             f"evaluate.report_dir={ml_reports}")
    ml = settings_for(root / "ml", *light)
    assert main(["pipeline", *cli_args(ml), *[x for kv in light for x in ("--set", kv)], "--ds", "2024-01-15",
                 "--source", "movielens", "--input", str(SHARED_DATA / "ml-100k")]) == 0
    (out / "ml100k.json").write_text(json.dumps(snapshot(spark, Path(ml.lakehouse_root), ml_reports), indent=1,
                                                sort_keys=True, default=str))
    print("snapshot written to", out)


if __name__ == "__main__":
    run(Path(sys.argv[1]))
