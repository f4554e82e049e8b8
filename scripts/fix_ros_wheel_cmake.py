"""Make the ROS 2 PyPI wheels' CMake configs usable on this machine.

The ros-jazzy-* wheels are built in a manylinux container, and their exported CMake
configs name two include directories of that build machine:

    /opt/python/cp311-cp311/include/python3.11
    /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include

Those paths do not exist here, so ``colcon build`` of an interface package fails when
CMake checks the imported targets' include directories. We rewrite the two paths inside
the venv's ``share/*/cmake/*.cmake`` files to this interpreter's include directory and
numpy's, which keeps the fix inside the venv (no root, no symlinks in /opt). The rewrite is
idempotent: a file that already points at this machine's paths is left as it is, so the
script is safe to run after every install of more message wheels.
"""

import pathlib
import re
import sys
import sysconfig

import numpy

BUILD_PYTHON_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+m?/include/python3\.\d+")
BUILD_NUMPY_INCLUDE = re.compile(
    r"/opt/python/cp3\d+-cp3\d+m?/lib/python3\.\d+/site-packages/numpy/(?:_core|core)/include"
)


def fix(prefix: pathlib.Path) -> int:
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    for path in sorted(prefix.glob("share/*/cmake/*.cmake")):
        text = path.read_text()
        new = BUILD_NUMPY_INCLUDE.sub(numpy_include, text)
        new = BUILD_PYTHON_INCLUDE.sub(python_include, new)
        if new != text:
            path.write_text(new)
            changed += 1
    return changed


if __name__ == "__main__":
    prefix = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix)
    print(f"fix_ros_wheel_cmake: rewrote build-machine include paths in {fix(prefix)} file(s)")
