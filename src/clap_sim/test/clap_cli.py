"""Run the `clap` command line as a user does, in a subprocess, and fail the test with its output."""

import os
import subprocess
import sys


def clap(*args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "clap_train.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))
    assert proc.returncode == 0, f"clap {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc
