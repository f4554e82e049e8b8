"""Make the helper next to the tests (clap_cli) importable with importlib mode."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
