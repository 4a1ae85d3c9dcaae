"""The report notebook executes against a real lakehouse (the demo pipeline's) and shows its plots."""

import importlib.util

import nbformat
import pytest
from pyspark.sql import functions as F

from liverec import lakehouse, tables
from tests.conftest import DEMO_DS, REPO


@pytest.mark.slow
def test_report_notebook_executes_on_the_pipeline_tables(spark, demo_pipeline, tmp_path):
    settings = demo_pipeline
    spec = importlib.util.spec_from_file_location("make_report", REPO / "notebooks" / "make_report.py")
    make_report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_report)
    out = make_report.build(settings.lakehouse_root, settings.evaluate.report_dir, DEMO_DS, tmp_path / "report.ipynb")
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # metrics per model, coverage and diversity, score distributions
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    rows = lakehouse.read(spark, settings, tables.RECOMMENDATIONS).where(F.col("ds") == DEMO_DS).count()
    assert f"gold.recommendations ds={DEMO_DS}: {rows:,} rows" in text
    assert "catalogue coverage:" in text
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "ndcg" in html and "ranker:" in html  # the evaluation table and the model-version mix
