"""The 'collect_feedback' stage: spark-submit jobs/collect_feedback.py [--conf F] [--set k=v] --ds DS
[--landing DIR]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("collect_feedback"))
