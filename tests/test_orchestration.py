"""Airflow (in its own virtual environment) and a Spark standalone cluster, for real.

- The DAG folder loads in Airflow's DagBag with the expected tasks, dependencies and schedules.
- ``airflow dags test liverec_nightly`` runs every task (spark-submit of each job) on demo data
  against a Spark standalone cluster (a master and a two-core worker on 127.0.0.1, real JVM daemons:
  each job is a driver and an executor, the fewest JVMs that still put the work on the cluster),
  ranking with the champion ranker of the test pipeline's registry, so the model's trip to the
  executors is exercised (slow). One chain checks both: the scheduler's spark-submit calls and
  the jobs running on a cluster rather than in ``local[*]``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from liverec import lakehouse, stages, tables
from liverec.config import load_settings
from liverec.stages import STAGES, dag_dependencies
from tests.conftest import DEMO_DS, FAST_JVM, REPO, SMALL_DATA, VENV_BIN, job_env

AIRFLOW_BIN = REPO / ".venv-airflow" / "bin"
DS = DEMO_DS  # the demo log ends 2026-11-01
# what the DAGs must hold: the stages' declarations (tests/test_config.py checks those by hand)
NIGHTLY = dag_dependencies(stages.NIGHTLY)
TRAINING = dag_dependencies(stages.TRAINING)


def _airflow_env(home: Path) -> dict[str, str]:
    if not (AIRFLOW_BIN / "airflow").exists():
        pytest.fail(f"{AIRFLOW_BIN / 'airflow'} is missing: run `make airflow-setup` (make test does)")
    # PATH: the jobs' spark-submit (the liverec venv's), not anything of Airflow's venv
    return {**job_env(**FAST_JVM),
            "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "airflow_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(REPO / "airflow_dags"),
            "AIRFLOW_CONN_SPARK_LOCAL": json.dumps({"conn_type": "spark", "host": "local[2]"})}


# tiny tables, short-lived JVMs: no whole-stage code generation (compiling costs more than it saves at this size),
# Delta log replay in 2 tasks (default 50); with C1-only JIT for the JVMs the tests start (JAVA_TOOL_OPTIONS)
# these took a build_profiles job from 81 s to 47 s here
SMALL_DATA_CONF = json.dumps(dict(kv.removeprefix("spark.conf.").split("=", 1) for kv in SMALL_DATA))


def _write_conf(root: Path, demo_dir: Path, tracking_uri: str) -> Path:
    """A config overlay putting every path under ``root`` (the demo log in ``demo_dir``), with the MLflow
    store (and registry) at ``tracking_uri``."""
    text = f"""
lakehouse_root: {root / 'lake'}
scratch_dir: {root / 'scratch'}
demo_mode: true
spark:
  shuffle_partitions: 2
  driver_memory: 2g
  conf: {SMALL_DATA_CONF}
mlflow:
  tracking_uri: {tracking_uri}
  artifact_root: {root / 'mlartifacts'}
evaluate:
  report_dir: {root / 'reports'}
  product: false  # the product row (a ranker trained per split) is tested on the demo pipeline; 6 of 18 minutes here
als:
  max_iter: 5
recommend:
  als_candidates: 50
  mmr_pool: 30
embeddings:
  partitions: 1  # one Python worker loads the encoder
demo:
  output_dir: {demo_dir}
  events: 4000
  users: 150
  items: 120
"""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "conf.yaml"
    path.write_text(text)
    return path


def test_dag_folder_loads_with_the_expected_tasks(tmp_path):
    script = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=__import__("os").environ["AIRFLOW__CORE__DAGS_FOLDER"])
out = {"errors": {k: str(v)[-500:] for k, v in bag.import_errors.items()}, "dags": {}}
for dag in bag.dags.values():
    out["dags"][dag.dag_id] = {
        "tasks": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
        "operators": sorted({type(t).__name__ for t in dag.tasks}),
        "bases": sorted({b.__name__ for t in dag.tasks for b in type(t).__mro__}),
        "jobs": {t.task_id: t.job for t in dag.tasks},
        "options": {t.task_id: t.options for t in dag.tasks},
        "catchup": dag.catchup, "timetable": type(dag.timetable).__name__,
        "summary": getattr(dag.timetable, "expression", None) or getattr(dag.timetable, "_expression", None),
        "retries": {t.task_id: t.retries for t in dag.tasks},
        "backoff": all(t.retry_exponential_backoff for t in dag.tasks),
        "params": sorted(dag.params.keys()),
    }
print("RESULT " + json.dumps(out))
"""
    run = subprocess.run([str(AIRFLOW_BIN / "python"), "-c", script], env=_airflow_env(tmp_path / "airflow"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT ", 1)[1])
    assert result["errors"] == {}
    nightly, training = result["dags"]["liverec_nightly"], result["dags"]["liverec_training"]
    assert nightly["tasks"] == {k: sorted(v) for k, v in NIGHTLY.items()}
    assert training["tasks"] == TRAINING
    for dag in (nightly, training):
        assert dag["operators"] == ["LiverecJob"] and "SparkSubmitOperator" in dag["bases"]
        assert dag["catchup"] is False and dag["backoff"] and min(dag["retries"].values()) >= 1
        assert {"spark_conn_id", "conf_path"} <= set(dag["params"])
        for task, job in dag["jobs"].items():
            assert job == STAGES[task].job_file and (REPO / "jobs" / f"{job}.py").is_file(), job
    assert training["options"]["train_ranker"] == {"--no-promote": "true"}
    assert nightly["options"]["evaluate"] == {"--split": "{{ params.evaluate_split }}"}
    # nightly: the run of the day [D, D+1) processes ds = D; training: Sundays
    assert nightly["timetable"] == "CronDataIntervalTimetable" and nightly["summary"] == "0 0 * * *"
    assert training["summary"] == "0 3 * * 0"


@pytest.fixture(scope="module")
def airflow_nightly(tmp_path_factory, demo_pipeline, standalone):
    """``airflow dags test liverec_nightly DS`` on a small demo log against the standalone cluster, with the
    registry of the test pipeline (``demo_pipeline``), whose champion ranker the nightly job then ranks with."""
    root = tmp_path_factory.mktemp("airflow")
    conf = _write_conf(root / "local", root / "demo", demo_pipeline.tracking_uri())
    host, port = standalone["url"].rsplit(":", 1)
    env = {**_airflow_env(root / "airflow"), **standalone["env"],
           "AIRFLOW_CONN_SPARK_CLUSTER": json.dumps({"conn_type": "spark", "host": host, "port": int(port)}),
           "LIVEREC_AIRFLOW_RETRIES": "0"}  # a failure fails now, not after back-off
    migrate = subprocess.run([str(AIRFLOW_BIN / "airflow"), "db", "migrate"], env=env, capture_output=True,
                             text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    run_conf = {"conf_path": str(conf), "spark_conn_id": "spark_cluster", "source": "demo",
                "evaluate_split": "temporal"}
    started = time.monotonic()
    run = subprocess.run([str(AIRFLOW_BIN / "airflow"), "dags", "test", "liverec_nightly", DS,
                          "-c", json.dumps(run_conf)], env=env, capture_output=True, text=True, timeout=1800)
    log = run.stdout + run.stderr
    (root / "dags_test.log").write_text(log)
    assert run.returncode == 0, log[-5000:]
    return {"conf": conf, "root": root, "log": log, "seconds": time.monotonic() - started,
            "master": standalone["url"], "cluster_root": standalone["root"]}


@pytest.mark.slow
def test_airflow_dags_test_runs_the_nightly_chain(spark, airflow_nightly):
    log = airflow_nightly["log"]
    # every task ran through spark-submit and succeeded, in dependency order
    finished = re.findall(r"\[(\w+)\] done in", log)
    assert sorted(finished) == sorted(NIGHTLY), finished
    for task, upstream in NIGHTLY.items():
        assert all(finished.index(u) < finished.index(task) for u in upstream), finished
    assert "spark-submit" in log and "--ds 2026-11-02" in log and airflow_nightly["master"] in log
    # the jobs really ran on the cluster: the master registered every job's application and the worker ran an
    # executor for each
    master_log = (airflow_nightly["cluster_root"] / "master.log").read_text()
    apps = set(re.findall(r"Registered app (liverec-\w+)", master_log))
    assert apps == {f"liverec-{task}" for task in NIGHTLY}, master_log[-2000:]
    ran = list((airflow_nightly["cluster_root"] / "work").glob("app-*/*/stderr"))
    assert len({p.parent.parent.name for p in ran}) >= len(NIGHTLY), ran
    assert not re.search(r"new_state=(failed|up_for_retry)", log)
    settings = load_settings(str(airflow_nightly["conf"]))
    recs = lakehouse.read(spark, settings, tables.RECOMMENDATIONS).where(F.col("ds") == DS)
    per_user = recs.groupBy("user_id").count()
    assert per_user.count() > 50 and per_user.where(F.col("count") != settings.recommend.top_n).count() == 0
    # the nightly DAG trains no ranker: it ranks with the registry's champion (the pipeline's)
    name = settings.ranker.registered_model
    assert recs.where(~F.col("model_version").startswith(f"ranker:{name}/")).count() == 0
    # collect_feedback logged the day's lists as impressions, one per published row, shown from the next midnight
    shown = lakehouse.read(spark, settings, tables.SILVER_IMPRESSIONS).where(F.col("surface") == "nightly")
    assert shown.count() == recs.count()
    assert shown.where(F.col("ds") != "2026-11-03").count() == 0
    assert (Path(settings.evaluate.report_dir) / DS / "evaluation.md").is_file()
    evaluated = json.loads((Path(settings.evaluate.report_dir) / DS / "evaluation.json").read_text())
    assert [(r["split"], sorted(r["results"])) for r in evaluated] == [("temporal", ["als", "ease", "popularity"])]


# --------------------------------------------------------------------------- standalone cluster

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """A Spark standalone master and a two-core worker on 127.0.0.1 (real JVM daemons)."""
    root = tmp_path_factory.mktemp("cluster")
    port = _free_port()
    env = job_env(SPARK_LOCAL_IP="127.0.0.1", SPARK_NO_DAEMONIZE="1", **FAST_JVM)
    spark_class = str(VENV_BIN / "spark-class")
    procs, logs = [], []

    def start(name: str, *args: str) -> None:
        log = open(root / f"{name}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([spark_class, *args], env=env, stdout=log, stderr=subprocess.STDOUT))

    url = f"spark://127.0.0.1:{port}"
    start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
          "--webui-port", str(_free_port()))
    start("worker", "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "2",
          "--memory", "3g", "--webui-port", str(_free_port()), "--work-dir", str(root / "work"))
    deadline = time.monotonic() + 180
    try:
        while (root / "master.log").read_text().count("Registering worker") < 1:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise AssertionError("the standalone cluster did not come up:\n" +
                                     "\n".join((root / f"{n}.log").read_text()[-2000:]
                                               for n in ("master", "worker")))
            time.sleep(1)
        yield {"url": url, "env": env, "root": root}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()
