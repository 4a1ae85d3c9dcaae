"""``train_ranker_federated``: the ranker trained across silos with Flower (``liverec.federated``), registered and
judged like ``train_ranker``'s.

Spark partitions the training lists of gold.ranker_examples by silo (a hash of the user: a user's lists are in one
silo) into one parquet folder per silo, and the validation rows into the server's; then the server and one process
per silo run from Flower's environment (``ranker.federated.python``) on the loopback interface, each silo given
only its own folder. Preparing the folders in one Spark job is the simulation's part: in a deployment each silo
would build its own examples where its data lives. The model's starting point (the ALS factors of the vocabulary,
the text table, the dense features' mean and standard deviation over all training rows) is computed centrally too,
as train_ranker computes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from liverec import tables
from liverec.errors import InputError
from liverec.stages.base import CHAMPION, RANKER_VERSION, Context, Stage

ENV_HINT = "make flower-setup (Flower lives in an environment of its own, as Airflow does)"


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--silos", type=int, help="silos (default: conf ranker.federated.silos)")
    p.add_argument("--rounds", type=int, help="FedAvg rounds (default: conf ranker.federated.rounds)")
    p.add_argument("--no-promote", action="store_true", help="register the new version only; promote_ranker decides")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Flower server exited with {proc.returncode} before it listened")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the Flower server did not listen on 127.0.0.1:{port} within {seconds:.0f} s")


def flower_python(path: str) -> str:
    """The interpreter of Flower's environment, checked: it exists and imports flwr."""
    python = Path(path).expanduser()
    if not python.is_file():
        raise InputError(f"ranker.federated.python {python} does not exist: {ENV_HINT}")
    probe = subprocess.run([str(python), "-c", "import flwr"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        raise InputError(f"{python} cannot import flwr ({probe.stderr.strip()[-300:]}): {ENV_HINT}")
    return str(python)


def run_train_ranker_federated(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import mlflow
    import numpy as np
    import torch
    from pyspark.sql import functions as F

    import liverec
    from liverec.ranker import examples as ex
    from liverec.ranker import train
    from liverec.ranker.model import Ranker
    from liverec.stages.ranker import register_trained, training_inputs

    spark, settings, progress, conf = ctx.spark, ctx.settings, ctx.progress, ctx.settings.ranker
    fed = conf.federated
    silos, rounds = getattr(args, "silos", None) or fed.silos, getattr(args, "rounds", None) or fed.rounds
    if silos < 1 or rounds < 1 or fed.local_epochs < 1 or fed.timeout_seconds <= 0:
        raise InputError(f"silos, rounds, ranker.federated.local_epochs and timeout_seconds must be positive, got "
                         f"{silos}, {rounds}, {fed.local_epochs}, {fed.timeout_seconds}")
    python = flower_python(fed.python)
    rows, vocab, ex_ds, id_dim = training_inputs(ctx)
    work = Path(settings.scratch_dir).resolve() / "federated" / ctx.ds
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    # each silo's training lists in a folder of its own (a user's lists in one silo), the validation rows apart
    train_part = rows.where(F.col("split") == "train")
    lists = (ex.training_lists(train_part, conf.recent_items, conf.negatives_per_positive, conf.seed)
             .withColumn("silo", F.pmod(F.col("group"), F.lit(silos)).cast("int")))
    lists.write.partitionBy("silo").parquet(str(work / "lists"))
    per_silo = {r["silo"]: r["count"] for r in spark.read.parquet(str(work / "lists")).groupBy("silo").count()
                .collect()}
    if len(per_silo) < silos:
        raise InputError(f"{len(per_silo)} of {silos} silos got training lists: too few training users for that "
                         "many silos (use fewer)")
    valid = ex.validation_rows(rows.where((F.col("split") == "valid") & F.col("sampled")), conf.recent_items)
    valid.coalesce(1).write.parquet(str(work / "valid"))
    n_valid = valid.count()
    progress.step("silos", sum(per_silo.values()), silos=silos, **{f"silo_{k}": v for k, v in sorted(per_silo.items())})

    shape, id_init, text, mean, std = train.initial_parts(train_part, vocab, conf, id_dim)
    torch.manual_seed(conf.seed)
    model = Ranker(shape, id_init, text, mean, std)
    np.savez(work / "init.npz", __shape__=json.dumps(shape.to_dict()),
             **{k: v.detach().numpy() for k, v in model.state_dict().items()})

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(liverec.__file__).resolve().parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])])}
    port = _free_port()
    logs = work / "logs"
    logs.mkdir()
    started = time.monotonic()
    procs: list[subprocess.Popen] = []
    try:
        with open(logs / "server.log", "w") as out:
            server = subprocess.Popen([python, "-m", "liverec.federated", "server", "--port", str(port), "--silos",
                                       str(silos), "--rounds", str(rounds), "--init", str(work / "init.npz"),
                                       "--valid", str(work / "valid"), "--val-k", str(conf.val_k),
                                       "--out", str(work)], stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append(server)
        _wait_listening(port, server, 120)
        for k in sorted(per_silo):
            with open(logs / f"silo-{k}.log", "w") as out:
                procs.append(subprocess.Popen(
                    [python, "-m", "liverec.federated", "silo", "--server", f"127.0.0.1:{port}", "--silo", str(k),
                     "--data", str(work / "lists" / f"silo={k}"), "--manifest", str(work / f"manifest-{k}.json"),
                     "--init", str(work / "init.npz"), "--local-epochs", str(fed.local_epochs),
                     "--lr", str(conf.learning_rate), "--weight-decay", str(conf.weight_decay),
                     "--seed", str(conf.seed)], stdout=out, stderr=subprocess.STDOUT, env=env))
        try:
            rc = server.wait(timeout=fed.timeout_seconds)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"federated training ran past ranker.federated.timeout_seconds "
                               f"({fed.timeout_seconds}); logs in {logs}") from None
        for p in procs[1:]:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    seconds = time.monotonic() - started
    for line in (logs / "server.log").read_text().splitlines():
        if line.startswith("[server] round"):
            progress.info(line.removeprefix("[server] "))
    if rc != 0 or not (work / "weights.npz").exists():
        raise RuntimeError(f"the Flower server exited with {rc}; logs in {logs}:\n"
                           + (logs / "server.log").read_text()[-3000:])
    hist = json.loads((work / "history.json").read_text())
    weights = dict(np.load(work / "weights.npz"))
    n_train = sum(per_silo.values())
    result = train.TrainResult(weights, shape, hist["history"], hist["best_round"], hist["best_ndcg"],
                               n_train * fed.local_epochs * rounds / max(seconds, 1e-9), n_train, n_valid, silos,
                               "cpu (Flower silos)")
    mlflow.log_params({"examples_ds": ex_ds, "num_processes_used": silos, "id_dim": id_dim, "federated.silos": silos,
                       "federated.rounds": rounds, "federated.local_epochs": fed.local_epochs,
                       **{f"federated.silo_{k}_lists": v for k, v in per_silo.items()}})
    mlflow.log_metric("federated.seconds", seconds)
    for name in sorted(p.name for p in logs.iterdir()):
        mlflow.log_artifact(str(logs / name), "federated")
    summary = register_trained(ctx, args, result, rows, vocab)
    return {**summary, "silos": silos, "rounds": rounds, "federated_seconds": round(seconds, 1),
            "work": str(work)}


STAGES = (
    Stage("train_ranker_federated", "the ranker trained across silos with Flower (FedAvg; each silo a process that "
          "reads only its own users' lists), registered and judged like train_ranker's; not part of the pipeline",
          reads=(tables.RANKER_EXAMPLES, tables.RANKER_ITEMS), writes=(RANKER_VERSION, CHAMPION),
          run=run_train_ranker_federated, add_arguments=_arguments, pipeline=False),
)
