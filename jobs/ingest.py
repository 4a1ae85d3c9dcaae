"""The 'ingest' stage: spark-submit jobs/ingest.py [--conf F] [--set k=v] [--ds D] [...]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("ingest"))
