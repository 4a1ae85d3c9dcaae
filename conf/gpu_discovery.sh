#!/usr/bin/env bash
# Spark GPU resource discovery (spark.{driver,executor}.resource.gpu.discoveryScript): prints the
# GPUs nvidia-smi sees as {"name": "gpu", "addresses": ["0", "1", ...]}.
set -euo pipefail
ids=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed 's/ //g' | sed 's/.*/"&"/' | paste -sd, -)
echo "{\"name\": \"gpu\", \"addresses\": [${ids}]}"
