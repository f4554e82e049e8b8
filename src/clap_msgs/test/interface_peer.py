"""Reference peer for the interface tests, run in its own process.

Echoes every clap_msgs message from /clap_test/in/<Type> to /clap_test/out/<Type> and serves
the services and the action with the semantics documented in the .srv/.action files (the
policy node follows the same rules), so a test in another process can check each interface
end to end over DDS.
"""

import sys
import time
import uuid

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from clap_msgs.action import ExecuteTask
from clap_msgs.msg import ActionChunk, CameraStatus, PolicyStatus, Subtask
from clap_msgs.srv import EndEpisode, SetInstruction, StartEpisode

MESSAGES = {"ActionChunk": ActionChunk, "CameraStatus": CameraStatus,
            "PolicyStatus": PolicyStatus, "Subtask": Subtask}


class InterfacePeer(Node):
    def __init__(self):
        super().__init__("clap_interface_peer")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._echo = {}
        for name, cls in MESSAGES.items():
            pub = self.create_publisher(cls, f"/clap_test/out/{name}", qos)
            self._echo[name] = pub
            self.create_subscription(cls, f"/clap_test/in/{name}", pub.publish, qos)
        self.instruction = ""
        self.episode = None
        self.episode_counter = 0
        group = ReentrantCallbackGroup()
        self.create_service(SetInstruction, "/clap_test/set_instruction", self.on_set_instruction)
        self.create_service(StartEpisode, "/clap_test/start_episode", self.on_start_episode)
        self.create_service(EndEpisode, "/clap_test/end_episode", self.on_end_episode)
        self._action = ActionServer(
            self, ExecuteTask, "/clap_test/execute_task", self.execute,
            goal_callback=self.on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=group)

    def on_set_instruction(self, request, response):
        response.previous_instruction = self.instruction
        self.instruction = request.instruction
        response.success = True
        response.message = "holding" if not request.instruction else "following"
        return response

    def on_start_episode(self, request, response):
        if self.episode is not None:
            response.success = False
            response.message = f"episode {self.episode[0]} is still running"
            response.episode_id = self.episode[0]
            return response
        self.episode_counter += 1
        episode_id = request.episode_id or f"ep-{self.episode_counter:04d}-{uuid.uuid4().hex[:6]}"
        now = self.get_clock().now()
        self.episode = (episode_id, time.monotonic(), request.seed)
        self.instruction = request.instruction
        response.success = True
        response.message = f"seed {request.seed}"
        response.episode_id = episode_id
        response.start_time = now.to_msg()
        return response

    def on_end_episode(self, request, response):
        if self.episode is None or self.episode[0] != request.episode_id:
            response.recorded = False
            response.message = f"no running episode {request.episode_id!r}"
            return response
        response.duration = time.monotonic() - self.episode[1]
        response.recorded = True
        response.message = f"success={request.success} reward={request.reward} notes={request.notes}"
        self.episode = None
        return response

    def on_goal(self, goal):
        return GoalResponse.ACCEPT if goal.instruction else GoalResponse.REJECT

    def execute(self, goal_handle):
        start = time.monotonic()
        steps = 3 if goal_handle.request.instruction != "run until cancelled" else 10_000
        result = ExecuteTask.Result()
        for i in range(steps):
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                result.success = False
                result.message = "cancelled: holding the last commanded pose"
                result.chunks = i
                return result
            feedback = ExecuteTask.Feedback()
            feedback.subtask = f"subtask {i}"
            elapsed = time.monotonic() - start
            feedback.elapsed.sec = int(elapsed)
            feedback.elapsed.nanosec = int((elapsed % 1) * 1e9)
            feedback.latency = 0.01 * (i + 1)
            feedback.queue_depth = 32 - i
            goal_handle.publish_feedback(feedback)
            time.sleep(0.05)
        goal_handle.succeed()
        result.success = True
        result.message = f"done: {goal_handle.request.instruction}"
        result.chunks = steps
        return result


def main():
    rclpy.init()
    node = InterfacePeer()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    print("peer ready", flush=True)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
