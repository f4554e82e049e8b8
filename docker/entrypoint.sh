#!/usr/bin/env bash
# Source ROS 2, the venv and the built workspace, then run the command.
set -e
source /ws/scripts/env.sh
exec "$@"
