"""Request latency of ``liverec serve`` (Starlette + uvicorn, one core) on each online-store back end.

    python benchmarks/online_latency.py [--work .liverec/bench-online] [--prepare] [--requests 2000]

``--prepare`` runs the batch chain on MovieLens 100K into ``--work`` first (ingest .. publish_online, the
stages and settings of tests/conftest.py's ml100k_pipeline; publish_online materialises the SQLite store).
Then, for each back end (the published SQLite file; a redis-server on a free loopback port, filled with a copy
of the same profiles):

1. the server: ``liverec serve`` on ``models:/liverec-online@champion`` with ``online.store`` set to the back
   end, pinned to CPU 0 (``taskset``), torch on one thread, one uvicorn worker;
2. the requests: known ml-100k users (raw ids: the store's profile and recent events are read per request) and
   visitors, each with a session of 1 to 10 clicks on random catalogue items (seeded), k = 10; every request
   scores ``online.candidates`` (200) candidates, which step 4 checks in process;
3. the load generator on CPU 1 (with redis-server), one process per client, each over one keep-alive HTTP
   connection:
   ``--warmup`` requests, then ``--requests`` timed one at a time (closed loop, 1 client: latency), then the
   same with ``--clients`` concurrent clients (throughput);
4. the scorer alone (in process, no HTTP) on the same requests, the store read timed apart.

Also: the served artifact's size (it holds nothing per user) beside the users in the store, and the store
materialisation of ``--scale-users`` users (the published records repeated under new ids) into each back end.

Writes benchmarks/results/online_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _measure import isolated_args, machine, write_results

REPO = Path(__file__).resolve().parents[1]
DS = "2024-01-15"
STAGES = ("ingest,clean,embed_items,build_profiles,train_als,build_ranker_examples,train_ranker,recommend_nightly,"
          "publish_online")
LIGHT = ["--set", "ranker.epochs=3", "--set", "ranker.num_processes=1", "--set", "recommend.als_candidates=100",
         "--set", "recommend.mmr_pool=30", "--set", "spark.shuffle_partitions=4",
         "--set", "spark.conf.spark.sql.codegen.wholeStage=false",
         "--set", "spark.conf.spark.databricks.delta.snapshotPartitions=2"]


def settings_args(work: Path) -> list[str]:
    return isolated_args(work, "6g")


def prepare(work: Path, data: Path) -> None:
    cmd = [sys.executable, "-m", "liverec.cli", "pipeline", *settings_args(work), *LIGHT, "--ds", DS,
           "--source", "movielens", "--input", str(data / "ml-100k"), "--stages", STAGES]
    subprocess.run(cmd, check=True, cwd=REPO)


def requests(item_ids: list[str], n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        clicks = [{"item_id": rng.choice(item_ids), "event_type": "click", "ts": 1_700_000_000 + j}
                  for j in range(rng.randint(1, 10))]
        user = str(rng.randint(1, 943)) if rng.random() < 0.7 else None
        out.append(json.dumps({"dataframe_records": [{"user_id": user, "session": clicks, "k": 10}]}).encode())
    return out


def start_server(work: Path, port: int, log: Path, store_url: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(LIVEREC_ONLINE_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    cmd = [*pin, sys.executable, "-m", "liverec.cli", "serve", *settings_args(work), "--port", str(port),
           "--workers", "1", "--set", f"online.store={store_url}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}; see {log}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ready")
            resp = conn.getresponse()
            if resp.status == 200:
                used = json.loads(resp.read())["store_url"]
                if used.split(":", 1)[0] != store_url.split(":", 1)[0]:
                    proc.kill()
                    raise RuntimeError(f"the server reads {used}, not {store_url}")
                return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the server was not ready in 300 s; see {log}")


def start_redis(work: Path) -> tuple[subprocess.Popen, str]:
    """A redis-server on a free loopback port (no persistence), on CPU 1 beside the load generator."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    (work / "redis").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([*pin, "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(work / "redis")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    from liverec.online_store import StoreUnavailable, open_store

    deadline = time.monotonic() + 30
    while True:
        try:
            open_store(url).ping()
            return proc, url
        except StoreUnavailable:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


def client(port: int, bodies: list[bytes], out: Any) -> None:
    """One client process: its requests one after another over one keep-alive connection; sends back the
    latencies and the failures (the answers are checked after the clock stops)."""
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat, answers = [], []
    for body in bodies:
        t0 = time.perf_counter()
        conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
        lat.append(time.perf_counter() - t0)
        answers.append((resp.status, payload))
    errors = [f"{status}: {payload[:200]!r}" for status, payload in answers
              if status != 200 or len(json.loads(payload)["predictions"]) != 10]
    out.put((lat, errors))


def load(port: int, bodies: list[bytes], clients: int) -> dict[str, float]:
    """``clients`` processes (not threads: a client thread waiting for the GIL would add its wait to the
    latency it measures), each with its share of ``bodies``."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    out = ctx.Queue()
    shares = [bodies[i::clients] for i in range(clients)]
    procs = [ctx.Process(target=client, args=(port, s, out)) for s in shares]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    lat = [x for r in results for x in r[0]]
    errors = [e for r in results for e in r[1]]
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    ms = np.array(lat) * 1e3
    return {"requests": len(lat), "clients": clients, "seconds": wall, "requests_per_s": len(lat) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def load_scorer(work: Path, store_url: str | None = None):
    import mlflow
    import torch

    from liverec.config import load_settings
    from liverec.online_store import open_store

    torch.set_num_threads(1)
    settings = load_settings(overrides=[a for a in settings_args(work) if a != "--set"])
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    uri = f"models:/{settings.online.registered_model}@{settings.online.alias}"
    scorer = mlflow.pyfunc.load_model(uri).unwrap_python_model().scorer
    if store_url is not None:
        scorer.store = open_store(store_url, settings.online.store_timeout_s, settings.online.store_prefix)
    return scorer, settings, uri


def in_process(work: Path, bodies: list[bytes], store_url: str) -> dict[str, float]:
    """The scorer alone on the same requests (one thread): the parse with its store read, the scoring, and the
    candidates each one scored."""
    scorer, _, _ = load_scorer(work, store_url)
    parse, score, cands = [], [], []
    for body in bodies:
        t0 = time.perf_counter()
        req = scorer.parse(json.loads(body)["dataframe_records"][0])
        t1 = time.perf_counter()
        scorer.recommend(req)
        score.append(time.perf_counter() - t1)
        parse.append(t1 - t0)
        _, banned = scorer.seen(req)
        cands.append(len(scorer.candidates(req, scorer.als_top(scorer.user_vector(req), banned).top, banned)[0]))
    total = (np.array(parse) + np.array(score)) * 1e3
    return {"p50_ms": float(np.percentile(total, 50)), "p99_ms": float(np.percentile(total, 99)),
            "parse_and_store_read_p50_ms": float(np.percentile(np.array(parse) * 1e3, 50)),
            "parse_and_store_read_p99_ms": float(np.percentile(np.array(parse) * 1e3, 99)),
            "scoring_p50_ms": float(np.percentile(np.array(score) * 1e3, 50)),
            "scoring_p99_ms": float(np.percentile(np.array(score) * 1e3, 99)),
            "candidates_min": int(min(cands)), "candidates_mean": float(np.mean(cands)),
            "store_errors": scorer.counters["store_errors"]}


def artifact_size(uri: str, scratch: Path) -> dict[str, float]:
    """Bytes of the served model's files (the bundle, the ranker, the pyfunc's code)."""
    import mlflow

    folder = scratch / "artifact"
    shutil.rmtree(folder, ignore_errors=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder)))
    files = [f for f in local.rglob("*") if f.is_file()]
    bundle = sum(f.stat().st_size for f in files if f.name.startswith("bundle."))
    out = {"total_mb": sum(f.stat().st_size for f in files) / 2**20, "bundle_mb": bundle / 2**20}
    shutil.rmtree(folder, ignore_errors=True)
    return out


def materialise(records: list[tuple[str, bytes]], n: int, url: str) -> dict[str, float]:
    """Seconds to publish ``n`` user records (the published ones repeated under new ids) into the store at url."""
    from liverec.online_store import open_store

    store = open_store(url, 5.0, "scale")
    rows = ((f"scale-user-{k}", records[k % len(records)][1]) for k in range(n))
    t0 = time.perf_counter()
    written = store.publish("2099-01-01", rows)
    seconds = time.perf_counter() - t0
    store.close()
    return {"users": written, "seconds": seconds, "users_per_s": written / seconds,
            "mb": sum(len(records[k % len(records)][1]) for k in range(n)) / 2**20}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=REPO / ".liverec" / "bench-online")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--prepare", action="store_true", help="run the batch chain on ml-100k into --work first")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--port", type=int, default=5077)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--scale-users", type=int, default=140_000)
    args = p.parse_args()
    work = args.work.resolve()
    if args.prepare:
        prepare(work, args.data)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from liverec import tables
    from liverec.online_store import open_store

    scorer, settings, uri = load_scorer(work)
    sqlite_url = tables.online_store_url(settings)
    item_ids = scorer.item_ids
    published = open_store(sqlite_url)
    records = list(published.profiles())
    published.close()
    size = artifact_size(uri, work)
    del scorer
    bodies = requests(item_ids, args.warmup + args.requests, args.seed)
    redis_proc, redis_url = start_redis(work)
    results: dict[str, dict] = {}
    try:
        copy = open_store(redis_url, 5.0, settings.online.store_prefix)
        copy.publish(DS, records)
        copy.close()
        for backend, url in (("sqlite", sqlite_url), ("redis", redis_url)):
            alone = in_process(work, bodies[args.warmup:args.warmup + 500], url)
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            server = start_server(work, args.port, work / f"serve-{backend}.log", url)
            try:
                if shutil.which("taskset"):
                    os.sched_setaffinity(0, {1})
                load(args.port, bodies[:args.warmup], 1)
                one = load(args.port, bodies[args.warmup:], 1)
                many = load(args.port, bodies[args.warmup:], args.clients)
            finally:
                server.terminate()
                server.wait(timeout=30)
                os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
            results[backend] = {"closed_loop_1_client": one, f"clients_{args.clients}": many,
                                "scorer_in_process": alone}
        scale = {"sqlite": materialise(records, args.scale_users, f"sqlite:///{work / 'scale' / 'store.sqlite'}"),
                 "redis": materialise(records, args.scale_users, redis_url)}
        shutil.rmtree(work / "scale", ignore_errors=True)
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=30)
    payload = {"machine": machine(), "date": dt.date.today().isoformat(), "server_cpus": "1 (taskset -c 0)",
               "torch_threads": 1, "k": 10, "requests": args.requests, "warmup": args.warmup,
               "backends": results, "artifact": {**size, "users_in_store": len(records)},
               "materialise": scale}
    cmd = f"python benchmarks/online_latency.py{' --prepare' if args.prepare else ''} --requests {args.requests}"
    lines = [
        "# online_latency", "",
        f"Measured {payload['date']} on {machine()}: `{cmd}`. The served model is "
        "`models:/liverec-online@champion` built by publish_online from MovieLens 100K (ALS, MiniLM embeddings, "
        "the champion ranker), served by `liverec serve` (Starlette + uvicorn, one worker) pinned to one core, "
        "torch on one thread; the load generator (and redis-server) run on the other core over keep-alive HTTP on "
        "loopback. Requests: 70% known users (their profile and recent events read from the store per request), "
        "30% visitors, sessions of 1-10 clicks, k = 10; every request scores "
        f"{results['sqlite']['scorer_in_process']['candidates_min']}+ candidates.", "",
        "| store | load | requests | req/s | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {b} | {name} | {r['requests']} | {r['requests_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
          f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} |" for b in results for name, r in
          (("1 client", results[b]["closed_loop_1_client"]),
           (f"{args.clients} clients", results[b][f"clients_{args.clients}"]))],
        "",
        "The scorer alone (in process, no HTTP/JSON), per store: parse with the store read, then scoring "
        "(candidates, features, the ranker on every candidate, MMR, reasons):", "",
        "| store | total p50 ms | total p99 ms | parse + store read p50 / p99 ms | scoring p50 / p99 ms |",
        "|---|---|---|---|---|",
        *[f"| {b} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} | {a['parse_and_store_read_p50_ms']:.2f} / "
          f"{a['parse_and_store_read_p99_ms']:.2f} | {a['scoring_p50_ms']:.1f} / {a['scoring_p99_ms']:.1f} |"
          for b, a in ((b, results[b]["scorer_in_process"]) for b in results)],
        "",
        f"Served artifact: {size['total_mb']:.1f} MB ({size['bundle_mb']:.1f} MB bundle: item factors, "
        f"embeddings, neighbours, item statistics, EASE; nothing per user) with {len(records):,} users in the store.",
        "",
        f"Store materialisation of {args.scale_users:,} users (the published records repeated under new ids; the "
        "write alone, not Spark building the records): " + "; ".join(
            f"{b} {m['seconds']:.1f} s ({m['users_per_s']:,.0f} users/s, {m['mb']:.0f} MB)" for b, m in scale.items())
        + ".", "",
        "Targets (issue 15): p99 <= 15 ms with 1 client and <= 25 ms with 4 clients, >= 200 req/s, on each store.",
        ""]
    write_results("online_latency", payload, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
