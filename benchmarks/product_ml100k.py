"""What liverec publishes, end to end, on MovieLens 100K: gold.recommendations against the baselines.

    python benchmarks/product_ml100k.py [--data ../shared/data/ml-100k] [--seeds 42 7 2024] [--reuse]
                                        [--label NAME] [--set key=value ...]

Protocol (the reference numbers of ../shared/data/README.md): every rating is a positive; per user, a
numpy ``default_rng(seed)`` permutation of the user's ratings (users in id order, one generator per
seed) holds out round(25%) of them; every item the user did not train on is ranked; top 10; binary
relevance; nDCG@10 with the ideal DCG over min(|test|, 10) items.

Per seed the training part is written as a MovieLens folder (u.data + u.item + u.genre, under
.liverec/bench-product/, never in the repository) and the production pipeline runs on it as a user
would run it, one process: ``liverec pipeline --source movielens --stages ingest,...,recommend_nightly``
with ``recommend.active_days`` large enough for every user (the conf overlay is in the result file).
Then, scored here with numpy against the held-out part:

- product: gold.recommendations as published (every candidate source, the champion ranker or the
  baseline the gate chose, re-ranking, fallbacks);
- als: the top 10 of the same run's gold.user_factors x gold.item_factors;
- ease: EASE (closed form, lambda --ease-lambda) on the same training part, in numpy;
- popularity: the most-rated training items.

Writes benchmarks/results/product_ml100k[_<label>].{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
from _measure import RESULTS, isolated_args, machine, relocate_registry, run_measured, write_results

REPO = Path(__file__).resolve().parents[1]
DS = "2024-01-15"
K = 10
STAGES = "ingest,clean,embed_items,build_profiles,train_als,train_ease,build_ranker_examples,train_ranker," \
         "recommend_nightly"
OVERLAY = ["--set", "recommend.active_days=100000"]  # every user of the training part gets a list


def load(data: Path) -> np.ndarray:
    return np.loadtxt(data / "u.data", dtype=np.int64)  # user, item, rating, ts


def split(rows: np.ndarray, seed: int, fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """(train mask, test mask): per user (ascending id), a permutation of the user's rows from one generator."""
    rng = np.random.default_rng(seed)
    order = np.argsort(rows[:, 0], kind="stable")
    test = np.zeros(len(rows), dtype=bool)
    bounds = np.r_[0, np.flatnonzero(np.diff(rows[order, 0])) + 1, len(rows)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        idx = order[a:b]
        test[idx[rng.permutation(len(idx))[:int(round(len(idx) * fraction))]]] = True
    return ~test, test


def ndcg_precision(lists: dict[int, list[int]], test: dict[int, set[int]], k: int = K) -> dict[str, float]:
    """Mean nDCG@k, precision@k, recall@k over the test users (a user without a list scores 0)."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    nd, pr, rc = [], [], []
    for user, relevant in test.items():
        top = lists.get(user, [])[:k]
        hits = np.array([i in relevant for i in top], dtype=float)
        dcg = float((hits * disc[:len(hits)]).sum())
        nd.append(dcg / float(disc[:min(len(relevant), k)].sum()))
        pr.append(hits.sum() / k)
        rc.append(hits.sum() / len(relevant))
    return {"ndcg": float(np.mean(nd)), "precision": float(np.mean(pr)), "recall": float(np.mean(rc)),
            "users": len(test)}


def genres(data: Path) -> dict[int, np.ndarray]:
    """item id -> the indices of its genres (u.item's 19 flags)."""
    out = {}
    for line in (data / "u.item").read_text(encoding="latin-1").splitlines():
        f = line.split("|")
        if len(f) >= 24:
            out[int(f[0])] = np.flatnonzero(np.array(f[5:24], dtype=int))
    return out


def calibration_kl(lists: dict[int, list[int]], history: dict[int, list[int]], item_genres: dict[int, np.ndarray],
                   k: int = K, alpha: float = 0.01) -> float:
    """Mean over users of KL(p || (1 - alpha) q + alpha p), p the genre mix of the user's training items, q of the
    top k (an item with g genres adds 1 / g to each; Steck 2018), natural log; users without a genre left out."""
    def mix(items: list[int]) -> np.ndarray:
        m = np.zeros(19)
        for i in items:
            g = item_genres.get(i, np.zeros(0, dtype=int))
            if len(g):
                m[g] += 1.0 / len(g)
        return m / m.sum() if m.sum() > 0 else m

    values = []
    for user, top in lists.items():
        p, q = mix(history.get(user, [])), mix(top[:k])
        if p.sum() == 0:
            continue
        s = (1 - alpha) * q + alpha * p
        values.append(float(np.sum(p[p > 0] * np.log(p[p > 0] / s[p > 0]))))
    return float(np.mean(values))


def top_unseen(scores: np.ndarray, seen: np.ndarray, k: int = K) -> np.ndarray:
    s = np.where(seen, -np.inf, scores)
    top = np.argpartition(-s, k, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable"), 1)


def ease_scores(x: np.ndarray, lam: float) -> np.ndarray:
    g = x.T @ x + lam * np.eye(x.shape[1])
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return x @ b


def read_table(path: Path, sql: str):
    from deltalake import DeltaTable, QueryBuilder

    table = QueryBuilder().register("t", DeltaTable(str(path))).execute(sql).read_all()
    return {name: table[name].to_pylist() for name in table.column_names}


def one_seed(args: argparse.Namespace, rows: np.ndarray, seed: int) -> dict:
    from liverec.cleaning import pseudonymise_value
    from liverec.config import load_settings

    train, test = split(rows, seed)
    work = REPO / ".liverec" / "bench-product" / f"{args.label or 'run'}-{seed}"
    folder = work / "ml-100k-train"
    lakehouse = work / "lakehouse"
    run = {}
    if args.from_label:
        # a variant of an earlier run: its tables and registry copied, then only --stages rerun on them
        source = work.parent / f"{args.from_label}-{seed}"
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(source, work)
        relocate_registry(work / "mlflow.db", source, work)
    if args.from_label or not (args.reuse and (lakehouse / "gold" / "recommendations").exists()):
        if not args.from_label:
            if work.exists():
                shutil.rmtree(work)
            folder.mkdir(parents=True)
            np.savetxt(folder / "u.data", rows[train], fmt="%d", delimiter="\t")
            for name in ("u.item", "u.genre"):
                shutil.copy(Path(args.data) / name, folder / name)
        cmd = [str(Path(sys.executable).parent / "liverec"), "pipeline", *isolated_args(work, "6g"), *OVERLAY,
               *[x for kv in args.set for x in ("--set", kv)], "--ds", DS, "--source", "movielens",
               "--input", str(folder), "--stages", args.stages]
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
        run = run_measured(cmd, env, work / "pipeline.log")
        print(f"seed {seed}: pipeline {run['seconds']:.0f} s, peak {run['peak_rss_gib']:.2f} GiB", flush=True)

    settings = load_settings(overrides=["demo_mode=true"])
    key = settings.ids.demo_key.encode()
    pseudo = {pseudonymise_value(str(u), key): int(u) for u in np.unique(rows[:, 0])}
    n_users, n_items = int(rows[:, 0].max()) + 1, int(rows[:, 1].max()) + 1
    x = np.zeros((n_users, n_items), dtype=np.float64)
    x[rows[train, 0], rows[train, 1]] = 1.0
    seen = x > 0
    test_sets: dict[int, set[int]] = {}
    for u, i in rows[test, :2]:
        test_sets.setdefault(int(u), set()).add(int(i))

    recs = read_table(lakehouse / "gold" / "recommendations",
                      f"select user_id, item_id, rank, source, model_version from t where ds = '{DS}'")
    product: dict[int, list[tuple[int, int]]] = {}
    for u, i, r in zip(recs["user_id"], recs["item_id"], recs["rank"], strict=True):
        product.setdefault(pseudo[u], []).append((int(r), int(i)))
    product_lists = {u: [i for _, i in sorted(v)] for u, v in product.items()}
    sources: dict[str, int] = {}
    for s in recs["source"]:
        sources[s] = sources.get(s, 0) + 1
    versions = sorted({v.split(" (")[0].split(":")[0] + (" (" + v.split(" (")[1] if " (" in v else "")
                       for v in recs["model_version"]})

    uf = read_table(lakehouse / "gold" / "user_factors", f"select user_id, features from t where ds = '{DS}'")
    itf = read_table(lakehouse / "gold" / "item_factors", f"select item_id, features from t where ds = '{DS}'")
    u_vec = np.zeros((n_users, len(uf["features"][0])))
    for u, f in zip(uf["user_id"], uf["features"], strict=True):
        u_vec[pseudo[u]] = f
    i_vec = np.zeros((n_items, u_vec.shape[1]))
    known = np.zeros(n_items, dtype=bool)
    for i, f in zip(itf["item_id"], itf["features"], strict=True):
        i_vec[int(i)], known[int(i)] = f, True
    als = np.where(known[None, :], u_vec @ i_vec.T, -np.inf)

    def lists_of(top: np.ndarray) -> dict[int, list[int]]:
        return {u: top[u].tolist() for u in test_sets}

    als_lists = lists_of(top_unseen(als, seen))
    models = {
        "product": ndcg_precision(product_lists, test_sets),
        "als": ndcg_precision(als_lists, test_sets),
        "ease": ndcg_precision(lists_of(top_unseen(ease_scores(x, args.ease_lambda), seen)), test_sets),
        "popularity": ndcg_precision(lists_of(top_unseen(np.tile(x.sum(axis=0), (n_users, 1)), seen)), test_sets),
    }
    history = {u: np.flatnonzero(seen[u]).tolist() for u in test_sets}
    item_genres = genres(Path(args.data))
    models["product"]["calibration_kl"] = calibration_kl({u: product_lists.get(u, []) for u in test_sets}, history,
                                                         item_genres)
    models["als"]["calibration_kl"] = calibration_kl(als_lists, history, item_genres)
    print(f"seed {seed}: " + ", ".join(f"{m} {v['ndcg']:.4f}" for m, v in models.items())
          + f"; calibration KL product {models['product']['calibration_kl']:.4f}", flush=True)
    return {"seed": seed, "models": models, "product_sources": sources, "product_model_versions": versions,
            "pipeline": run, "ranker_variants": ranker_variants(work / "mlflow.db")}


def ranker_variants(db: Path) -> dict[str, dict[str, float]]:
    """The scoring variants train_ranker measured on its validation rows (metrics ``variant.<name>.<metric>``
    of the latest run that has them; ``default_variant`` its choice): {variant: {metric: value}}."""
    import sqlite3

    with sqlite3.connect(db) as con:
        run = con.execute("select run_uuid from metrics where key = 'variant.torch.pairs_per_s' "
                          "order by timestamp desc limit 1").fetchone()
        if run is None:
            return {}
        out: dict[str, dict[str, float]] = {}
        for key, value in con.execute("select key, value from metrics where run_uuid = ? and key like 'variant.%'",
                                      run):
            _, variant, metric = key.split(".", 2)
            out.setdefault(variant, {})[metric] = value
        chosen = con.execute("select value from params where run_uuid = ? and key = 'default_variant'", run).fetchone()
    return {**out, "default": {"variant": chosen[0]}} if chosen else out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 2024])
    ap.add_argument("--stages", default=STAGES, help="the pipeline's stages to run (default: up to recommend_nightly)")
    ap.add_argument("--ease-lambda", type=float, default=500.0)
    ap.add_argument("--label", default="", help="suffix of the result files and work folder (e.g. before)")
    ap.add_argument("--reuse", action="store_true", help="score an earlier run's tables instead of rerunning")
    ap.add_argument("--from-label", help="copy the run of this label and rerun only --stages on it (e.g. "
                                         "--stages recommend_nightly --set recommend.mmr_lambda=1)")
    ap.add_argument("--set", action="append", default=[], help="extra conf override for the pipeline")
    args = ap.parse_args()
    rows = load(Path(args.data))
    results = [one_seed(args, rows, s) for s in args.seeds]
    name = "product_ml100k" + (f"_{args.label}" if args.label else "")
    if args.reuse and (RESULTS / f"{name}.json").exists():  # --reuse ran no pipeline: keep the figures of the one that ran
        earlier = {r["seed"]: r["pipeline"] for r in json.loads((RESULTS / f"{name}.json").read_text())["seeds"]}
        for r in results:
            r["pipeline"] = r["pipeline"] or earlier.get(r["seed"], {})
    names = list(results[0]["models"])
    summary = {m: {x: statistics.mean(r["models"][m][x] for r in results) for x in ("ndcg", "precision", "recall")}
               for m in names}
    spread = {m: statistics.pstdev(r["models"][m]["ndcg"] for r in results) for m in names}
    command = "python benchmarks/product_ml100k.py " + " ".join(sys.argv[1:])
    payload = {"benchmark": name, "date": dt.date.today().isoformat(), "machine": machine(), "command": command,
               "overlay": OVERLAY + [x for kv in args.set for x in ("--set", kv)], "stages": args.stages,
               "seeds": results, "mean": summary, "ndcg_pstdev": spread}
    lines = [f"# {name}", "", f"Measured {payload['date']} on {payload['machine']}; `{command}`.", "",
             "ml-100k, per-user 75/25 (numpy default_rng(seed) permutation), all unseen items ranked, top 10. "
             "`product` is gold.recommendations as the pipeline published it; `als` is the same run's factors.", "",
             "| model | " + " | ".join(f"nDCG@10 seed {r['seed']}" for r in results) + " | mean nDCG@10 | mean P@10 |",
             "|---" * (len(results) + 3) + "|"]
    for m in names:
        lines.append(f"| {m} | " + " | ".join(f"{r['models'][m]['ndcg']:.4f}" for r in results) +
                     f" | {summary[m]['ndcg']:.4f} ± {spread[m]:.4f} | {summary[m]['precision']:.4f} |")
    lines += ["", "Published rows by source: " + "; ".join(
        f"seed {r['seed']}: " + ", ".join(f"{k} {v}" for k, v in sorted(r["product_sources"].items()))
        for r in results), "", "Model versions in the published table: " + "; ".join(
        f"seed {r['seed']}: {', '.join(r['product_model_versions'])}" for r in results), ""]
    for r in results:
        variants = {v: m for v, m in r["ranker_variants"].items() if v != "default"}
        if variants:
            k = next(m for m in variants["torch"] if m.startswith("ndcg_at_"))
            lines += [f"Seed {r['seed']}: the ranker's scoring variants as train_ranker measured them on its "
                      f"validation rows (one thread; {k.replace('ndcg_at_', 'NDCG@')} on the sampled rows against "
                      "the training loop's labels); default chosen: "
                      f"{r['ranker_variants'].get('default', {}).get('variant', '?')}", "",
                      f"| variant | pairs/s | {k.replace('ndcg_at_', 'NDCG@')} | vs torch | max abs diff to torch |",
                      "|---|---|---|---|---|",
                      *[f"| {v} | {m['pairs_per_s']:,.0f} | {m[k]:.4f} | {m[k] / variants['torch'][k] - 1:+.2%} | "
                        f"{m['max_abs_diff']:.1e} |" for v, m in variants.items()], ""]
    if results[0]["pipeline"]:
        lines.append("Pipeline wall time per seed: " + ", ".join(
            f"{r['pipeline']['seconds']:.0f} s (peak {r['pipeline']['peak_rss_gib']:.2f} GiB)" for r in results))
        lines.append("")
    write_results(name, payload, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
