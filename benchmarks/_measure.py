"""Helpers for benchmarks: run a command and sample the peak memory of its whole process tree."""

from __future__ import annotations

import json
import platform
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    mem = psutil.virtual_memory().total / 2**30
    return f"{psutil.cpu_count(logical=True)} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.machine()}"


def run_measured(cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> dict[str, float]:
    """Run ``cmd``; return wall seconds and the peak summed RSS (GiB) of it and all its children."""
    start = time.monotonic()
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, total)
            except psutil.Error:
                pass
            stop.wait(0.25)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    rc = proc.wait()
    stop.set()
    t.join()
    if log:
        out.close()
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {rc}" + (f"; see {log}" if log else ""))
    return {"seconds": time.monotonic() - start, "peak_rss_gib": peak / 2**30}


def isolated_args(work: Path, driver_memory: str) -> list[str]:
    """--set options that keep a benchmark's tables, scratch and MLflow store under ``work``."""
    return ["--set", f"lakehouse_root={work / 'lakehouse'}", "--set", f"scratch_dir={work / 'scratch'}",
            "--set", f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
            "--set", f"mlflow.artifact_root={work / 'mlartifacts'}", "--set", "demo_mode=true",
            "--set", f"demo.output_dir={work / 'demo'}", "--set", f"evaluate.report_dir={work / 'reports'}",
            "--set", f"spark.driver_memory={driver_memory}"]


def write_results(name: str, payload: dict, lines: list[str]) -> None:
    """benchmarks/results/<name>.json and .md; the Markdown is also printed."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def relocate_registry(db: Path, source: Path, work: Path) -> None:
    """Point an MLflow SQLite store copied from ``source`` at its new folder ``work`` (artifact locations, run and
    model-version sources hold absolute paths)."""
    with sqlite3.connect(db) as con:
        for table, col in (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                           ("model_versions", "source"), ("model_versions", "storage_location")):
            try:
                con.execute(f"update {table} set {col} = replace({col}, ?, ?)", (str(source), str(work)))
            except sqlite3.OperationalError:  # a column an older MLflow schema does not have
                pass
