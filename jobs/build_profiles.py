"""The 'build_profiles' stage: spark-submit jobs/build_profiles.py [--conf F] [--set k=v] [--ds D] [...]"""

import sys

import _bootstrap

if __name__ == "__main__":
    sys.exit(_bootstrap.run("build_profiles"))
