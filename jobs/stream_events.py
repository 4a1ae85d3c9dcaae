"""The 'stream_events' stage: spark-submit jobs/stream_events.py [--conf F] [--set k=v] [--once] [--landing DIR]
[--timeout SECONDS]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("stream_events"))
