"""landscape.device: device choice and one thread count for torch and BLAS."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info

from landscape.device import (
    MAX_DEFAULT_THREADS,
    available_cores,
    default_threads,
    resolve_device,
    set_threads,
)


def _pools() -> dict[str, int]:
    return {pool["filepath"]: pool["num_threads"] for pool in threadpool_info()}


def test_set_threads_reaches_torch_and_every_blas_pool():
    before_torch = torch.get_num_threads()
    limits = set_threads(1)
    try:
        info = threadpool_info()
        assert any(pool["user_api"] == "blas" for pool in info)  # NumPy / SciPy loaded
        for pool in info:
            assert pool["num_threads"] == 1, pool
        assert torch.get_num_threads() == 1
    finally:
        limits.restore()
    assert torch.get_num_threads() == before_torch


def test_set_threads_as_a_context_manager_restores():
    set_threads(1).restore()  # load every library first, so the pools below are comparable
    before_torch, before_pools = torch.get_num_threads(), _pools()
    with set_threads(2) as limits:
        assert limits.threads == 2 and torch.get_num_threads() == 2
        assert all(n == 2 for n in _pools().values())
    assert torch.get_num_threads() == before_torch
    assert _pools() == before_pools


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_set_threads_refuses_bad_counts(bad):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        set_threads(bad)


def test_default_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    for value in ("", "0", "x"):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert default_threads() == max(1, min(available_cores(), MAX_DEFAULT_THREADS))
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= default_threads() <= MAX_DEFAULT_THREADS


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="invalid device"):
        resolve_device("gpu0")


def test_set_threads_is_a_top_level_name():
    import landscape
    import landscape.device

    assert landscape.set_threads is landscape.device.set_threads


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limit_is_the_smallest_quota_up_the_tree(tmp_path):
    from landscape.device import cgroup_cpu_limit

    proc = tmp_path / "cgroup"
    proc.write_text("0::/job/step\n")
    root = tmp_path / "sys"
    _write(root / "cpu.max", "max 100000\n")
    _write(root / "job" / "cpu.max", "150000 100000\n")  # 1.5 cores
    _write(root / "job" / "step" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(proc, root) == 1.5
    _write(root / "job" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(proc, root) is None


def test_cgroup_v1_limit_reads_the_cfs_quota(tmp_path):
    from landscape.device import cgroup_cpu_limit

    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    folder = tmp_path / "sys" / "cpu,cpuacct" / "docker" / "abc"
    _write(folder / "cpu.cfs_quota_us", "200000\n")
    _write(folder / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(proc, tmp_path / "sys") == 2.0
    _write(folder / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_limit(proc, tmp_path / "sys") is None
    assert cgroup_cpu_limit(tmp_path / "missing", tmp_path / "sys") is None


def test_available_memory_is_memavailable_at_most_what_the_cgroup_limits_leave(tmp_path):
    from landscape.device import available_memory

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000000 kB\nMemAvailable:  6000000 kB\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/job/step\n")
    root = tmp_path / "sys"
    _write(root / "job" / "memory.max", "3000000000\n")  # a 3 GB container
    _write(root / "job" / "memory.current", "1000000000\n")
    _write(root / "job" / "step" / "memory.max", "max\n")
    assert available_memory(meminfo, proc, root) == 2_000_000_000
    _write(root / "job" / "memory.max", "max\n")
    assert available_memory(meminfo, proc, root) == 6_000_000_000 * 1024 // 1000
    v1 = tmp_path / "cgroup-v1"
    v1.write_text("4:memory:/docker/abc\n3:cpu:/\n")
    folder = tmp_path / "sys" / "memory" / "docker" / "abc"
    _write(folder / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    _write(folder / "memory.usage_in_bytes", "5\n")
    assert available_memory(meminfo, v1, root) == 6_000_000_000 * 1024 // 1000
    _write(folder / "memory.limit_in_bytes", "1000\n")
    assert available_memory(meminfo, v1, root) == 995
    missing = tmp_path / "missing"
    assert available_memory(missing, missing, root) is None


def test_physical_cores_count_hyperthreads_once(tmp_path):
    from landscape.device import physical_cores

    for cpu, core in ((0, 0), (1, 0), (2, 1), (3, 1)):  # two cores, two threads each
        _write(tmp_path / f"cpu{cpu}" / "topology" / "physical_package_id", "0\n")
        _write(tmp_path / f"cpu{cpu}" / "topology" / "core_id", f"{core}\n")
    assert physical_cores([0, 1, 2, 3], tmp_path) == 2
    assert physical_cores([0, 1], tmp_path) == 1
    assert physical_cores([0, 7], tmp_path) is None  # unknown topology


def test_available_cores_obeys_affinity_quota_and_physical_cores(monkeypatch):
    import landscape.device as device

    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(device, "physical_cores", lambda cpus: len(cpus))
    monkeypatch.setattr(device, "cgroup_cpu_limit", lambda: 1.5)
    assert device.available_cores() == 2  # the quota, rounded up
    monkeypatch.setattr(device, "cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(device, "physical_cores", lambda cpus: len(cpus) // 2)
    assert device.available_cores() == 4  # hyperthreads counted once
    monkeypatch.setattr(device, "physical_cores", lambda cpus: None)
    assert device.available_cores() == 8
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads() == 8


def test_keep_freed_memory_stops_the_page_faults_of_repeated_large_blocks():
    """After keep_freed_memory, freeing and re-allocating a 40 MB block touches no new page
    (run in a fresh interpreter: the setting is process-wide and one-way)."""
    import subprocess
    import sys

    code = (
        "import resource, torch\n"
        "from landscape.device import keep_freed_memory\n"
        "def faults(blocks=5):\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    for _ in range(blocks):\n"
        "        torch.ones(10_000_000)\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "plain = faults()\n"
        "kept = keep_freed_memory()\n"
        "faults(20)\n"  # the heap grows until glibc's bins hold the aligned blocks' ends
        "print(plain, kept, faults())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    plain, kept, after = out.stdout.split()
    if kept != "True":
        pytest.skip("not glibc: keep_freed_memory is a no-op here")
    assert int(plain) > 5 * 5_000  # every block mapped anew (40 MB = 9,766 pages)
    assert int(after) < 1_000
