"""The 'train_als' stage: spark-submit jobs/train_als.py [--conf F] [--set k=v] [--ds D] [...]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("train_als"))
