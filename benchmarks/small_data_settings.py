"""The tests' small-data Spark settings (``SMALL_DATA`` in tests/conftest.py) with and without generated code, on the
demo chain the tests share.

    python benchmarks/small_data_settings.py [--events 20000]

Runs ``liverec pipeline`` (one process, every stage) on a generated demo log with the demo_pipeline fixture's
arguments twice: with the tests' settings, and with the same settings but Spark's generated expression code
(``spark.sql.codegen.factoryMode`` left at its default). Per run: the wall time, each stage's time (its
"done in" line) and the driver JVM's JIT compile time (``-XX:+CITime``). Writes
benchmarks/results/small_data_settings.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _measure import isolated_args, machine, write_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import DEMO_DS, SMALL_DATA  # noqa: E402  (the settings under test have one owner)

JVM_KEY = "spark.conf.spark.driver.extraJavaOptions="
NO_CODEGEN = "spark.conf.spark.sql.codegen.factoryMode=NO_CODEGEN"


def run(name: str, settings: list[str], events: int) -> dict:
    work = REPO / ".liverec" / f"bench-small-data-{name}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    given = [s[len(JVM_KEY):] for s in settings if s.startswith(JVM_KEY)]
    sets = [*(s for s in settings if not s.startswith(JVM_KEY)), JVM_KEY + " ".join([*given, "-XX:+CITime"])]
    cmd = [sys.executable, "-m", "liverec.cli", "pipeline", *isolated_args(work, "4g"),
           *[x for kv in sets for x in ("--set", kv)],
           "--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=4",
           "--set", f"demo.events={events}", "--set", "demo.users=400", "--set", "demo.items=300",
           "--set", "ranker.epochs=3", "--set", "evaluate.splits=[temporal]", "--ds", DEMO_DS]
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.monotonic() - started
    log = out.stdout + out.stderr
    (work / "run.log").write_text(log)
    if out.returncode != 0:
        raise SystemExit(f"{name}: liverec pipeline failed (rc {out.returncode}); log: {work / 'run.log'}")
    stages = {m[0]: float(m[1]) for m in re.findall(r"\[(\w+)\] done in ([0-9.]+)s", log)}
    jit = re.search(r"Total compilation time\s*:\s*([0-9.]+) s", log)
    return {"wall_s": round(wall, 1), "stages_s": stages, "jit_compile_s": float(jit.group(1)) if jit else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20000, help="demo log size (the demo_pipeline fixture's 20,000)")
    args = p.parse_args()
    interpreted = list(SMALL_DATA)
    if NO_CODEGEN not in interpreted:
        raise SystemExit(f"tests/conftest.py SMALL_DATA no longer holds {NO_CODEGEN}: update this benchmark")
    generated = [s for s in interpreted if s != NO_CODEGEN]
    runs = {"interpreted (tests' settings)": run("interpreted", interpreted, args.events),
            "generated code": run("generated", generated, args.events)}
    payload = {"date": dt.date.today().isoformat(), "machine": machine(), "events": args.events, "runs": runs}
    names = list(next(iter(runs.values()))["stages_s"])
    lines = [f"# The tests' small-data settings with and without generated code ({payload['date']})", "",
             f"Machine: {payload['machine']}. `python benchmarks/small_data_settings.py --events {args.events}`: "
             "`liverec pipeline` in one process on the demo log with the demo_pipeline fixture's arguments.", "",
             "| run | wall s | JIT compile s | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
    for label, r in runs.items():
        lines.append(f"| {label} | {r['wall_s']} | {r['jit_compile_s']} | "
                     + " | ".join(str(r["stages_s"].get(n, "")) for n in names) + " |")
    lines += ["", "The runs go in the order above, so the first pays the cold file caches (jars, Python imports) of its "
              "early stages. In the whole test suite the gap is wider (2,354 s -> 2,030 s on 2026-12-02): the "
              "tests' one driver JVM lives through every test, compiling each test's new generated classes."]
    write_results("small_data_settings", payload, lines + [""])


if __name__ == "__main__":
    main()
