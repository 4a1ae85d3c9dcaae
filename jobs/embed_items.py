"""The 'embed_items' stage: spark-submit jobs/embed_items.py [--conf F] [--set k=v] [--ds D] [...]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("embed_items"))
