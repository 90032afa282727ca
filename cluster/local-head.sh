#!/usr/bin/env bash
# A local Ray head for trying the job path on one machine; everything on 127.0.0.1.
#   cluster/local-head.sh            start (dashboard and job API at http://127.0.0.1:8265)
#   ray stop                         stop it
set -euo pipefail
exec ray start --head --node-ip-address=127.0.0.1 --port=6379 \
  --dashboard-host=127.0.0.1 --dashboard-port=8265 "$@"
