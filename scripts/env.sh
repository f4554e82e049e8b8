# Source this file (bash or zsh) for a shell with the workspace:
#   source scripts/env.sh
# It activates .venv, sets up ROS 2 Jazzy (from /opt/ros/jazzy, or from the PyPI wheels in
# the venv) and overlays the built workspace in install/. Afterwards
# `python -c "from clap_msgs.msg import ActionChunk"` works and `clap` is on PATH.
_clap_root="$(cd "$(dirname "${BASH_SOURCE[0]:-${(%):-%x}}")/.." && pwd)"
_clap_venv="${CLAP_VENV:-$_clap_root/.venv}"
if [ ! -x "$_clap_venv/bin/python" ] || [ ! -f "$_clap_root/install/local_setup.bash" ]; then
  echo "env.sh: the workspace is not set up; run 'make setup' first" >&2
  return 1 2>/dev/null || exit 1
fi
CLAP_VENV_DIR="$_clap_venv" source "$_clap_root/scripts/ros_env.sh"
source "$_clap_venv/bin/activate"
source "$_clap_root/install/local_setup.bash"
export CLAP_ROOT="$_clap_root"
# MuJoCo picks its GL backend at first import; EGL renders headless (the simulation's cameras).
export MUJOCO_GL="${MUJOCO_GL:-egl}"
unset _clap_root _clap_venv
