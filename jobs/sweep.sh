#!/usr/bin/env bash
# Entrypoint of the sweep job: runs inside the cluster, on the head node, from the uploaded working_dir.
#   DATA  a prepared dataset on storage every node mounts (e.g. /mnt/genre/data/gtzan)
#   OUT   the run folder on the same storage (e.g. /mnt/genre/runs/study)
# Any further arguments go to `genre sweep` (e.g. --gpus-per-trial 0.5 --epochs 15).
set -euo pipefail
data="$1"; out="$2"; shift 2
exec python -m genre sweep "$data" "$out" --address auto "$@"
