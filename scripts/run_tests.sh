#!/usr/bin/env bash
# Run every test of the workspace (called by `make test` with scripts/env.sh sourced).
# ROS tests talk over real DDS, confined to this machine; conftest.py gives each test module a
# domain id of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export PYTHONUNBUFFERED=1
export MPLBACKEND=Agg
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -c 'import rclpy, clap_msgs.msg, clap_train' || {
  echo "run_tests: rclpy, clap_msgs or clap_train does not import: the workspace is not set up" >&2; exit 1; }
# Every test unless the arguments name test files or folders (bench/flaky.py runs a subset).
named=0
for arg in "$@"; do [[ "$arg" != -* && -e "${arg%%::*}" ]] && named=1; done
(( named )) || set -- "$@" src test
exec python -m pytest -p no:cacheprovider --import-mode=importlib -ra --durations=15 --timeout=600 "$@"
