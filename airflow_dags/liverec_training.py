"""liverec_training: the weekly ranker, one spark-submit per job, for the run's logical date.

build_ranker_examples -> train_ranker (registers a new version, promotes nothing) -> promote_ranker
(moves the champion alias to it only when its top N beats the best baseline's (EASE, ALS) and the champion's on
the same validation users; a champion that no longer beats the baselines loses the alias).

It reads what liverec_nightly wrote (silver events, item embeddings); the next nightly run ranks
with whatever the champion is then.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG
from liverec_tasks import DEFAULT_ARGS, PARAMS, stage_tasks

with DAG(
    dag_id="liverec_training",
    description="ranker examples -> DDP training (TorchDistributor) -> champion gate",
    # Sundays 03:00 UTC, after the nightly run of Saturday; a cron string is a trigger timetable in
    # Airflow 3, so ds is the day it runs on and the examples use every event landed until then
    schedule="0 3 * * 0",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["liverec"],
) as dag:
    # train_ranker registers only; promote_ranker runs the gate
    stage_tasks("training", options={"train_ranker": {"--no-promote": "true"}})
