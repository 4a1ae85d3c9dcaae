"""What the liverec DAGs share: one SparkSubmitOperator per job file, arguments from the run.

Every task submits ``jobs/<job>.py`` with ``--ds <the run's logical date>``, and ``--conf <file>``
when a config overlay is named. Where the Spark connection and the config come from, first match:
the run's params (``spark_conn_id``, ``conf_path``; ``airflow dags trigger -c`` / ``dags test -c``
override them), then the Airflow Variables ``liverec_spark_conn_id`` / ``liverec_conf_path``, then
``spark_default`` / no overlay. The jobs folder is ``liverec_jobs_dir`` (a Variable), else the
``jobs/`` folder beside this DAG folder, so a checkout of the repository works as it is.

The tasks and their dependencies come from the stages' declarations (``liverec.stages``: what each stage
reads and writes, and the DAG it belongs to): ``stage_tasks`` builds one task per declared stage and links it
to the tasks whose outputs it reads. Importing them needs the ``liverec`` package (no Spark): installed, or
the ``lib/`` folder beside this DAG folder.

The scheduler calls the jobs' own ``spark-submit``: it must be on the PATH of the Airflow workers
(e.g. the liverec virtual environment's bin), as the provider requires.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, Variable

REPO_JOBS = Path(__file__).resolve().parents[1] / "jobs"
REPO_LIB = Path(__file__).resolve().parents[1] / "lib"
if REPO_LIB.is_dir() and str(REPO_LIB) not in sys.path:
    sys.path.append(str(REPO_LIB))  # an installed liverec wins over the checkout's

DEFAULT_ARGS = {
    "owner": "liverec",
    # LIVEREC_AIRFLOW_RETRIES (in the scheduler's environment) overrides it; tests set 0 to fail fast
    "retries": int(os.environ.get("LIVEREC_AIRFLOW_RETRIES", "2")),
    "retry_delay": dt.timedelta(minutes=5),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(hours=1),
}

PARAMS = {
    "spark_conn_id": Param("", type="string",
                           description="Airflow connection of the Spark master (empty: Variable liverec_spark_conn_id, "
                                       "else spark_default)"),
    "conf_path": Param("", type="string",
                       description="liverec config overlay passed as --conf (empty: Variable liverec_conf_path, "
                                   "else the jobs' default)"),
}


class LiverecJob(SparkSubmitOperator):
    """``spark-submit jobs/<job>.py --ds {{ ds }} [--conf ...] [options]``; ``options`` is templated and an
    option whose rendered value is empty is left out (so a param can switch it off)."""

    template_fields = (*SparkSubmitOperator.template_fields, "options")

    def __init__(self, *, job: str, options: dict[str, str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("name", f"liverec-{kwargs['task_id']}")
        super().__init__(application=job, **kwargs)
        self.job = job
        self.options = options or {}

    def execute(self, context: Any) -> None:
        params = context["params"]
        self._conn_id = (params.get("spark_conn_id") or Variable.get("liverec_spark_conn_id", default=None)
                         or "spark_default")
        conf_path = params.get("conf_path") or Variable.get("liverec_conf_path", default=None)
        jobs = Path(Variable.get("liverec_jobs_dir", default=None) or REPO_JOBS)
        self.application = str(jobs / f"{self.job}.py")
        args = ["--ds", context["ds"], *(["--conf", conf_path] if conf_path else [])]
        for key, value in self.options.items():
            if value not in (None, ""):
                args += [key] if value is True or value == "true" else [key, str(value)]
        self.application_args = args
        self._hook = None  # built from the resolved connection
        self.log.info("liverec job %s, connection %s, args %s", self.application, self._conn_id, args)
        super().execute(context)


def stage_tasks(dag: str, options: dict[str, dict[str, str]] | None = None) -> dict[str, LiverecJob]:
    """One ``LiverecJob`` per stage declared for ``dag`` (``liverec.stages``), each downstream of the tasks
    whose outputs it reads; ``options`` per stage (templated). Call it inside the ``with DAG(...)`` block."""
    from liverec.stages import STAGES, dag_dependencies

    options = options or {}
    deps = dag_dependencies(dag)
    unknown = sorted(set(options) - set(deps))
    if unknown:
        raise ValueError(f"options for stages that are not tasks of the {dag} DAG: {unknown}")
    tasks = {name: LiverecJob(task_id=name, job=STAGES[name].job_file, options=options.get(name)) for name in deps}
    for name, upstream in deps.items():
        for up in upstream:
            tasks[up] >> tasks[name]
    return tasks
