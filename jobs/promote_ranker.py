"""The 'promote_ranker' stage: spark-submit jobs/promote_ranker.py [--conf F] [--set k=v] [--ds D] [...]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("promote_ranker"))
