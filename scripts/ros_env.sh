# Sourced by scripts/env.sh and scripts/setup.sh: the ROS 2 Jazzy environment for a venv.
# Expects CLAP_VENV_DIR. With /opt/ros/jazzy it sources that; otherwise the venv prefix is the
# ROS prefix (the PyPI wheels put share/<pkg> and lib/ there, like /opt/ros/jazzy).
if [ -f /opt/ros/jazzy/setup.bash ]; then
  source /opt/ros/jazzy/setup.bash
else
  _clap_sp="$("$CLAP_VENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)"
  _clap_libs="$CLAP_VENV_DIR/lib"
  for _clap_d in "$_clap_sp"/ros_*.libs; do
    if [ -d "$_clap_d" ]; then _clap_libs="$_clap_libs:$_clap_d"; fi
  done
  export LD_LIBRARY_PATH="$_clap_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # The wheels' ros_wheels_bootstrapper re-execs every interpreter once to set
  # LD_LIBRARY_PATH (slow, and it confuses tools that wrap python); we set it here instead.
  export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
  export AMENT_PREFIX_PATH="$CLAP_VENV_DIR${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$CLAP_VENV_DIR${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export ROS_DISTRO=jazzy
  export ROS_VERSION=2
  export ROS_PYTHON_VERSION=3
  export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
  unset _clap_sp _clap_libs _clap_d
fi
