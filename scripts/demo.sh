#!/usr/bin/env bash
# The demo: the CLAP pipeline end to end on the embedded default (CPU). Filled in as the
# pipeline's stages land; see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m clap_train.demo "$@"
