"""
Bring up the CLAP policy node on the Astribot robot and drive it to ACTIVE.

    ros2 launch clap_policy_ros astribot.launch.py model_dir:=/path/to/policy [mode:=ntp]
        [config:=/path/params.yaml] [namespace:=robot1] [use_sim_time:=true] [rviz:=true]
        [device:=cuda]

The node's parameters come from config/astribot.yaml (``config``); ``model_dir``, ``mode`` and
``device`` override it. The lifecycle node is configured at start-up and activated once configuring
succeeds (launch_ros lifecycle events), so no manual ``ros2 lifecycle set`` is needed.
"""

import os

import launch
import launch.actions
import launch.conditions
import launch.events
import launch.substitutions
import launch_ros.actions
import launch_ros.event_handlers
import launch_ros.events.lifecycle
import lifecycle_msgs.msg
from ament_index_python.packages import get_package_share_directory

PACKAGE = "clap_policy_ros"


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    default_config = os.path.join(share, "config", "astribot.yaml")
    rviz_config = os.path.join(share, "config", "clap.rviz")
    lc = launch.substitutions.LaunchConfiguration

    arguments = [
        launch.actions.DeclareLaunchArgument("model_dir", description="policy checkpoint dir"),
        launch.actions.DeclareLaunchArgument("config", default_value=default_config,
                                             description="node parameters YAML"),
        launch.actions.DeclareLaunchArgument("namespace", default_value="",
                                             description="namespace of the node"),
        launch.actions.DeclareLaunchArgument("use_sim_time", default_value="false",
                                             description="follow /clock (bag replay, sim)"),
        launch.actions.DeclareLaunchArgument("rviz", default_value="false",
                                             description="start RViz with config/clap.rviz"),
        launch.actions.DeclareLaunchArgument("mode", default_value="rf",
                                             description="rf (flow head) or ntp"),
        launch.actions.DeclareLaunchArgument("device", default_value="cpu",
                                             description="torch device of the model (cpu, cuda)"),
    ]

    node = launch_ros.actions.LifecycleNode(
        package=PACKAGE,
        executable="policy_node",
        name="clap_policy",
        namespace=lc("namespace"),
        output="screen",
        parameters=[
            lc("config"),
            {
                "model_dir": lc("model_dir"),
                "mode": lc("mode"),
                "device": lc("device"),
                "use_sim_time": launch.substitutions.PythonExpression(
                    ["'", lc("use_sim_time"), "'.lower() == 'true'"]),
            },
        ],
    )

    configure = launch.actions.EmitEvent(event=launch_ros.events.lifecycle.ChangeState(
        lifecycle_node_matcher=launch.events.matches_action(node),
        transition_id=lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE))
    activate_when_inactive = launch.actions.RegisterEventHandler(
        launch_ros.event_handlers.OnStateTransition(
            target_lifecycle_node=node, goal_state="inactive",
            entities=[launch.actions.EmitEvent(event=launch_ros.events.lifecycle.ChangeState(
                lifecycle_node_matcher=launch.events.matches_action(node),
                transition_id=lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE))]))

    rviz = launch_ros.actions.Node(
        package="rviz2", executable="rviz2", name="clap_rviz", arguments=["-d", rviz_config],
        condition=launch.conditions.IfCondition(lc("rviz")))

    return launch.LaunchDescription(
        [*arguments, activate_when_inactive, node, configure, rviz])
