#!/usr/bin/env bash
# A local Ray head for trying the job path on one machine; everything on 127.0.0.1.
#   cluster/local-head.sh            start (dashboard and job API at http://127.0.0.1:8265)
#   ray stop                         stop it
# Further arguments go to `ray start` and win over these (e.g. --port=6380 --num-cpus=2).
set -euo pipefail
# Ray's single-node mode. Without it Ray rewrites --node-ip-address=127.0.0.1 to this machine's
# routable address, and its GCS, raylet and workers listen on every interface (seen with Ray 2.58).
# No other machine can join this head; use the cluster definitions in cluster/ for that.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
exec ray start --head --node-ip-address=127.0.0.1 --port=6379 \
  --dashboard-host=127.0.0.1 --dashboard-port=8265 --ray-client-server-port=10001 "$@"
