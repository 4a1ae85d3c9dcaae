"""The 'forget' stage: spark-submit jobs/forget.py [--conf F] [--set k=v] --users FILE [--pseudonymised]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("forget"))
