"""MLflow set-up shared by every job: tracking URI, experiment, one run per job invocation."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from liverec.config import Settings

# what mlflow.set_tracking_uri / set_experiment export for child processes (the training processes)
EXPORTED = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
# the tags of every job's MLflow run (search runs by them: tags.`liverec.stage` = 'clean')
STAGE_TAG, DS_TAG = "liverec.stage", "liverec.ds"


@contextlib.contextmanager
def caller_environment_kept() -> Iterator[None]:
    """Put MLflow's exported variables back as they were when the block ends: the URI wins over the conf, so
    a caller's next call with another conf (a notebook, a test) would otherwise log into this call's store."""
    before = {key: os.environ.get(key) for key in EXPORTED}
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def configure(settings: Settings) -> str:
    """Point MLflow at the configured store (``MLFLOW_TRACKING_URI`` wins) and experiment."""
    import mlflow

    uri = settings.tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    if client.get_experiment_by_name(settings.mlflow.experiment) is None:
        artifact_root = settings.mlflow.artifact_root
        location = artifact_root if "://" in artifact_root else Path(artifact_root).as_uri()
        client.create_experiment(settings.mlflow.experiment, artifact_location=location)
    mlflow.set_experiment(settings.mlflow.experiment)
    return uri


@contextlib.contextmanager
def job_run(settings: Settings, stage: str, ds: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
    """An MLflow run for one job invocation, tagged with its stage and ds."""
    import mlflow

    configure(settings)
    with mlflow.start_run(run_name=f"{stage}-{ds}", tags={STAGE_TAG: stage, DS_TAG: ds}) as run:
        mlflow.log_params({"stage": stage, "ds": ds, **(params or {})})
        yield run
