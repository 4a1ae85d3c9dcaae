"""Request latency of the served online model (``mlflow models serve`` on one core) under a loopback load.

    python benchmarks/online_latency.py [--work .liverec/bench-online] [--prepare] [--requests 2000]

``--prepare`` runs the batch chain on MovieLens 100K into ``--work`` first (ingest .. publish_online, the
stages and settings of tests/conftest.py's ml100k_pipeline). Then:

1. the server: ``liverec serve`` (= ``mlflow models serve --env-manager local``) on
   ``models:/liverec-online@champion``, pinned to CPU 0 (``taskset``), torch on one thread;
2. the requests: known ml-100k users (raw ids) and visitors, each with a session of 1 to 10 clicks on
   random catalogue items (seeded), k = 10; every request scores ``online.candidates`` (200) candidates,
   which step 4 checks in process;
3. the load generator on CPU 1, over one keep-alive HTTP connection per client: ``--warmup`` requests,
   then ``--requests`` timed one at a time (closed loop, 1 client: latency), then the same with
   ``--clients`` concurrent clients (throughput);
4. the scorer alone (in process, no HTTP) on the same requests, for the split of the time.

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
import threading
import time
from pathlib import Path

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


def start_server(work: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(LIVEREC_ONLINE_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    cmd = [*pin, sys.executable, "-m", "liverec.cli", "serve", *settings_args(work), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}; see {log}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the server did not answer /ping in 300 s; see {log}")


def client(port: int, bodies: list[bytes], latencies: list[float], errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for body in bodies:
        t0 = time.perf_counter()
        conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
        latencies.append(time.perf_counter() - t0)
        if resp.status != 200 or len(json.loads(payload)["predictions"]) != 10:
            errors.append(f"{resp.status}: {payload[:200]!r}")


def load(port: int, bodies: list[bytes], clients: int) -> dict[str, float]:
    lat: list[float] = []
    errors: list[str] = []
    shares = [bodies[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=client, args=(port, s, lat, errors)) for s in shares]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    ms = np.array(lat) * 1e3
    return {"requests": len(lat), "clients": clients, "seconds": wall, "requests_per_s": len(lat) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def in_process(work: Path, bodies: list[bytes]) -> dict[str, float]:
    """The scorer alone on the same requests (one thread), and the candidates each one scored."""
    import mlflow
    import torch

    from liverec.config import load_settings

    torch.set_num_threads(1)
    settings = load_settings(overrides=[a for a in settings_args(work) if a != "--set"])
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    scorer = mlflow.pyfunc.load_model(
        f"models:/{settings.online.registered_model}@{settings.online.alias}").unwrap_python_model().scorer
    times, cands = [], []
    for body in bodies:
        req = scorer.parse(json.loads(body)["dataframe_records"][0])
        t0 = time.perf_counter()
        scorer.recommend(req)
        times.append(time.perf_counter() - t0)
        _, banned = scorer.seen(req)
        _, top = scorer.als_top(scorer.fold_in(req), banned)
        cands.append(len(scorer.candidates(req, top, banned)[0]))
    if not bodies:
        return {"item_ids": scorer.item_ids}
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "candidates_min": int(min(cands)), "candidates_mean": float(np.mean(cands)),
            "item_ids": scorer.item_ids}


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
    args = p.parse_args()
    work = args.work.resolve()
    if args.prepare:
        prepare(work, args.data)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    # the catalogue's ids, for random sessions: from the published model itself
    probe = in_process(work, [])
    bodies = requests(probe["item_ids"], args.warmup + args.requests, args.seed)
    alone = in_process(work, bodies[args.warmup:args.warmup + 500])
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    server = start_server(work, args.port, work / "serve.log")
    try:
        if shutil.which("taskset"):
            os.sched_setaffinity(0, {1})
        load(args.port, bodies[:args.warmup], 1)
        one = load(args.port, bodies[args.warmup:], 1)
        many = load(args.port, bodies[args.warmup:], args.clients)
    finally:
        server.terminate()
        server.wait(timeout=30)
    del alone["item_ids"]
    payload = {"machine": machine(), "date": dt.date.today().isoformat(), "server_cpus": "1 (taskset -c 0)",
               "torch_threads": 1, "k": 10, "closed_loop_1_client": one, f"clients_{args.clients}": many,
               "scorer_in_process": alone, "requests": args.requests, "warmup": args.warmup}
    lines = [
        "# online_latency", "",
        f"Measured {payload['date']} on {machine()}: `python benchmarks/online_latency.py"
        f"{' --prepare' if args.prepare else ''} --requests {args.requests}`. The served model is "
        "`models:/liverec-online@champion` built by publish_online from MovieLens 100K (ALS, MiniLM embeddings, "
        "the champion ranker), served by `mlflow models serve --env-manager local` pinned to one core, torch on "
        "one thread; the load generator runs on the other core over keep-alive HTTP on loopback. Requests: 70% "
        "known users, 30% visitors, sessions of 1-10 clicks, k = 10; every request scores "
        f"{alone['candidates_min']}+ candidates (mean {alone['candidates_mean']:.0f}).", "",
        "| load | requests | req/s | p50 ms | p90 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|",
        *[f"| {name} | {r['requests']} | {r['requests_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
          f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} |" for name, r in
          (("closed loop, 1 client", one), (f"{args.clients} concurrent clients", many))],
        "",
        f"The scorer alone (in process, no HTTP/JSON): p50 {alone['p50_ms']:.1f} ms, p99 {alone['p99_ms']:.1f} ms "
        "(fold-in, candidates, features, the ranker on every candidate, MMR, reasons).",
        "", "Target: p99 <= 30 ms (MLPerf DLRM server bound), aim <= 15 ms, for one client on one core.", ""]
    write_results("online_latency", payload, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
