"""The 'evaluate_offpolicy' stage: spark-submit jobs/evaluate_offpolicy.py [--conf F] [--set k=v] --ds DS
[--policy TEMPERATURE:SHARE ...]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("evaluate_offpolicy"))
