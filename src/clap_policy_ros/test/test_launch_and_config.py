"""Static checks of the launch file, the node's parameter file and the RViz config.

launch_ros cannot be installed on the project's machines, so the launch file is checked
without executing it: it parses, every file it references exists (in the source tree and in
the installed share/), and every parameter it sets is one the node declares.
"""

import ast
import os
import pathlib

import pytest
import yaml
from clap_train.data.contract import load_contract

from clap_policy_ros.parameters import PARAMETERS, NodeParams

ROOT = pathlib.Path(__file__).resolve().parents[3]
LAUNCH = ROOT / "launch" / "astribot.launch.py"
NODE_PARAMS = set(PARAMETERS) | {"use_sim_time"}


def launch_tree():
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and ((isinstance(n.func, ast.Attribute) and n.func.attr == name)
                 or (isinstance(n.func, ast.Name) and n.func.id == name))]


def keyword(call, name):
    return next(k.value for k in call.keywords if k.arg == name)


def installed_share():
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        share = pathlib.Path(prefix) / "share" / "clap_policy_ros"
        if (share / "package.xml").exists():
            return share
    pytest.fail("clap_policy_ros is not installed (colcon build), AMENT_PREFIX_PATH lacks it")


def test_launch_declares_the_documented_arguments():
    tree = launch_tree()
    declared = {c.args[0].value for c in calls(tree, "DeclareLaunchArgument")}
    assert declared == {"model_dir", "config", "namespace", "use_sim_time", "rviz", "mode",
                        "device"}
    used = {c.args[0].value for c in calls(tree, "LaunchConfiguration") if c.args} | {
        c.args[0].value for c in calls(tree, "lc") if c.args}
    assert used <= declared, used - declared


def test_launch_references_existing_files_and_executables():
    tree = launch_tree()
    joins = [c for c in calls(tree, "join") if len(c.args) == 3]
    referenced = [(c.args[1].value, c.args[2].value) for c in joins]
    assert ("config", "astribot.yaml") in referenced and ("config", "clap.rviz") in referenced
    share = installed_share()
    for folder, name in referenced:
        assert (ROOT / folder / name).is_file(), f"{folder}/{name} missing in the source tree"
        assert (share / folder / name).is_file(), f"{folder}/{name} not installed in {share}"
    assert (share / "launch" / LAUNCH.name).is_file()
    node = calls(tree, "LifecycleNode")[0]
    assert keyword(node, "executable").value == "policy_node"
    assert keyword(node, "name").value == "clap_policy"
    assert (share.parent.parent / "lib" / "clap_policy_ros" / "policy_node").exists()
    transitions = {c.attr for c in ast.walk(tree) if isinstance(c, ast.Attribute)
                   and c.attr.startswith("TRANSITION_")}
    assert transitions == {"TRANSITION_CONFIGURE", "TRANSITION_ACTIVATE"}  # autostart


def test_launch_sets_only_declared_parameters():
    node = calls(launch_tree(), "LifecycleNode")[0]
    params = keyword(node, "parameters")
    keys = {k.value for d in params.elts if isinstance(d, ast.Dict) for k in d.keys}
    assert keys == {"model_dir", "mode", "device", "use_sim_time"}
    assert keys <= NODE_PARAMS


def test_parameter_file_sets_the_declared_parameters():
    data = yaml.safe_load((ROOT / "config" / "astribot.yaml").read_text())
    params = data["clap_policy"]["ros__parameters"]
    assert set(params) == set(PARAMETERS), set(params) ^ set(PARAMETERS)  # the file states every one
    for name, value in params.items():  # same type as the declared default
        assert type(value) is type(PARAMETERS[name][0]), name
    # what the node makes of them: limits for each arm of the contract, a valid executor
    p = NodeParams.read(params.__getitem__)
    layout = load_contract().action.layout
    assert set(p.safety_limits(layout).workspace) == set(layout.arms)
    p.executor_config(chunk_len=32, action_dim=layout.dim, layout=layout)


def test_rviz_config_shows_the_node_outputs():
    # RViz reads its own file, not the contract: this checks it shows what the node publishes.
    contract = load_contract()
    outputs = contract.node_outputs()
    rviz = yaml.safe_load((ROOT / "config" / "clap.rviz").read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"]: d["Class"] for d in displays if "Topic" in d}
    assert topics[outputs.markers] == "rviz_default_plugins/MarkerArray"
    for arm in contract.action.arms:
        assert topics[outputs.path_topic(arm.name)] == "rviz_default_plugins/Path"
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == contract.frame_id
