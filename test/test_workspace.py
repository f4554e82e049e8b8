"""Workspace-level checks: package manifests declare what the code imports, README and CI agree.

`rosdep install --from-paths src` on a robot installs exactly what package.xml files name, so
a module imported by a package but missing from its package.xml breaks the robot install
while every test here still passes. This test walks each package's Python imports and checks
them against its manifest.
"""

import ast
import pathlib
import re
import sys
import xml.etree.ElementTree as ET

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.parent for p in (ROOT / "src").glob("*/package.xml"))

# Python import name -> rosdep key.
IMPORT_TO_KEY = {
    "numpy": "python3-numpy", "yaml": "python3-yaml", "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib", "PIL": "python3-pil", "pyarrow": "python3-pyarrow",
    "av": "python3-av", "safetensors": "python3-safetensors", "torch": "python3-torch",
    "transformers": "python3-transformers-pip", "accelerate": "python3-accelerate-pip", "peft": "python3-peft-pip",
    "rosbags": "python3-rosbags-pip", "tensorboard": "python3-tensorboard-pip",
    "mujoco": "python3-mujoco-pip", "dm_control": "python3-dm-control-pip",
    "pytest": "python3-pytest", "scipy": "python3-scipy",
}
# Keys of the public rosdistro index that we rely on (not redefined in rosdep/clap.yaml).
PUBLIC_KEYS = {"python3-numpy", "python3-yaml", "python3-tqdm", "python3-matplotlib", "python3-pil",
               "python3-pytest", "python3-setuptools", "python3-scipy"}
# Imports that are not separate dependencies (test-only linters, ROS client internals).
IGNORED_IMPORTS = {"ament_flake8", "ament_pep257", "ament_index_python", "rosidl_runtime_py",
                   "rpyutils", "launch", "launch_ros"}
ROS_PACKAGES_FROM_APT = {"rclpy", "std_msgs", "std_srvs", "sensor_msgs", "geometry_msgs", "nav_msgs",
                         "visualization_msgs", "lifecycle_msgs", "builtin_interfaces", "action_msgs",
                         "launch", "launch_ros", "rviz2", "ament_cmake", "rosidl_default_generators",
                         "rosidl_default_runtime", "ament_flake8", "ament_pep257", "ament_index_python",
                         "rosidl_runtime_py", "tf2_ros", "rcl_interfaces", "rosgraph_msgs"}


def _manifest(pkg):
    root = ET.parse(pkg / "package.xml").getroot()
    deps = {el.text.strip() for el in root
            if el.tag in ("depend", "exec_depend", "build_depend", "test_depend", "buildtool_depend")}
    return root, deps


def _imports(pkg):
    stdlib = set(sys.stdlib_module_names)
    local = {p.name for p in pkg.iterdir() if p.is_dir()} | {p.stem for p in pkg.glob("*.py")}
    found = {}
    for path in pkg.rglob("*.py"):
        if "build" in path.parts:
            continue
        local_test = {p.stem for p in path.parent.glob("*.py")}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top in local or top in local_test or top == "setuptools":
                    continue
                found.setdefault(top, path.relative_to(ROOT))
    return found


def test_every_package_has_a_format_3_manifest_named_like_its_folder():
    assert {p.name for p in PACKAGES} >= {"clap_msgs", "clap_policy_ros", "clap_train"}
    for pkg in PACKAGES:
        root, _ = _manifest(pkg)
        assert root.get("format") == "3", pkg
        assert root.findtext("name") == pkg.name
        assert root.find("export/build_type").text in ("ament_cmake", "ament_python")


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_manifest_declares_every_import(pkg):
    _, deps = _manifest(pkg)
    workspace = {p.name for p in PACKAGES}
    missing = []
    for top, where in sorted(_imports(pkg).items()):
        if top in IGNORED_IMPORTS or top == pkg.name:
            continue
        ours = top in workspace or top in ROS_PACKAGES_FROM_APT or top.endswith("_msgs")
        key = top if ours else IMPORT_TO_KEY.get(top)
        if key is None:
            missing.append(f"{top} (imported in {where}): add it to IMPORT_TO_KEY and rosdep/clap.yaml")
        elif key not in deps:
            missing.append(f"{top} (imported in {where}): package.xml lacks <exec_depend>{key}</exec_depend>")
    assert not missing, f"{pkg.name}/package.xml:\n" + "\n".join(missing)


def test_every_rosdep_key_resolves():
    custom = set(yaml.safe_load((ROOT / "rosdep" / "clap.yaml").read_text()))
    workspace = {p.name for p in PACKAGES}
    for pkg in PACKAGES:
        _, deps = _manifest(pkg)
        for key in deps:
            ok = key in custom or key in PUBLIC_KEYS or key in workspace or key in ROS_PACKAGES_FROM_APT \
                or key.endswith("_msgs")
            assert ok, f"{pkg.name}/package.xml: rosdep key {key!r} is neither public nor in rosdep/clap.yaml"


def test_readme_starts_with_exactly_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md has no code block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]
    assert commands == ["make demo", "make test"]
    assert text.index(block.group(0)) < 400, "the two commands must be at the top"
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo:", "test:", "setup:", "bench:"):
        assert re.search(rf"^{target}", makefile, re.M), f"Makefile lacks {target}"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_requirements_pin_every_package():
    for name in ("python.txt", "ros-wheels.txt", "no-deps.txt"):
        for line in (ROOT / "requirements" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.+]*", line), f"{name}: {line!r} is not pinned"
    assert "torch==2.13.0" in (ROOT / "requirements" / "python.txt").read_text()
