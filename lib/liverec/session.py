"""The one SparkSession builder: Delta enabled, scratch inside the project, master from conf."""

from __future__ import annotations

import glob
import os
import re
import sys
import zipfile
from pathlib import Path

from pyspark.sql import SparkSession

from liverec.config import Settings

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


def under_spark_submit() -> bool:
    """True when spark-submit launched this Python driver (it then owns master and driver memory)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def delta_jar_on_classpath() -> bool:
    """True when the Delta jar is among pyspark's own jars (``make setup`` copies it there)."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    return bool(glob.glob(str(jars / "delta-spark_2.13-*.jar")))


def _is_collector(option: str) -> bool:
    return re.fullmatch(r"-XX:\+Use\w*GC", option) is not None


def java_options(defaults: str, *given: str) -> str:
    """``defaults`` (conf spark.java_options) then the ``given`` options; a collector chosen in ``given`` replaces the
    defaults' own (a JVM given two refuses to start)."""
    chosen = any(_is_collector(o) for g in given for o in g.split())
    kept = " ".join(o for o in defaults.split() if not (chosen and _is_collector(o)))
    return " ".join(filter(None, (kept, *given)))


def driver_java_options(settings: Settings) -> str:
    """spark.driver.extraJavaOptions: conf spark.java_options, any given in spark.conf, then Derby (Spark's catalog)
    inside the scratch folder."""
    given = settings.spark.conf.get("spark.driver.extraJavaOptions", "")
    return " ".join(filter(None, (java_options(settings.spark.java_options, given),
                                  f"-Dderby.system.home={settings.scratch_dir}")))


def executor_java_options(settings: Settings, submitted: str = "") -> str:
    """spark.executor.extraJavaOptions: conf spark.java_options, then those spark-submit was given (``submitted``),
    then any given in spark.conf."""
    given = settings.spark.conf.get("spark.executor.extraJavaOptions", "")
    return java_options(settings.spark.java_options, submitted, given)


def submitted_conf(key: str) -> str:
    """A property spark-submit was given (--conf, spark-defaults.conf), "" when none or not under spark-submit: the
    session's own settings would replace it otherwise."""
    if not under_spark_submit():
        return ""
    from pyspark import SparkContext

    SparkContext._ensure_initialized()
    return str(SparkContext._jvm.org.apache.spark.SparkConf(True).get(key, ""))  # type: ignore[union-attr]


def build_spark(settings: Settings, stage: str = "") -> SparkSession:
    """Return the session for a job. Under spark-submit the given master is kept."""
    name = f"{settings.spark.app_name}-{stage}" if stage else settings.spark.app_name
    Path(settings.spark.local_dir).mkdir(parents=True, exist_ok=True)
    builder = (
        SparkSession.builder.appName(name)
        .config("spark.sql.extensions", DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        .config("spark.local.dir", settings.spark.local_dir)
        .config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", str(Path(settings.scratch_dir) / "warehouse"))
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.extraJavaOptions", driver_java_options(settings))
        .config("spark.executor.extraJavaOptions",
                executor_java_options(settings, submitted_conf("spark.executor.extraJavaOptions")))
        # a CSV line with the wrong number of fields is malformed even when a query reads only some columns
        .config("spark.sql.csv.parser.columnPruning.enabled", "false")
        # Delta: replaceWhere on partition columns and schema checks on every write
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
    )
    if not under_spark_submit():
        builder = builder.master(settings.spark.master).config("spark.driver.memory", settings.spark.driver_memory)
        if not delta_jar_on_classpath() and "spark.jars.packages" not in settings.spark.conf:
            builder = builder.config("spark.jars.packages", settings.spark.delta_package).config(
                "spark.jars.ivy", str(Path(settings.scratch_dir) / "ivy")
            )
    for key, value in settings.spark.conf.items():
        if key not in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"):
            builder = builder.config(key, value)
    # Python workers run this interpreter (the venv that has liverec and its pins) unless told otherwise
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    master = spark.sparkContext.master
    if not master.startswith("local"):
        # executors on other machines (or other working directories) get the library with the job
        spark.sparkContext.addPyFile(str(package_zip(settings)))
    return spark


def package_zip(settings: Settings) -> Path:
    """Zip ``lib/liverec`` into the scratch folder so executors can import it."""
    src = Path(__file__).resolve().parent
    target = Path(settings.scratch_dir) / "pyfiles" / "liverec.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.rglob("*.py")):
            zf.write(path, Path("liverec") / path.relative_to(src))
    os.replace(tmp, target)
    return target
