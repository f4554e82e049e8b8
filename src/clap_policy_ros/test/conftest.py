"""Make the helpers next to the tests (ros_harness, fake_policy) importable with importlib mode."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
