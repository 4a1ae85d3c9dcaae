"""The 'evaluate' stage: spark-submit jobs/evaluate.py [--conf F] [--set k=v] [--ds D] [...]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("evaluate"))
