"""The 'train_ease' stage: spark-submit jobs/train_ease.py [--conf F] [--set k=v] [--ds D] [...]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("train_ease"))
