"""landscape.thread_pools: the pools' waiting policy, set before torch and NumPy load."""

import os
import subprocess
import sys

from landscape import thread_pools

AMD, INTEL = "AuthenticAMD", "GenuineIntel"


def test_cpu_vendor_parses_cpuinfo():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n"
    assert thread_pools.cpu_vendor(text) == AMD
    assert thread_pools.cpu_vendor("processor: 0\n") == ""


def test_expects_numpy_gemm_follows_the_variable_then_the_vendor():
    assert thread_pools.expects_numpy_gemm({}, vendor=AMD)
    assert not thread_pools.expects_numpy_gemm({}, vendor=INTEL)
    assert not thread_pools.expects_numpy_gemm({"LANDSCAPE_GEMM": "torch"}, vendor=AMD)
    assert thread_pools.expects_numpy_gemm({"LANDSCAPE_GEMM": "numpy"}, vendor=INTEL)


def test_prepare_sets_each_variable_only_before_its_library_loads():
    env: dict = {}
    assert thread_pools.prepare(env, modules={}, vendor=AMD) == {
        "OMP_WAIT_POLICY": "PASSIVE",
        "OPENBLAS_THREAD_TIMEOUT": "4",
    }
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}
    env = {}
    assert thread_pools.prepare(env, modules={"torch": None}, vendor=AMD) == {
        "OPENBLAS_THREAD_TIMEOUT": "4"
    }
    assert thread_pools.prepare({}, modules={"torch": None, "numpy": None}, vendor=AMD) == {}


def test_prepare_keeps_the_users_values_and_leaves_one_pool_alone():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    thread_pools.prepare(env, modules={}, vendor=AMD)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}
    for env, vendor in (({}, INTEL), ({"LANDSCAPE_GEMM": "torch"}, AMD)):
        assert thread_pools.prepare(env, modules={}, vendor=vendor) == {}
        assert "OMP_WAIT_POLICY" not in env


def _after_import(gemm: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in thread_pools.PASSIVE_WAITING}
    code = "import os, landscape; print(os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "LANDSCAPE_GEMM": gemm},
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def test_import_landscape_prepares_the_pools_before_torch():
    assert _after_import("numpy") == "PASSIVE"
    assert _after_import("torch") == "None"
