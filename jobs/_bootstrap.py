"""Makes ``liverec`` importable when a job runs from a checkout without the package installed."""

import sys
from pathlib import Path

LIB = str(Path(__file__).resolve().parents[1] / "lib")
if LIB not in sys.path:
    sys.path.insert(0, LIB)


def run(stage: str) -> int:
    """Run one stage with this process's arguments (see ``liverec run <stage> --help``)."""
    from liverec.cli import run_job

    return run_job(stage)
