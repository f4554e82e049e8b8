#!/usr/bin/env bash
# Set up the workspace: a venv in .venv/, ROS 2 Jazzy (from /opt/ros/jazzy when it exists,
# otherwise from the PyPI wheels), the pinned Python dependencies, and `colcon build`.
# Idempotent: a second run only re-installs what changed and rebuilds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${CLAP_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
PIP_QUIET="${PIP_QUIET:--q}"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if ! "$PY" -c 'import sys; assert sys.version_info[:2] in ((3, 11), (3, 12))' 2>/dev/null; then
  echo "setup: need Python 3.11 or 3.12 (ROS 2 Jazzy); '$PY' is $("$PY" --version 2>&1)" >&2
  exit 1
fi

if [ -f /opt/ros/jazzy/setup.bash ]; then
  ROS_FROM=apt
  say "using ROS 2 Jazzy from /opt/ros/jazzy"
  set +u; source /opt/ros/jazzy/setup.bash; set -u
  VENV_FLAGS=(--system-site-packages)
else
  ROS_FROM=wheels
  say "no /opt/ros/jazzy: installing ROS 2 Jazzy from the PyPI wheels into $VENV"
  VENV_FLAGS=()
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating venv $VENV"
  "$PY" -m venv "${VENV_FLAGS[@]}" "$VENV"
fi
VPY="$VENV/bin/python"

stamp="$VENV/.clap-requirements"
want="$(cat requirements/python.txt requirements/no-deps.txt requirements/ros-wheels.txt | sha256sum | cut -d' ' -f1)-$ROS_FROM"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing pinned Python dependencies (requirements/python.txt)"
  "$VPY" -m pip install $PIP_QUIET --disable-pip-version-check --upgrade pip 2>&1 | grep -v 'is ignored' || true
  # torch first and pinned, so that nothing later pulls a CUDA build.
  "$VPY" -m pip install $PIP_QUIET --disable-pip-version-check torch==2.13.0 2>&1 | grep -v 'is ignored' || true
  "$VPY" -m pip install $PIP_QUIET --disable-pip-version-check -r requirements/python.txt 2>&1 | grep -v 'is ignored' || true
  "$VPY" -m pip install $PIP_QUIET --disable-pip-version-check --no-deps -r requirements/no-deps.txt 2>&1 | grep -v 'is ignored' || true
  if [ "$ROS_FROM" = wheels ]; then
    say "installing ROS 2 Jazzy wheels (requirements/ros-wheels.txt)"
    "$VPY" -m pip install $PIP_QUIET --disable-pip-version-check -r requirements/ros-wheels.txt 2>&1 | grep -v 'is ignored' || true
  fi
  "$VPY" -c 'import torch, transformers, rosbags, av, pyarrow, safetensors' \
    || { echo "setup: Python dependencies did not install" >&2; exit 1; }
  if [ "$ROS_FROM" = wheels ]; then
    (CLAP_VENV_DIR="$VENV"; set +u; source scripts/ros_env.sh; "$VPY" -c 'import rclpy') || { echo "setup: rclpy did not install" >&2; exit 1; }
  fi
  echo "$want" > "$stamp"
fi

if [ "$ROS_FROM" = wheels ]; then
  "$VPY" scripts/fix_ros_wheel_cmake.py "$VENV"
  CLAP_VENV_DIR="$VENV"; set +u; source scripts/ros_env.sh; set -u
fi

# Headless rendering of the simulation (MuJoCo through EGL, Mesa's software renderer).
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1 '; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing EGL + Mesa for headless rendering (apt)"
    apt-get update -qq && apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 >/dev/null
  else
    echo "setup: warning: no libEGL.so.1; the simulation needs: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1" >&2
  fi
fi

say "colcon build"
export PATH="$VENV/bin:$PATH"
export PYTHONWARNINGS="ignore::DeprecationWarning"
colcon build --symlink-install --base-paths src \
  --cmake-args -DPython3_EXECUTABLE="$VPY" -DPYTHON_EXECUTABLE="$VPY" -DBUILD_TESTING=OFF \
  --event-handlers console_direct- summary+ 2>&1 | grep -v 'is ignored' 
say "done: 'source scripts/env.sh' gives a shell with the workspace"
