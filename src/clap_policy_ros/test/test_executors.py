"""clap_policy_ros.executors.MultiThreadedExecutor: a saturated pool queues each callback once.

Real rclpy, one process: three timers, each in its own group and each slower than its period,
on a two-thread pool, so there is always a ready callback and never a free thread, the case
in which rclpy 7.1's executor re-submits waiting callbacks in a busy loop.
"""

import threading
import time

import pytest
import rclpy
from clap_policy_ros.executors import MultiThreadedExecutor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

pytestmark = pytest.mark.ros


def test_saturated_pool_submits_each_callback_once_and_all_timers_run():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("executor_check", context=context)
    runs = {k: 0 for k in range(3)}

    def slow(k):
        runs[k] += 1
        time.sleep(0.02)  # longer than the 10 ms period: the timer is ready again at once

    for k in range(3):
        node.create_timer(0.01, lambda k=k: slow(k),
                          callback_group=MutuallyExclusiveCallbackGroup())
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(node)
    submitted = []
    pool_submit = executor._executor.submit
    executor._executor.submit = lambda fn, *a: submitted.append(a) or pool_submit(fn, *a)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    time.sleep(1.5)
    executor.shutdown(timeout_sec=2)
    spinner.join(timeout=2)
    node.destroy_node()
    rclpy.try_shutdown(context=context)
    total = sum(runs.values())
    # two threads x 1.5 s / 20 ms per run: about 150 runs; every timer gets its share
    assert total > 60 and min(runs.values()) > 10, runs
    # one submission per run (plus what was still queued at shutdown), never thousands
    assert len(submitted) <= total + 3, (len(submitted), total)
    assert len({id(a[0]) for a in submitted}) == len(submitted)  # no task queued twice
