"""Shared fixtures: one local SparkSession (Delta enabled) for the whole run, settings pointing at a
temporary lakehouse, and the real data sets from ../shared/data when they are there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from liverec.config import Settings, load_settings
from liverec.session import build_spark

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIVEREC_SHARED_DATA", REPO.parent / "shared" / "data"))


def settings_for(root: Path, *extra: str) -> Settings:
    """Settings for a test: everything under ``root``, demo mode, a small local[2] Spark."""
    return load_settings(overrides=[
        f"lakehouse_root={root / 'lakehouse'}",
        f"scratch_dir={root / 'scratch'}",
        f"demo.output_dir={root / 'demo'}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"mlflow.artifact_root={root / 'mlartifacts'}",
        "demo_mode=true",
        "spark.master=local[2]",
        "spark.shuffle_partitions=4",
        *extra,
    ])


def cli_args(settings: Settings) -> list[str]:
    """The --set options that make a CLI call use the same places as ``settings``."""
    return [
        "--set", f"lakehouse_root={settings.lakehouse_root}",
        "--set", f"scratch_dir={settings.scratch_dir}",
        "--set", f"demo.output_dir={settings.demo.output_dir}",
        "--set", f"mlflow.tracking_uri={settings.mlflow.tracking_uri}",
        "--set", f"mlflow.artifact_root={settings.mlflow.artifact_root}",
        "--set", "demo_mode=true",
        "--set", "spark.shuffle_partitions=4",
    ]


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("liverec")


@pytest.fixture(scope="session")
def spark(base_dir: Path):
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    session = build_spark(settings_for(base_dir / "session"), "tests")
    yield session
    session.stop()


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
