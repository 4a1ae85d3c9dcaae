"""Shared fixtures: one local SparkSession (Delta enabled) for the whole run, settings pointing at a
temporary lakehouse, and the real data sets from ../shared/data when they are there."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
from pathlib import Path

import pytest

from liverec import tracking
from liverec.config import Settings, load_settings
from liverec.session import build_spark

REPO = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2024, 3, 1)
SHARED_DATA = Path(os.environ.get("LIVEREC_SHARED_DATA", REPO.parent / "shared" / "data"))


# tiny test tables: whole-stage code generation costs more than it saves, and so does compiling any expression code
# (factoryMode NO_CODEGEN: Spark's interpreted expressions, which the JIT compiles once for every query, where each
# query's generated classes are compiled again: the demo chain took 341-375 s with generated code, 309 s without,
# its tables the same); Delta replays its log in 2 tasks. (The parallel collector, once set here for a driver JVM that
# lives through many tests, tests/test_nightly.py 785 s with G1 and 601 s with it, is conf's default now:
# spark.java_options.)
SMALL_DATA = ("spark.conf.spark.sql.codegen.wholeStage=false", "spark.conf.spark.sql.codegen.factoryMode=NO_CODEGEN",
              "spark.conf.spark.databricks.delta.snapshotPartitions=2")


VENV_BIN = Path(sys.executable).parent
# C1-only JIT for the JVMs the tests start: short-lived JVMs on tiny data spend more on compiling than they save
FAST_JVM = {"JAVA_TOOL_OPTIONS": "-XX:TieredStopAtLevel=1"}


def job_env(**extra: str) -> dict[str, str]:
    """The environment of a job the tests start as a process (``python jobs/x.py``, spark-submit, a server,
    Spark daemons): this one without MLflow's variables (an in-process test's mlflow.set_tracking_uri exports the
    URI, which would win over the job's own conf), this venv's ``bin`` first on PATH (its spark-submit) and its
    python for the Spark workers."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "PYSPARK_PYTHON": sys.executable, **extra}


def settings_for(root: Path, *extra: str) -> Settings:
    """Settings for a test: everything under ``root``, demo mode, a small local[2] Spark."""
    return load_settings(overrides=[
        f"lakehouse_root={root / 'lakehouse'}",
        f"scratch_dir={root / 'scratch'}",
        f"demo.output_dir={root / 'demo'}",
        f"evaluate.report_dir={root / 'reports'}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"mlflow.artifact_root={root / 'mlartifacts'}",
        "demo_mode=true",
        "spark.master=local[2]",
        "spark.shuffle_partitions=4",
        *SMALL_DATA,
        *extra,
    ])


def cli_args(settings: Settings) -> list[str]:
    """The --set options that make a CLI call use the same places as ``settings``."""
    return [
        "--set", f"lakehouse_root={settings.lakehouse_root}",
        "--set", f"scratch_dir={settings.scratch_dir}",
        "--set", f"demo.output_dir={settings.demo.output_dir}",
        "--set", f"evaluate.report_dir={settings.evaluate.report_dir}",
        "--set", f"mlflow.tracking_uri={settings.mlflow.tracking_uri}",
        "--set", f"mlflow.artifact_root={settings.mlflow.artifact_root}",
        "--set", "demo_mode=true",
        "--set", "spark.shuffle_partitions=4",
        *[x for kv in SMALL_DATA for x in ("--set", kv)],
    ]


# session-scoped chains and the xdist group of the tests that use them (make test: pytest-xdist, --dist loadgroup)
CHAIN_GROUPS = {"demo_pipeline": "demo", "ml100k_pipeline": "ml100k"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist each worker builds its own session fixtures: every test that uses a chain goes to the
    worker that runs it (one xdist_group per chain), so no chain runs twice; the other tests are spread."""
    del config
    for item in items:
        group = next((g for fixture, g in CHAIN_GROUPS.items() if fixture in item.fixturenames), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """xdist's loadgroup sends a group's tests to one worker by a suffix it adds to their node ids; where it could
    not (a pytest that keeps node ids read-only), each worker would run every chain: stop instead."""
    if session.config.getoption("loadgroup", default=False) and any(
            item.get_closest_marker("xdist_group") and "@" not in item.nodeid for item in session.items):
        raise pytest.UsageError("pytest-xdist could not group the tests of a shared chain (see pyproject.toml: "
                                "pytest 8 with pytest-xdist 3.8); run with -p no:xdist or fix the versions")


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("liverec")


@pytest.fixture(autouse=True)
def _no_mlflow_uri_leak():
    """A test's mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which wins over every later conf: a
    session fixture set up after it (a whole pipeline run) would log and register into that test's store."""
    with tracking.caller_environment_kept():
        yield


@pytest.fixture(scope="session")
def spark(base_dir: Path):
    for key in tracking.EXPORTED:  # the tests use their own stores, not the shell's
        os.environ.pop(key, None)
    session = build_spark(settings_for(base_dir / "session"), "tests")
    yield session
    session.stop()


DEMO_DS = "2026-11-02"


@pytest.fixture(scope="session")
def demo_pipeline(tmp_path_factory, spark) -> Settings:
    """The whole pipeline (every stage, the ranker included) once, on a small demo log, for ds DEMO_DS.

    Tests that change its tables restore them (``restored``), so the order tests run in does not matter.
    """
    from liverec.cli import main

    settings = settings_for(tmp_path_factory.mktemp("pipeline"))
    small = ["--set", "demo.events=20000", "--set", "demo.users=400", "--set", "demo.items=300",
             "--set", "ranker.epochs=3", "--set", "evaluate.splits=[temporal]"]
    assert main(["pipeline", *cli_args(settings), *small, "--ds", DEMO_DS]) == 0
    return settings


ML100K_DS = "2024-01-15"
# half the default candidates, for the real-data chains: the nightly job, the examples and the evaluation's product
# scale with them
LIGHT_CANDIDATES = ("recommend.als_candidates=100", "recommend.ease_candidates=100", "recommend.mmr_pool=30")


@pytest.fixture(scope="session")
def ml100k_pipeline(tmp_path_factory, spark) -> Settings:
    """The batch chain on the real MovieLens 100K (skipped without ../shared/data/ml-100k), up to the
    published online model: ingest, clean, embed_items, build_profiles, train_als, train_ease,
    build_ranker_examples, train_ranker, recommend_nightly, publish_online, for ds ML100K_DS, with a lighter
    ranker run."""
    from liverec.cli import main

    data = shared("ml-100k")
    light = ("ranker.epochs=3", "ranker.num_processes=1", *LIGHT_CANDIDATES)
    settings = settings_for(tmp_path_factory.mktemp("ml100k"), *light)  # the tests read with the run's settings
    stages = ("ingest,clean,embed_items,build_profiles,train_als,train_ease,build_ranker_examples,train_ranker,"
              "recommend_nightly,publish_online")
    assert main(["pipeline", *cli_args(settings), *[x for kv in light for x in ("--set", kv)], "--ds", ML100K_DS,
                 "--source", "movielens", "--input", str(data), "--stages", stages]) == 0
    return settings


@contextlib.contextmanager
def restored(spark, settings: Settings, *names: str):
    """Put the named Delta tables back to their current versions when the block ends."""
    from delta.tables import DeltaTable

    from liverec import lakehouse, tables

    before = {t: lakehouse.version(spark, settings, t) for t in names}
    try:
        yield
    finally:
        for table, version in before.items():
            if version is not None and lakehouse.version(spark, settings, table) != version:
                DeltaTable.forPath(spark, tables.table_path(settings, table)).restoreToVersion(version)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path)


def shared(*parts: str) -> Path:
    """A path under ../shared/data; the test is skipped (not failed) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not present: {path}")
    return path


@pytest.fixture
def settings_factory(tmp_path: Path):
    def make(*extra: str) -> Settings:
        return settings_for(tmp_path, *extra)

    return make


def silver(spark, rows):
    """rows: (user, item, type, days after T0[, value])"""
    data = [(f"e{i}", r[0], r[1], r[2], r[4] if len(r) > 4 else None, T0 + dt.timedelta(days=r[3]), None, None,
             "test", "2024-03-10") for i, r in enumerate(rows)]
    return spark.createDataFrame(data, "event_id string, user_id string, item_id string, event_type string, "
                                       "value double, ts timestamp, session_id string, price double, source string, "
                                       "ds string")


class RedisServer:
    """A real ``redis-server`` on a loopback port, without persistence (``--save ""``, no AOF), for the online
    store's tests: ``.url``, ``.start()``, ``.stop()`` (a restart keeps the port; the data is gone)."""

    def __init__(self, workdir: Path, port: int | None = None):
        import shutil

        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (not on PATH): `make setup` installs it "
                        "(apt-get install redis-server)", pytrace=False)
        self.exe = exe
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log = workdir / "redis-server.log"
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def answers(self) -> bool:
        """Whether the server answers PING (a raw RESP round trip, without the client library)."""
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, wait_s: float = 15.0) -> None:
        import subprocess
        import time

        cmd = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.workdir)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait_s
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                state = "exited" if self.proc.poll() is not None else f"did not answer PING within {wait_s:.0f} s"
                self.stop()
                pytest.fail(f"redis-server on 127.0.0.1:{self.port} {state}; its log ({self.log}):\n"
                            f"{self.log.read_text(errors='replace')[-4000:]}", pytrace=False)
            time.sleep(0.02)

    def stop(self) -> None:
        import subprocess

        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """The URL of a real redis-server (loopback, free port) for the whole run; tests keep apart by key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_restartable(tmp_path: Path):
    """A redis-server of the test's own (stopped and started again by the test, same port), stopped after it."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def assert_online_features_equal_the_batch(spark, settings: Settings, ds: str, scorer, users):
    """One definition of the features: for known users without a session, the online scorer's dense features of
    their nightly candidates, from each user's record in the online store, equal the batch ones (liverec.features
    over the same gold tables of ``ds``: the training examples' and the nightly job's), every one of them, and the
    recent-item sequence starts with the batch's. ``users``: a DataFrame of user_id. Returns the rows compared
    (candidate_rows, pandas)."""
    import numpy as np

    from liverec import candidates, catalog, features, online, tables
    from liverec.cleaning import id_key
    from liverec.features import DENSE_FEATURES
    from liverec.stages.base import Context, latest, latest_ease, require_silver, social

    ctx = Context(spark, settings, ds, None)
    ease_model, _, _ = latest_ease(ctx)
    part = {t: latest(ctx, t)[0] for t in (tables.USER_PROFILES, tables.USER_FACTORS, tables.ITEM_FACTORS,
                                           tables.ITEM_EMBEDDINGS, tables.ITEM_NEIGHBORS)}  # as publish_online reads
    f = features.features_from(spark, require_silver(ctx), part[tables.USER_PROFILES], part[tables.USER_FACTORS],
                               part[tables.ITEM_FACTORS], ease_model, catalog.latest_items(spark, settings, ds),
                               part[tables.ITEM_EMBEDDINGS], social(ctx), settings, id_key(settings))
    batch = candidates.candidate_rows(f, users, part[tables.ITEM_NEIGHBORS], settings).toPandas()
    for user, rows in batch.groupby("user_id"):
        req = online.Request(scorer.lookup_user(user)[0], [], None, 10)
        history, banned = scorer.seen(req)
        x = scorer.user_vector(req)
        cands = [scorer.index[i] for i in rows["item_id"]]
        als, ease = scorer.als_top(x, banned), scorer.ease_top(req, history, banned)
        dense, recent = scorer.features(req, cands, x, als, ease)
        want = np.stack(rows["dense"].to_numpy())
        for name, ranked in (("log_als_rank", als), ("log_ease_rank", ease)):
            # two items with equal scores (identical factors: FilmTrust has many) may stand in either order at the
            # list's end, as the batch's matrix product and the server's vector product round them; a rank that
            # differs must be such a tie in the server's list, and then takes the batch's value
            j = DENSE_FEATURES.index(name)
            got, exp = (np.rint(np.expm1(v[:, j].astype(np.float64))).astype(int) for v in (dense, want))
            for r in np.flatnonzero(got != exp):
                a, b = ranked.scores[got[r] - 1], ranked.scores[exp[r] - 1]
                assert abs(a - b) <= 1e-6 * max(1.0, abs(a)), (name, user, got[r], exp[r], a, b)
                dense[r, j] = want[r, j]
        for j, c in enumerate(DENSE_FEATURES):
            np.testing.assert_allclose(dense[:, j], want[:, j], rtol=1e-4, atol=1e-4, err_msg=f"{c} of {user}")
        assert recent[:len(rows["recent_items"].iloc[0])] == list(rows["recent_items"].iloc[0])
    return batch
