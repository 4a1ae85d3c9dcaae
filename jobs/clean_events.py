"""spark-submit entry point for the 'clean' stage: spark-submit jobs/clean_events.py [--conf F] [--set k=v] [--ds D] ..."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # runs from a checkout without install

from liverec.cli import run_job  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job("clean"))
