"""liverec_nightly: the daily batch, one spark-submit per job, for the run's logical date.

ingest -> clean -> (embed_items -> build_profiles, train_als, train_ease) -> recommend_nightly
    -> (publish_online, evaluate)

build_profiles waits for embed_items because a profile's content vector is the mean of its items'
text embeddings. recommend_nightly ranks with the registry's champion ranker (liverec_training
trains it weekly; the promotion gate keeps it only while it beats the baselines) and publishes the best
baseline (EASE or ALS, then content and popularity) without one. publish_online packs that
day's tables and the champion ranker into the liverec-online model the real-time server loads.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param
from airflow.timetables.interval import CronDataIntervalTimetable
from liverec_tasks import DEFAULT_ARGS, PARAMS, LiverecJob

with DAG(
    dag_id="liverec_nightly",
    description="events -> silver -> profiles, ALS, EASE, embeddings -> ranked recommendations -> online model, "
                "evaluation",
    # each night processes the day that just ended: the run of the interval [D, D+1) starts after
    # midnight and its ds ({{ ds }}, the interval's start) is D
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        **PARAMS,
        "source": Param("events", type="string", description="ingest --source (events, movielens, online_retail, "
                                                             "edges, demo)"),
        "input": Param("", type="string", description="ingest --input (a file or folder; empty for demo)"),
        "items": Param("", type="string", description="ingest --items (with source events)"),
        "evaluate_split": Param("both", enum=["both", "random", "temporal"], description="evaluate --split"),
    },
    tags=["liverec"],
) as dag:
    ingest = LiverecJob(task_id="ingest", job="ingest", options={
        "--source": "{{ params.source }}", "--input": "{{ params.input }}", "--items": "{{ params.items }}"})
    clean = LiverecJob(task_id="clean", job="clean_events")
    embed = LiverecJob(task_id="embed_items", job="embed_items")
    profiles = LiverecJob(task_id="build_profiles", job="build_profiles")
    als = LiverecJob(task_id="train_als", job="train_als")
    ease = LiverecJob(task_id="train_ease", job="train_ease")
    recommend = LiverecJob(task_id="recommend_nightly", job="recommend_nightly")
    publish = LiverecJob(task_id="publish_online", job="publish_online")
    evaluate = LiverecJob(task_id="evaluate", job="evaluate", options={"--split": "{{ params.evaluate_split }}"})

    ingest >> clean >> [embed, als, ease]
    embed >> profiles
    [profiles, als, ease] >> recommend >> [publish, evaluate]
