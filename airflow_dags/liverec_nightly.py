"""liverec_nightly: the daily batch, one spark-submit per job, for the run's logical date.

The tasks are the stages declared for this DAG and each waits for the stages whose tables it reads
(``liverec.stages``; ``liverec stages`` lists them): ingest -> (clean, embed_items); clean -> (train_als,
train_ease); (clean, embed_items) -> build_profiles and evaluate; (build_profiles, train_als, train_ease) ->
recommend_nightly -> (publish_online, collect_feedback).

build_profiles waits for embed_items because a profile's content vector is the mean of its items'
text embeddings. recommend_nightly ranks with the registry's champion ranker (liverec_training
trains it weekly; the promotion gate keeps it only while it beats the baselines) and publishes the best
baseline (EASE or ALS, then content and popularity) without one. publish_online packs that
day's tables and the champion ranker into the liverec-online model the real-time server loads.
collect_feedback adds the impressions the servers logged and the nightly lists to silver.impressions and
writes the day before ds, its clicks attributed, to gold.feedback.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param
from airflow.timetables.interval import CronDataIntervalTimetable
from liverec_tasks import DEFAULT_ARGS, PARAMS, stage_tasks

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
                                                             "filmtrust, otto, edges, demo)"),
        "input": Param("", type="string", description="ingest --input (a file or folder; empty for demo)"),
        "items": Param("", type="string", description="ingest --items (with source events)"),
        "evaluate_split": Param("both", enum=["both", "random", "temporal"], description="evaluate --split"),
    },
    tags=["liverec"],
) as dag:
    stage_tasks("nightly", options={
        "ingest": {"--source": "{{ params.source }}", "--input": "{{ params.input }}", "--items": "{{ params.items }}"},
        "evaluate": {"--split": "{{ params.evaluate_split }}"},
        # the impressions logged so far and the nightly lists of ds go into silver.impressions; the day before ds,
        # whose attribution window (feedback.attribution_seconds, a day) has closed, goes into gold.feedback
        "collect_feedback": {"--attribute-ds": "{{ macros.ds_add(ds, -1) }}"},
    })
