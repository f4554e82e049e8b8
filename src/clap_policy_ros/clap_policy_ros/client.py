"""
Drive the policy node from another process: start it, call its services, follow its lifecycle.

The one ROS client helper of the workspace, used by ``sim eval`` (clap_sim), bench/node.py and
the node's tests. The caller owns an rclpy node that an executor spins in another thread; the
functions here only wait (polling, so they never spin the executor themselves).

- ``write_params`` / ``start_policy_node`` / ``stop_process``: the ``policy_node`` executable in
  its own process, with parameter files (later files win), output to a log file, stopped with
  SIGINT (the node deactivates through its lifecycle and sends the hold command) and killed if
  it does not stop.
- ``call``: a service call with a timeout; ``call_once`` makes and drops the client.
- ``LifecycleClient``: a lifecycle node's state and transitions, and ``wait_active``.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time
from typing import Sequence

import yaml
from clap_train.cli import find_ros_executable
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

from .node import NODE_NAME

TRANSITIONS = {"configure": Transition.TRANSITION_CONFIGURE,
               "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE,
               "cleanup": Transition.TRANSITION_CLEANUP}


class ClientError(RuntimeError):
    """A node or service did not do what was asked in time (the message says which)."""


def policy_node_executable() -> str:
    """Return clap_policy_ros' policy_node (``CLAP_POLICY_NODE``, the ament index or PATH)."""
    found = (os.environ.get("CLAP_POLICY_NODE")
             or find_ros_executable("clap_policy_ros", "policy_node"))
    if not found:
        raise ClientError("clap_policy_ros' policy_node executable was not found; build the "
                          "workspace and source scripts/env.sh (or your ROS workspace's setup)")
    return found


def write_params(path: pathlib.Path, params: dict, node: str = NODE_NAME) -> pathlib.Path:
    """Write ``params`` as ``node``'s ROS parameter file at ``path``; return ``path``."""
    path.write_text(yaml.safe_dump({node: {"ros__parameters": params}}, sort_keys=False))
    return path


def start_policy_node(params_files: Sequence[pathlib.Path], log_path: pathlib.Path,
                      ros_args: Sequence[str] = (), env: dict | None = None,
                      new_session: bool = False) -> subprocess.Popen:
    """
    Run policy_node with ``params_files`` (in order, later ones win) and ``ros_args``.

    Its stdout and stderr go to ``log_path``; ``new_session``: a process group of its own (a
    Ctrl-C in the caller's terminal does not reach it; ``stop_process`` stops it).
    """
    cmd = [policy_node_executable(), "--ros-args"]
    for params in params_files:
        cmd += ["--params-file", str(params)]
    with open(log_path, "w") as log:
        return subprocess.Popen([*cmd, *ros_args], stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ) if env is None else env,
                                start_new_session=new_session)


def stop_process(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """Stop a node process with SIGINT (a clean shutdown); kill it after ``timeout`` s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tail(path: pathlib.Path, lines: int = 15) -> str:
    """Return the last ``lines`` lines of a log file ("" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def call(client, request, timeout: float):
    """Call a service through ``client`` and wait for the answer; ClientError on a timeout."""
    if not client.wait_for_service(timeout_sec=timeout):
        raise ClientError(f"service {client.srv_name} did not appear within {timeout:.0f} s")
    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > deadline:
            raise ClientError(f"service {client.srv_name} did not answer within {timeout:.0f} s")
        time.sleep(0.01)
    return future.result()


def call_once(node, srv_type, name: str, request, timeout: float):
    """Call service ``name`` through a client made for this call only."""
    client = node.create_client(srv_type, name)
    try:
        return call(client, request, timeout)
    finally:
        node.destroy_client(client)


class LifecycleClient:
    """The lifecycle services of node ``target`` (e.g. ``/clap_policy``), through ``node``."""

    def __init__(self, node, target: str = "/" + NODE_NAME):
        self._node = node
        self._get = node.create_client(GetState, f"{target}/get_state")
        self._change = node.create_client(ChangeState, f"{target}/change_state")

    def state(self, timeout: float = 10.0) -> str:
        """Return the lifecycle state's label; "" when the node does not answer in time."""
        try:
            return call(self._get, GetState.Request(), timeout).current_state.label
        except ClientError:
            return ""

    def transition(self, name: str, timeout: float = 30.0) -> bool:
        """Ask for transition ``name`` (configure, activate, ...); return whether it succeeded."""
        request = ChangeState.Request()
        request.transition.id = TRANSITIONS[name]
        return call(self._change, request, timeout).success

    def wait_active(self, proc: subprocess.Popen, log_path: pathlib.Path,
                    timeout: float) -> None:
        """
        Wait until the node in ``proc`` is active; ClientError when it cannot get there.

        That is: the process exits, or its autostart failed (the node stays up, unconfigured,
        and logs an error naming configure or activate), or ``timeout`` s pass.
        """
        deadline = time.monotonic() + timeout
        label = "unknown"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClientError(f"the node exited with code {proc.returncode} while starting; "
                                  f"see {log_path}:\n" + tail(log_path))
            label = self.state(timeout=5.0) or "no answer"
            if label == "active":
                return
            failed = [line for line in tail(log_path, 200).splitlines()
                      if "[ERROR]" in line and ("configure" in line or "activate" in line)]
            if failed and label in ("unconfigured", "inactive", "finalized"):
                raise ClientError(f"the node did not start (state: {label}): {failed[-1]}\n"
                                  f"see {log_path}")
            time.sleep(0.5)
        raise ClientError(f"the node is not active after {timeout:.0f} s (state: {label}); see "
                          f"{log_path}:\n" + tail(log_path))

    def destroy(self) -> None:
        """Destroy the two clients."""
        self._node.destroy_client(self._get)
        self._node.destroy_client(self._change)
