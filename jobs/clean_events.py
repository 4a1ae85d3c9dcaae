"""The 'clean' stage: spark-submit jobs/clean_events.py [--conf F] [--set k=v] [--ds D] [...]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("clean"))
