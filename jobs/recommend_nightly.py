"""The 'recommend_nightly' stage: spark-submit jobs/recommend_nightly.py [--conf F] [--set k=v] [--ds D] [...]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("recommend_nightly"))
