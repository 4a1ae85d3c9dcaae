"""Robustness to manipulation: a shilling attack on MovieLens 100K, with and without the cleaning job's defence.

    python benchmarks/shilling_ml100k.py [--seed 42] [--attacks average bandwagon] [--sizes 0.01 0.03]
                                         [--work DIR] [--clean-run DIR] [--runs NAME ...] [--reuse]

``product_ml100k``'s protocol: per user 75/25 (numpy ``default_rng(seed)``), the training part written as a MovieLens
folder, the real pipeline (``liverec pipeline --source movielens --stages ingest,...,recommend_nightly``) on it,
gold.recommendations scored against the held-out part. Fake users go into the training part only:

- target: one item drawn (``default_rng(seed)``) from the items with 5 to 10 ratings in the training part;
- a fake profile (Lam & Riedl 2004; Mobasher et al. 2007): the target rated 5 and ``filler`` other items (the
  median real training profile's length), each rated round(N(item mean, item std)) of the training part, clipped
  to 1..5. ``average``: fillers drawn uniformly from the rated items; ``bandwagon``: from the 101 most rated ones;
- a campaign: each account starts at a uniform time within two hours from one hour after the newest training
  rating, and rates its profile in a random order with exponential gaps of mean 30 s (a person's pace: the bot
  rules do not fire);
- sizes: a share of the real users (943 -> 1%: 9, 3%: 28 accounts).

Per run: the target's hit rate (share of the real users with a held-out part whose published top 10 holds the
target), the published nDCG@10, and who the cleaning job quarantined (silver.quarantine). "No defence" runs with
``--set clean.shilling_enabled=false``; "defence" with ``--set clean.shilling_enabled=true`` (off by default). Before the
pipelines, ``liverec.cleaning.classify`` (the rule on) runs on the clean training part and on every attacked one,
which gives the rule's false positives on the clean data. The clean row reuses an earlier clean pipeline run of the
same split (``--clean-run``) when the rule flags no user of the clean training part (its pipeline input is then
what the defence leaves) and its u.data is this split's; otherwise it runs here.

Writes benchmarks/results/shilling_ml100k.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from _measure import isolated_args, machine, run_measured, write_results
from product_ml100k import DS, OVERLAY, REPO, STAGES, K, load, ndcg_precision, read_table, split

OFF, ON = "clean.shilling_enabled=false", "clean.shilling_enabled=true"
SPAN_S, START_AFTER_S, GAP_S, POPULAR = 7200, 3600, 30.0, 101


def choose_target(train: np.ndarray, seed: int) -> int:
    items, counts = np.unique(train[:, 1], return_counts=True)
    return int(np.random.default_rng(seed).choice(items[(counts >= 5) & (counts <= 10)]))


def fake_profiles(train: np.ndarray, target: int, n_fake: int, kind: str, seed: int) -> np.ndarray:
    """Rows (user, item, rating, ts) of ``n_fake`` attack profiles pushing ``target`` (the module's docstring)."""
    rng = np.random.default_rng([seed, n_fake, ("average", "bandwagon").index(kind)])
    items, counts = np.unique(train[:, 1], return_counts=True)
    mean = {int(i): float(train[train[:, 1] == i, 2].mean()) for i in items}
    std = {int(i): float(train[train[:, 1] == i, 2].std()) for i in items}
    pool = items if kind == "average" else items[np.argsort(-counts, kind="stable")][:POPULAR]
    pool = pool[pool != target]
    filler = int(np.median(np.unique(train[:, 0], return_counts=True)[1]))
    first_id, start = int(train[:, 0].max()) + 1, int(train[:, 3].max()) + START_AFTER_S
    out = []
    for k in range(n_fake):
        fill = rng.choice(pool, size=min(filler, len(pool)), replace=False)
        ratings = [int(np.clip(np.rint(rng.normal(mean[int(i)], std[int(i)])), 1, 5)) for i in fill]
        profile = [(target, 5), *zip(fill.tolist(), ratings, strict=True)]
        order = rng.permutation(len(profile))
        ts = start + rng.uniform(0, SPAN_S) + np.cumsum(rng.exponential(GAP_S, len(profile)))
        out += [(first_id + k, profile[j][0], profile[j][1], int(t)) for j, t in zip(order, ts, strict=True)]
    return np.array(out, dtype=np.int64)


def classify_flags(data: Path, parts: dict[str, np.ndarray], first_fake: int, work: Path) -> dict[str, dict]:
    """Per training part: users the cleaning job (the rule on) quarantines, by reason, real and fake apart."""
    from pyspark.sql import functions as F

    from liverec import cleaning, ingest, readers
    from liverec.config import load_settings
    from liverec.session import build_spark

    settings = load_settings(overrides=[f"lakehouse_root={work / 'lakehouse'}", f"scratch_dir={work / 'scratch'}",
                                        "spark.shuffle_partitions=4", "demo_mode=true", ON])
    spark = build_spark(settings, "shilling_ml100k")
    out = {}
    for name, rows in parts.items():
        folder = work / "classify" / name
        write_folder(folder, rows, data)
        bronze = ingest.to_bronze(readers.read_movielens(spark, str(folder)).events, DS, name)
        got = (cleaning.classify(bronze, settings, DS, None).where(F.col("_status") == cleaning.STATUS_QUARANTINE)
               .select("user_id", "_reason", "_detail").distinct().collect())
        flagged: dict[str, dict[str, int]] = {}
        for r in got:
            side = "fake" if int(r["user_id"]) >= first_fake else "real"
            flagged.setdefault(r["_reason"], {"real": 0, "fake": 0})[side] += 1
        details = sorted({r["_detail"] for r in got if r["_reason"] == "shilling"})
        out[name] = {"flagged": flagged, "shilling_details": details[:5]}
        print(f"classify {name}: {flagged}", flush=True)
    spark.stop()
    return out


def write_folder(folder: Path, rows: np.ndarray, data: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    np.savetxt(folder / "u.data", rows, fmt="%d", delimiter="\t")
    for name in ("u.item", "u.genre"):
        shutil.copy(data / name, folder / name)


def pipeline(work: Path, rows: np.ndarray, data: Path, sets: list[str]) -> dict[str, float]:
    if work.exists():
        shutil.rmtree(work)
    write_folder(work / "ml-100k-train", rows, data)
    cmd = [str(Path(sys.executable).parent / "liverec"), "pipeline", *isolated_args(work, "6g"), *OVERLAY,
           *[x for kv in sets for x in ("--set", kv)], "--ds", DS, "--source", "movielens",
           "--input", str(work / "ml-100k-train"), "--stages", STAGES]
    run = run_measured(cmd, {**os.environ, "PYSPARK_PYTHON": sys.executable}, work / "pipeline.log")
    print(f"{work.name}: pipeline {run['seconds']:.0f} s", flush=True)
    return run


def als_ranks(lake: Path, pseudo: dict[str, int], seen: dict[int, set[int]], users: list[int], target: int) -> np.ndarray:
    """The target's rank (0 = first) among each user's unseen items by the run's ALS factors (gold.user_factors x
    gold.item_factors): ALS is a candidate source and a feature of the ranker, so a push shows here first."""
    uf = read_table(lake / "gold" / "user_factors", f"select user_id, features from t where ds = '{DS}'")
    itf = read_table(lake / "gold" / "item_factors", f"select item_id, features from t where ds = '{DS}'")
    vec = {pseudo[u]: np.asarray(f) for u, f in zip(uf["user_id"], uf["features"], strict=True)}
    ids = np.array([int(i) for i in itf["item_id"]])
    items = np.stack([np.asarray(f) for f in itf["features"]])
    col = {int(i): k for k, i in enumerate(ids)}
    out = []
    for u in users:
        s = items @ vec[u]
        s[[col[i] for i in seen[u] if i in col]] = -np.inf
        out.append(int((s > s[col[target]]).sum()))
    return np.array(out)


def score(work: Path, users: np.ndarray, first_fake: int, test_sets: dict[int, set[int]], target: int,
          seen: dict[int, set[int]]) -> dict:
    """Target hit rate and nDCG@10 of the published table for the real users, the target's ALS ranks, and the
    users silver.quarantine holds, by reason."""
    from liverec.cleaning import pseudonymise_value
    from liverec.config import load_settings

    key = load_settings(overrides=["demo_mode=true"]).ids.demo_key.encode()
    pseudo = {pseudonymise_value(str(u), key): int(u) for u in users}
    lake = work / "lakehouse"
    recs = read_table(lake / "gold" / "recommendations", f"select user_id, item_id, rank from t where ds = '{DS}'")
    lists: dict[int, list[tuple[int, int]]] = {}
    for u, i, r in zip(recs["user_id"], recs["item_id"], recs["rank"], strict=True):
        lists.setdefault(pseudo[u], []).append((int(r), int(i)))
    top = {u: [i for _, i in sorted(v)][:K] for u, v in lists.items()}
    hits = sum(target in top.get(u, []) for u in test_sets)
    quarantined: dict[str, dict[str, int]] = {}
    if (lake / "silver" / "quarantine").exists():
        q = read_table(lake / "silver" / "quarantine", f"select distinct reason, user_id from t where ds = '{DS}'")
        for reason, u in zip(q["reason"], q["user_id"], strict=True):
            side = "fake" if pseudo.get(u, 0) >= first_fake else "real"
            quarantined.setdefault(reason, {"real": 0, "fake": 0})[side] += 1
    ranks = als_ranks(lake, pseudo, seen, sorted(test_sets), target)
    return {"hit_rate": hits / len(test_sets), "hits": hits, "real_users": len(test_sets),
            "als_top50": float((ranks < 50).mean()), "als_top200": float((ranks < 200).mean()),
            "als_median_rank": float(np.median(ranks)),
            "ndcg": ndcg_precision({u: v for u, v in top.items() if u < first_fake}, test_sets)["ndcg"],
            "fake_lists_with_target": sum(target in v for u, v in top.items() if u >= first_fake),
            "quarantined_users": quarantined}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ml-100k")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--attacks", nargs="+", default=["average"], choices=["average", "bandwagon"])
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.01, 0.03])
    ap.add_argument("--work", type=Path, default=REPO / ".liverec" / "bench-shill")
    ap.add_argument("--clean-run", type=Path, help="an earlier clean pipeline run of this split (product_ml100k's "
                                                  "work folder, e.g. .liverec/bench-product/privacy-base-42)")
    ap.add_argument("--runs", nargs="*", help="run only these pipelines now (names as in the table; none: only "
                                              "score); the others are scored from earlier runs when they exist")
    ap.add_argument("--reuse", action="store_true", help="score earlier runs instead of rerunning them")
    args = ap.parse_args()

    rows = load(args.data)
    train_mask, test_mask = split(rows, args.seed)
    train = rows[train_mask]
    first_fake = int(rows[:, 0].max()) + 1
    real_users = len(np.unique(rows[:, 0]))
    target = choose_target(train, args.seed)
    seen: dict[int, set[int]] = {}
    for u, i in train[:, :2]:
        seen.setdefault(int(u), set()).add(int(i))
    test_sets: dict[int, set[int]] = {}
    for u, i in rows[test_mask, :2]:
        test_sets.setdefault(int(u), set()).add(int(i))
    fakes = {(kind, size): fake_profiles(train, target, int(round(size * real_users)), kind, args.seed)
             for kind in args.attacks for size in args.sizes}
    parts = {"clean": train, **{f"{kind}-{size:.0%}": np.vstack([train, f]) for (kind, size), f in fakes.items()}}
    cached = args.work / "classify.json"
    if args.reuse and cached.exists() and set(json.loads(cached.read_text())) == set(parts):
        checks = json.loads(cached.read_text())
    else:
        checks = classify_flags(args.data, parts, first_fake, args.work)
        cached.write_text(json.dumps(checks))

    clean_flags = checks["clean"]["flagged"]
    reuse_clean = None
    if args.clean_run and not any(v["real"] for v in clean_flags.values()):
        earlier = np.loadtxt(args.clean_run / "ml-100k-train" / "u.data", dtype=np.int64)
        if earlier.shape == train.shape and (earlier == train).all():
            reuse_clean = args.clean_run
    variants = [("clean", train, [], reuse_clean)]
    for (kind, size), f in fakes.items():
        for defence in (False, True):
            name = f"{kind} {size:.0%} {'defence' if defence else 'no defence'}"
            variants.append((name, np.vstack([train, f]), [ON] if defence else [OFF], None))
    n_max = max(len(np.unique(f[:, 0])) for f in fakes.values())
    users = np.r_[np.unique(rows[:, 0]), np.arange(first_fake, first_fake + n_max)]
    results = []
    for name, part, sets, earlier in variants:
        work = earlier or args.work / name.replace(" ", "-").replace("%", "pc")
        run: dict = {}
        fresh = (args.runs is None or name in args.runs) and earlier is None
        if fresh and not (args.reuse and (work / "lakehouse" / "gold" / "recommendations").exists()):
            run = pipeline(work, part, args.data, sets)
            (work / "run.json").write_text(json.dumps(run))
        elif (work / "run.json").exists():  # an earlier invocation ran it: its figures
            run = json.loads((work / "run.json").read_text())
        if not (work / "lakehouse" / "gold" / "recommendations").exists():
            print(f"{name}: no run yet", flush=True)
            continue
        got = score(work, users, first_fake, test_sets, target, seen)
        results.append({"name": name, "work": str(work), "sets": sets, "pipeline": run, **got})
        print(f"{name}: hit rate {got['hit_rate']:.4f}, ALS top 50 {got['als_top50']:.4f}, nDCG@10 "
              f"{got['ndcg']:.4f}, quarantined {got['quarantined_users']}", flush=True)

    t_count = int((train[:, 1] == target).sum())
    command = "python benchmarks/shilling_ml100k.py " + " ".join(sys.argv[1:])
    from liverec.config import load_settings

    conf = load_settings().clean
    knobs = {k: getattr(conf, k) for k in ("shilling_min_accounts", "shilling_min_lift", "shilling_window_seconds",
                                           "shilling_max_account_span_seconds")}
    payload = {"benchmark": "shilling_ml100k", "date": dt.date.today().isoformat(), "machine": machine(),
               "command": command, "seed": args.seed, "target": target, "target_train_ratings": t_count,
               "filler": int(np.median(np.unique(train[:, 0], return_counts=True)[1])),
               "fake_users": {f"{k} {s:.0%}": int(len(np.unique(f[:, 0]))) for (k, s), f in fakes.items()},
               "real_users": real_users, "conf": knobs, "off_switch": OFF, "classify": checks,
               "clean_reused_from": str(reuse_clean) if reuse_clean else None, "rows": results}
    write_results("shilling_ml100k", payload, report(payload))
    return 0


def report(p: dict) -> list[str]:
    rows = {r["name"]: r for r in p["rows"]}
    clean = rows.get("clean")
    c = p["conf"]
    fp = p["classify"]["clean"]["flagged"].get("shilling", {"real": 0})["real"]
    lines = ["# shilling_ml100k", "", f"Measured {p['date']} on {p['machine']}; `{p['command']}`.", "",
             f"MovieLens 100K, product_ml100k's per-user 75/25 split (seed {p['seed']}); target item {p['target']} "
             f"({p['target_train_ratings']} ratings in the training part); fake profiles of {p['filler']} fillers + "
             "the target rated 5, a campaign within two hours after the newest rating (the script's docstring). "
             "Hit rate: share of the real users with a held-out part whose published top 10 holds the target. "
             f"Defence: the cleaning job's `shilling` rule (min accounts {c['shilling_min_accounts']}, min lift "
             f"{c['shilling_min_lift']:g}, window {c['shilling_window_seconds']} s on two grids, fresh = span <= "
             f"{c['shilling_max_account_span_seconds']} s); no defence: `--set {p['off_switch']}`, defence: "
             f"`--set {ON}` (the rule is off by default: conf/base.yaml says why).", "",
             "| run | fake accounts | target hit rate (published top 10) | lift vs clean | lift cut by the defence | "
             "ALS top 50 / top 200 share, median rank | ALS top-50 lift cut by the defence | published nDCG@10 | "
             "quarantined as shilling: fake / real users | pipeline s |", "|---|---|---|---|---|---|---|---|---|---|"]

    def cut(name: str, key: str) -> str:
        off = rows.get(name.replace(" defence", " no defence"))
        if not (name.endswith(" defence") and not name.endswith("no defence") and off and clean):
            return ""
        if off[key] <= clean[key]:
            return "no lift to cut"
        return f"{1 - (rows[name][key] - clean[key]) / (off[key] - clean[key]):.0%}"

    for name, r in rows.items():
        lift = r["hit_rate"] - clean["hit_rate"] if clean else float("nan")
        n_fake = next((v for k, v in p["fake_users"].items() if name.startswith(k)), 0)
        q = r["quarantined_users"].get("shilling", {"fake": 0, "real": 0})
        lines.append(f"| {name} | {n_fake} | {r['hit_rate']:.4f} ({r['hits']}/{r['real_users']}) | "
                     f"{lift:+.4f} | {cut(name, 'hit_rate')} | {r['als_top50']:.4f} / {r['als_top200']:.4f}, "
                     f"{r['als_median_rank']:.0f} | {cut(name, 'als_top50')} | {r['ndcg']:.4f} | "
                     f"{q['fake']} / {q['real']} | {r['pipeline'].get('seconds', float('nan')):.0f} |")
    same = [r["ndcg"] for n, r in rows.items() if n == "clean" or (n.endswith(" defence") and "no defence" not in n)]
    attacked = [r["ndcg"] for n, r in rows.items() if n.endswith("no defence")]
    lifted = [n for n, r in rows.items() if n.endswith("no defence") and clean and r["hit_rate"] > clean["hit_rate"]]
    lines += ["", "Reading the table: " + (
        "no attack lifted the target's published hit rate (" + ", ".join(
            f"{n}: {rows[n]['hits']}" for n in rows if n.endswith("no defence")) + " of the real users' top 10s "
        "hold it, as in the clean run), so on the published table there is no lift for the defence to cut. "
        if not lifted else f"the attacks that lifted the published hit rate: {', '.join(lifted)}. ") +
        "The push shows one step earlier, in the same runs' ALS factors (a candidate source and a ranker feature): "
        "the share of real users whose ALS ranking puts the target in its top 50 / top 200 unseen items rises without "
        "the defence and is back to the clean run's with it (the defence runs' ALS input is the clean run's: the rule "
        "quarantined every fake account and no real one). Published nDCG@10 of the runs whose silver.events is the "
        f"clean run's (clean and the defence runs): {min(same):.4f} to {max(same):.4f}, the pipeline's run-to-run "
        "spread on one input (the ranker's training is not bit-reproducible); of the runs without the defence: "
        f"{min(attacked):.4f} to {max(attacked):.4f}."]
    lines += ["", f"False positives on the clean training part (classify, the rule on): {fp} of "
              f"{p['real_users']} real users ({fp / p['real_users']:.2%}). Users each training part's classify "
              "quarantines, by reason (real / fake):", ""]
    for name, v in p["classify"].items():
        lines.append(f"- {name}: " + (", ".join(f"{k} {x['real']} / {x['fake']}" for k, x in sorted(v["flagged"].items()))
                                      or "none") + (f"; e.g. \"{v['shilling_details'][0]}\"" if v["shilling_details"]
                                                    else ""))
    if p["clean_reused_from"]:
        lines += ["", f"The clean row is the pipeline run in {p['clean_reused_from']} (same split, same u.data): the "
                  "rule flags no user of the clean training part, so the defence leaves that pipeline's input as it "
                  "was."]
    lines += ["", "Other reasons in the attacked runs' silver.quarantine (fake / real users): " + "; ".join(
        f"{r['name']}: " + (", ".join(f"{k} {x['fake']} / {x['real']}" for k, x in r["quarantined_users"].items()
                                      if k != "shilling") or "none") for r in p["rows"] if r["name"] != "clean"), ""]
    return lines


if __name__ == "__main__":
    sys.exit(main())
