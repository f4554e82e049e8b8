"""How many CPUs this process may really use, and torch's thread count to match.

``os.cpu_count()`` (and the thread pools sized from it, torch's intra-op pool among them) sees
every CPU of the host. A container or CI job limited by a CPU affinity mask or a cgroup CPU
quota gets fewer: a pool sized for the host then oversubscribes the quota, and the kernel
stops the whole process for the rest of each quota period (on a 2-CPU quota with 64 torch
threads, a 20 ms inference can take seconds). Nothing in torch or the standard library reads
the cgroup quota, so it is read here (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``).
"""

from __future__ import annotations

import math
import os
import pathlib

CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup")


def _quota_cpus(root: pathlib.Path = CGROUP_ROOT) -> float | None:
    """Return the CPUs this process's cgroup quota allows, or None (no quota, no cgroup)."""
    try:
        v2 = (root / "cpu.max").read_text().split()
        if v2 and v2[0] != "max":
            return int(v2[0]) / int(v2[1])
        if v2:
            return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus(root: pathlib.Path = CGROUP_ROOT) -> int:
    """Return the CPUs this process may use: its affinity mask, capped by a cgroup quota (>= 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _quota_cpus(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def limit_torch_threads(torch_module=None) -> int:
    """Lower torch's intra-op thread count to ``available_cpus()`` if it is higher; return it.

    Never raises it, and leaves it alone when the user chose it (``OMP_NUM_THREADS`` set).
    """
    if torch_module is None:
        import torch as torch_module
    current = torch_module.get_num_threads()
    if "OMP_NUM_THREADS" in os.environ:
        return current
    cap = available_cpus()
    if current > cap:
        torch_module.set_num_threads(cap)
        return cap
    return current
