"""CPU budget: affinity capped by the cgroup quota; torch's pool lowered to it, never raised."""

import os

from clap_train import cpus


def test_cgroup_v2_quota_caps_the_affinity_mask(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert cpus._quota_cpus(tmp_path) == 1.5
    assert cpus.available_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpus._quota_cpus(tmp_path) is None
    assert cpus.available_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_cgroup_v1_quota_and_no_cgroup(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cpus._quota_cpus(tmp_path) == 1.0 and cpus.available_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert cpus._quota_cpus(tmp_path) is None
    assert cpus._quota_cpus(tmp_path / "missing") is None


class FakeTorch:
    def __init__(self, threads):
        self.threads = threads

    def get_num_threads(self):
        return self.threads

    def set_num_threads(self, n):
        self.threads = n


def test_torch_threads_lowered_to_the_budget_never_raised(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpus, "available_cpus", lambda root=None: 2)
    many = FakeTorch(64)
    assert cpus.limit_torch_threads(many) == 2 and many.threads == 2
    one = FakeTorch(1)
    assert cpus.limit_torch_threads(one) == 1 and one.threads == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # the user's choice stands
    chosen = FakeTorch(8)
    assert cpus.limit_torch_threads(chosen) == 8 and chosen.threads == 8
