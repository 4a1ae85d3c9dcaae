"""Several stages in one Spark application: spark-submit jobs/pipeline.py [--stages a,b,...] [--conf F] [--ds D]

Runs the stages (default: all) in pipeline order with one driver, e.g. a whole nightly chain on a
cluster; the scheduler (Airflow) runs one stage per job instead, so each can retry on its own.
"""

import sys

import _bootstrap  # noqa: F401  (puts lib/ on sys.path)

if __name__ == "__main__":
    from liverec.cli import main

    sys.exit(main(["pipeline", *sys.argv[1:]]))
