#!/usr/bin/env bash
# A local Ray head for trying the job path on one machine; everything on 127.0.0.1, token auth on.
#   cluster/local-head.sh            start (dashboard and job API at http://127.0.0.1:8265)
#   ray stop                         stop it
# Further arguments go to `ray start` and win over these (e.g. --port=6380 --num-cpus=2).
# The token: RAY_AUTH_TOKEN or the file RAY_AUTH_TOKEN_PATH names, if set; else ~/.ray/auth_token,
# made here the first time. Clients need it and RAY_AUTH_MODE=token (cluster/README.md).
set -euo pipefail
# Ray's single-node mode. Without it Ray rewrites --node-ip-address=127.0.0.1 to this machine's
# routable address, and its GCS, raylet and workers listen on every interface (seen with Ray 2.58).
# No other machine can join this head; use the cluster definitions in cluster/ for that.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# Ray token authentication: every request to the job API, dashboard and GCS must carry the token;
# without it any user of this machine could run code as you.
export RAY_AUTH_MODE=token
if [[ -z "${RAY_AUTH_TOKEN:-}${RAY_AUTH_TOKEN_PATH:-}" && ! -s "$HOME/.ray/auth_token" ]]; then
  ray get-auth-token --generate >/dev/null   # `ray start` makes none itself
fi
exec ray start --head --node-ip-address=127.0.0.1 --port=6379 \
  --dashboard-host=127.0.0.1 --dashboard-port=8265 --ray-client-server-port=10001 "$@"
