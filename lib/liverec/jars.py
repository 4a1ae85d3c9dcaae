"""Put the Delta jars among pyspark's own jars, so local runs, spark-submit and standalone workers
started from this environment all have Delta without resolving packages at every start.

    python -m liverec.jars          # idempotent; run by `make setup`

Spark's own dependency resolver fetches the package (Maven Central) into the scratch Ivy folder;
when it cannot, ``mvn dependency:get`` into ~/.m2 is tried, which the resolver reads too.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
from pathlib import Path

import pyspark

from liverec.config import load_settings


def _resolve_with_spark(package: str, ivy: Path) -> list[Path]:
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[1]").appName("liverec-fetch-jars")
             .config("spark.jars.packages", package).config("spark.jars.ivy", str(ivy))
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.stop()
    return [Path(p) for p in glob.glob(str(ivy / "jars" / "io.delta_*.jar"))]


def install(package: str, scratch: str) -> list[Path]:
    target = Path(pyspark.__file__).parent / "jars"
    group, artifact, version = package.split(":")
    present = sorted(target.glob(f"delta-*{version}.jar"))
    if any(p.name.startswith(f"{artifact}-") for p in present):
        return present
    ivy = Path(scratch) / "ivy"
    try:
        found = _resolve_with_spark(package, ivy)
    except Exception:  # noqa: BLE001 - fall back to Maven below
        found = []
    if not found:
        for art in (artifact, "delta-storage"):
            subprocess.run(["mvn", "-q", "dependency:get", f"-Dartifact={group}:{art}:{version}"], check=True)
        m2 = Path.home() / ".m2" / "repository" / group.replace(".", "/")
        found = [m2 / artifact / version / f"{artifact}-{version}.jar",
                 m2 / "delta-storage" / version / f"delta-storage-{version}.jar"]
    copied = []
    for jar in found:
        name = jar.name.split("_", 1)[1] if jar.name.startswith("io.delta_") else jar.name
        shutil.copy2(jar, target / name)
        copied.append(target / name)
    return copied


def main() -> int:
    settings = load_settings()
    jars = install(settings.spark.delta_package, settings.scratch_dir)
    print("delta jars:", ", ".join(p.name for p in jars))
    return 0 if jars else 1


if __name__ == "__main__":
    sys.exit(main())
