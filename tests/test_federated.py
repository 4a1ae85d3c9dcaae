"""Federated training with Flower (train_ranker_federated, liverec.federated): a server and two silos as real
processes on the loopback interface, each silo given only its own users' training lists."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from pyspark.sql import functions as F

from liverec import lakehouse, tables
from liverec.cli import main
from tests.conftest import DEMO_DS, cli_args

REPO = Path(__file__).resolve().parents[1]
FLOWER = REPO / ".venv-flower" / "bin" / "python"


@pytest.mark.slow
def test_two_silos_and_a_server_train_a_ranker_and_no_silo_reads_another_silos_rows(spark, demo_pipeline, capsys):
    if not FLOWER.exists():
        pytest.fail(f"{FLOWER} is missing: run `make flower-setup` (make test does)")
    settings, name = demo_pipeline, "liverec-ranker-federated-test"
    capsys.readouterr()
    assert main(["run", "train_ranker_federated", *cli_args(settings), "--ds", DEMO_DS, "--silos", "2", "--rounds", "2",
                 "--set", f"ranker.registered_model={name}", "--set", "ranker.export_variants=false",
                 "--set", f"ranker.federated.python={FLOWER}"]) == 0
    out = capsys.readouterr().out
    assert "round 1: val NDCG@10" in out and "round 2: val NDCG@10" in out, out

    # by hand from gold.ranker_examples: each training user with a positive, and the silo a hash of its id puts it in
    examples = lakehouse.read(spark, settings, tables.RANKER_EXAMPLES).where(
        (F.col("ds") == DEMO_DS) & (F.col("split") == "train"))
    users = {r["g"]: r["lists"] for r in examples.where(F.col("label") > 0).groupBy(F.xxhash64("user_id").alias("g"))
             .agg(F.count("*").alias("lists")).collect()}
    work = Path(settings.scratch_dir).resolve() / "federated" / DEMO_DS
    manifests = [json.loads((work / f"manifest-{k}.json").read_text()) for k in (0, 1)]
    seen: set[int] = set()
    for k, m in enumerate(manifests):
        own = Path(m["folder"])
        assert own == work / "lists" / f"silo={k}" and m["files"]
        assert all(Path(f).parent == own for f in m["files"])  # it opened files of its own folder only
        assert {g % 2 for g in m["users"]} == {k}  # users of its own silo only
        assert not seen & set(m["users"])
        seen |= set(m["users"])
        assert m["rows"] == sum(users[g] for g in m["users"])  # every list of its users, no one else's
        log = (work / "logs" / f"silo-{k}.log").read_text()
        assert f"[silo {k}] round 2:" in log, log[-2000:]
    assert seen == set(users)

    client = mlflow.MlflowClient(settings.tracking_uri())
    (version,) = client.search_model_versions(f"name='{name}'")
    params = client.get_run(version.run_id).data.params
    assert params["federated.silos"] == "2" and params["federated.rounds"] == "2"
    assert int(params["federated.silo_0_lists"]) == manifests[0]["rows"]
    assert "promotion.reason" in params
