"""The candidate rows and features of two liverec versions on the same tables, compared row by row.

    python benchmarks/candidates_parity.py write --work DIR --ds DS --out FILE.parquet [--users N]
    python benchmarks/candidates_parity.py compare OLD.parquet NEW.parquet [--label NAME]

``write`` computes, with whichever liverec is importable (``PYTHONPATH=<checkout>/lib`` picks another version),
the nightly job's candidates and features of the active users of a benchmark lakehouse (``--work``: a folder
``benchmarks/product_ml100k.py`` or ``nightly_scale.py`` left, with lakehouse/ and mlflow.db): user_id, item_id,
als_rank, ease_rank, sources, source, via, dense, recent_items. Versions before the per-user lists
(``candidates.candidate_rows``) run ``candidates.generate`` + ``features.assemble``. ``compare`` joins two such
files on (user_id, item_id) and reports the rows only one has, the columns that differ and the largest
difference of each dense feature. Writes benchmarks/results/candidates_parity[_<label>].{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write(args: argparse.Namespace) -> int:
    from pyspark.sql import functions as F

    from liverec import candidates, catalog, cleaning, fallback, features, tables
    from liverec.config import load_settings
    from liverec.progress import Progress
    from liverec.session import build_spark
    from liverec.stages.base import Context, latest, latest_ease, latest_factors, require_silver, social

    work = Path(args.work)
    settings = load_settings(overrides=[
        f"lakehouse_root={work / 'lakehouse'}", f"scratch_dir={work / 'scratch-parity'}",
        f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}", "demo_mode=true", "spark.driver_memory=8g",
        "recommend.active_days=100000", *args.set])
    spark = build_spark(settings, "candidates-parity")
    ctx = Context(spark, settings, args.ds, Progress("parity"))
    events = require_silver(ctx).cache()
    prof, _ = latest(ctx, tables.USER_PROFILES)
    uf, itf, _, _ = latest_factors(ctx)
    ease_model, _, _ = latest_ease(ctx)
    emb, _ = latest(ctx, tables.ITEM_EMBEDDINGS)
    nb, _ = latest(ctx, tables.ITEM_NEIGHBORS)
    items = catalog.latest_items(spark, settings, args.ds)
    users = fallback.active_users(events, settings.recommend.active_days)
    if args.users:
        users = users.orderBy("user_id").limit(args.users)
    start = time.monotonic()
    f = features.features_from(spark, events, prof, uf, itf, ease_model, items, emb, social(ctx), settings,
                               cleaning.id_key(settings))
    if hasattr(candidates, "candidate_rows"):
        rows = candidates.candidate_rows(f, users, nb, settings)
    else:
        conf = settings.recommend
        cands = candidates.generate(spark, f, users, nb, conf)
        rows = features.assemble(cands, f, settings.ranker.recent_items, conf.als_candidates, conf.ease_candidates)
    rows.select("user_id", "item_id", "als_rank", "ease_rank", "sources", "source", "via", "dense",
                F.col("recent_items")).write.mode("overwrite").parquet(args.out)
    print(f"wrote {args.out} in {time.monotonic() - start:.1f}s", flush=True)
    return 0


def compare(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd
    from _measure import machine, write_results

    from liverec.features import DENSE_FEATURES

    old, new = pd.read_parquet(args.old), pd.read_parquet(args.new)
    both = old.merge(new, on=["user_id", "item_id"], how="outer", suffixes=("_old", "_new"), indicator=True)
    only_old, only_new = int((both["_merge"] == "left_only").sum()), int((both["_merge"] == "right_only").sum())
    m = both[both["_merge"] == "both"]
    out = {"rows_old": len(old), "rows_new": len(new), "users": int(old["user_id"].nunique()), "only_old": only_old,
           "only_new": only_new, "differ": {}}
    for c in ("als_rank", "ease_rank", "source", "via"):
        a, b = m[f"{c}_old"], m[f"{c}_new"]
        out["differ"][c] = int((~((a == b) | (a.isna() & b.isna()))).sum())
    out["differ"]["sources"] = int(sum(list(a) != list(b) for a, b in zip(m["sources_old"], m["sources_new"],
                                                                          strict=True)))
    out["differ"]["recent_items"] = int(sum(list(a) != list(b) for a, b in zip(m["recent_items_old"],
                                                                               m["recent_items_new"], strict=True)))
    d_old, d_new = np.stack(m["dense_old"].to_numpy()), np.stack(m["dense_new"].to_numpy())
    diff = np.abs(d_old.astype(np.float64) - d_new.astype(np.float64))
    out["dense_max_abs_diff"] = {n: float(diff[:, j].max()) for j, n in enumerate(DENSE_FEATURES)}
    out["dense_rows_over_1e-5"] = int((diff > 1e-5 * np.maximum(1.0, np.abs(d_old))).any(axis=1).sum())
    name = "candidates_parity" + (f"_{args.label}" if args.label else "")
    lines = [f"# {name}", "", f"Measured {dt.date.today().isoformat()} on {machine()}; `python "
             f"benchmarks/candidates_parity.py compare {args.old} {args.new}`"
             f"{' (' + args.note + ')' if args.note else ''}.",
             "", f"- rows: {len(old):,} before, {len(new):,} after, {out['users']:,} users; only before: {only_old:,}, "
             f"only after: {only_new:,}",
             "- rows whose column differs: " + ", ".join(f"{k} {v:,}" for k, v in out["differ"].items()),
             f"- rows with a dense feature off by more than 1e-5 (relative above 1): {out['dense_rows_over_1e-5']:,}",
             "", "| feature | largest absolute difference |", "|---|---|",
             *[f"| {k} | {v:.2e} |" for k, v in out["dense_max_abs_diff"].items()], ""]
    write_results(name, {"date": dt.date.today().isoformat(), "machine": machine(), **out}, lines)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--work", required=True)
    w.add_argument("--ds", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--users", type=int)
    w.add_argument("--set", action="append", default=[])
    c = sub.add_parser("compare")
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("--label", default="")
    c.add_argument("--note", default="")
    args = ap.parse_args()
    return write(args) if args.cmd == "write" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
