"""The 'publish_online' stage: spark-submit jobs/publish_online.py [--conf F] [--set k=v] [--ds D] [...]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("publish_online"))
