import re
from pathlib import Path

import pytest

from liverec.config import as_flat_dict, load_settings
from liverec.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_from_base_and_local(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s = load_settings()
    assert s.spark.master == "local[*]"
    assert Path(s.lakehouse_root).is_absolute() and s.lakehouse_root.endswith("lakehouse")
    assert s.tracking_uri().startswith("sqlite:////") and s.tracking_uri().endswith("mlflow.db")
    assert s.clean.event_weights["purchase"] > s.clean.event_weights["view"]


def test_set_overrides_are_typed():
    s = load_settings(overrides=["spark.shuffle_partitions=3", "clean.max_abs_value=5", "demo_mode=true",
                                 "clean.event_weights.hover=0.1", "spark.conf.spark.sql.adaptive.enabled=false"])
    assert s.spark.shuffle_partitions == 3
    assert s.clean.max_abs_value == 5.0 and isinstance(s.clean.max_abs_value, float)
    assert s.demo_mode is True
    assert s.clean.event_weights["hover"] == 0.1
    assert s.spark.conf == {"spark.sql.adaptive.enabled": "false"}


@pytest.mark.parametrize("override, words", [
    ("spark.shuffle_partition=3", "unknown config key 'spark.shuffle_partition'"),
    ("nonsense=1", "unknown config key 'nonsense'"),
    ("spark.shuffle_partitions=many", "'spark.shuffle_partitions' must be an integer"),
    ("demo_mode=maybe", "'demo_mode' must be true or false"),
    ("clean.event_weights.view=heavy", "'clean.event_weights.view' must be a number"),
    ("spark=local", "'spark' must be a section"),
    ("noequals", "--set expects key=value"),
])
def test_bad_overrides_are_clear_errors(override, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("(", r"\(")):
        load_settings(overrides=[override])


def test_conf_file_overlay_and_unknown_key(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("lakehouse_root: s3a://bucket/lake\nspark:\n  master: yarn\n")
    s = load_settings(str(good))
    assert s.lakehouse_root == "s3a://bucket/lake" and s.spark.master == "yarn"
    bad = tmp_path / "bad.yaml"
    bad.write_text("spark:\n  mastr: yarn\n")
    with pytest.raises(ConfigError, match="unknown config key 'spark.mastr'"):
        load_settings(str(bad))
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("spark: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(str(broken))


def test_mlflow_env_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert load_settings().tracking_uri() == "http://tracking.example:5000"


def test_cluster_example_loads():
    s = load_settings(str(Path(__file__).resolve().parents[1] / "conf" / "cluster.example.yaml"))
    assert s.lakehouse_root.startswith("s3a://")
    assert "spark.jars.packages" in s.spark.conf
    flat = as_flat_dict(s)
    assert flat["spark.master"] == "yarn" and "clean.min_ts" in flat


def test_stages_lists_the_pipeline_in_order_and_the_stages_run_alone(capsys):
    from liverec.cli import main
    from liverec.stages import PIPELINE, STAGES

    assert main(["stages"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if re.match(r"  \S", line)]
    alone = sorted(set(STAGES) - set(PIPELINE))
    assert listed == [*PIPELINE, *alone] and {"stream_events", "promote_ranker"} <= set(alone)
    assert "reads bronze.events, silver.events -> writes silver.events, silver.quarantine (jobs/clean_events.py" in out
    for name in listed:  # each has its spark-submit entry point
        assert (REPO / "jobs" / f"{STAGES[name].job_file}.py").is_file(), name


def test_the_pipeline_order_follows_what_each_stage_reads_and_writes():
    from liverec import tables
    from liverec.stages import PIPELINE, STAGES
    from liverec.stages.base import (
        CHAMPION,
        EVALUATION_REPORT,
        IMPRESSIONS_LANDING,
        INPUT_FILES,
        LANDING,
        OFFPOLICY_REPORT,
        ONLINE_MODEL,
        ONLINE_STORE,
        RANKER_VERSION,
    )

    # by hand: the order the stages' data needs
    assert PIPELINE == ("ingest", "clean", "embed_items", "build_profiles", "train_als", "train_ease",
                        "build_ranker_examples", "train_ranker", "recommend_nightly", "publish_online", "evaluate")
    known = {*tables.ALL_TABLES, CHAMPION, EVALUATION_REPORT, IMPRESSIONS_LANDING, INPUT_FILES, LANDING, ONLINE_MODEL,
             ONLINE_STORE, RANKER_VERSION, OFFPOLICY_REPORT}
    for i, name in enumerate(PIPELINE):
        stage = STAGES[name]
        assert set(stage.reads) | set(stage.writes) <= known, name
        for later in PIPELINE[i + 1:]:  # nothing it reads is written by a stage that runs after it
            assert not set(STAGES[later].writes) & (set(stage.reads) - set(stage.writes)), (name, later)


def test_the_dags_link_each_task_to_the_tasks_whose_tables_it_reads():
    from liverec.stages import NIGHTLY, TRAINING, dag_dependencies

    # by hand, from what each stage reads (implied links left out: ingest -> build_profiles goes through clean)
    assert dag_dependencies(NIGHTLY) == {
        "ingest": [], "clean": ["ingest"], "embed_items": ["ingest"], "build_profiles": ["clean", "embed_items"],
        "train_als": ["clean"], "train_ease": ["clean"], "recommend_nightly": ["build_profiles", "train_als",
                                                                               "train_ease"],
        "publish_online": ["recommend_nightly"], "evaluate": ["clean", "embed_items"],
        # silver.events comes through recommend_nightly (clean -> ... -> recommend_nightly)
        "collect_feedback": ["recommend_nightly"]}
    assert dag_dependencies(TRAINING) == {"build_ranker_examples": [], "train_ranker": ["build_ranker_examples"],
                                          "promote_ranker": ["train_ranker"]}


def test_the_readme_stage_table_is_the_declared_one():
    from liverec.stages import stage_table

    assert stage_table() in (REPO / "README.md").read_text(), "README.md's stage table is stale: paste stage_table()"


def test_java_options_keep_the_given_ones_beside_the_defaults_and_the_derby_home(tmp_path):
    from liverec.session import driver_java_options, executor_java_options

    plain = load_settings(overrides=[f"scratch_dir={tmp_path}"])
    assert driver_java_options(plain) == f"-XX:+UseParallelGC -Dderby.system.home={tmp_path}"
    assert executor_java_options(plain) == "-XX:+UseParallelGC"
    given = load_settings(overrides=[f"scratch_dir={tmp_path}", "spark.java_options=",
                                     "spark.conf.spark.driver.extraJavaOptions=-XX:+UseSerialGC -Xss4m",
                                     "spark.conf.spark.executor.extraJavaOptions=-Xss8m"])
    assert driver_java_options(given) == f"-XX:+UseSerialGC -Xss4m -Dderby.system.home={tmp_path}"
    assert executor_java_options(given) == "-Xss8m"
    # a collector given beside the default's replaces it (a JVM with two refuses to start); other options add up
    other_gc = load_settings(overrides=[f"scratch_dir={tmp_path}", "spark.java_options=-XX:+UseParallelGC -Xss2m",
                                        "spark.conf.spark.driver.extraJavaOptions=-XX:+UseG1GC"])
    assert driver_java_options(other_gc) == f"-Xss2m -XX:+UseG1GC -Dderby.system.home={tmp_path}"
    assert executor_java_options(other_gc, "-XX:+UseZGC -Xmx1g") == "-Xss2m -XX:+UseZGC -Xmx1g"
    assert executor_java_options(other_gc, "-Xmx1g") == "-XX:+UseParallelGC -Xss2m -Xmx1g"
