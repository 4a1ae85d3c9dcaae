"""The 'train_ranker_federated' stage: spark-submit jobs/train_ranker_federated.py [--conf F] [--set k=v] [--ds D] [...]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("train_ranker_federated"))
