"""The 'build_ranker_examples' stage: spark-submit jobs/build_ranker_examples.py [--conf F] [--set k=v] [--ds D] [...]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("build_ranker_examples"))
