"""Test setup: CPU only, 8 simulated devices for sharding tests, float32 matmuls at full precision."""

import os

# Must happen before jax is imported anywhere: tests run on the CPU and simulate an 8-device mesh.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The TPU-plan tests load libtpu only to compile for a topology (no TPU is opened); libtpu's lockfile would
# otherwise refuse the second process (the other xdist worker, a notebook kernel) that loads it.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# Under pytest-xdist each worker keeps to its own share of the cores (worker i: cores i, i + n, ...; n workers), as
# the lab's --jobs do: unpinned, each worker's XLA runs a compute thread per core of the machine, and two workers on
# 2 cores slowed each other down. Done before jax is imported: XLA sizes its thread pool from the cores it may use.
# Subprocesses (multi-host runs, notebook kernels) inherit the worker's share.
_worker, _workers = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _worker.startswith("gw") and hasattr(os, "sched_setaffinity"):
    _cores = sorted(os.sched_getaffinity(0))
    if len(_cores) >= _workers > 1:
        os.sched_setaffinity(0, set(_cores[int(_worker[2:]) % _workers :: _workers]))
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()


# One persistent compilation cache for the session: the demo, notebook and smoke tests compile the same programs
# in this process and in notebook kernels (which inherit the environment).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="inform-jax-test-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

# The suite's models are tiny and most of its time is XLA compiling them (about half of the studies' smoke test,
# measured with cProfile): skip LLVM's optimization of the CPU programs (the HLO passes still run, so the numbers
# are those of the fused programs). Inherited by the subprocesses (multi-host runs, notebook kernels). The TPU plans
# compile with the default options (tests/test_plans.py), since their memory figures are what they check.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_programs_near_the_map_limit():
    """After each test module, clear JAX's in-memory caches if this worker holds more than half of the kernel's
    memory-mapping limit (vm.max_map_count, 65530 by default): every compiled program stays mapped while its
    function is cached, and a worker compiles thousands over the suite; at the limit XLA aborts the process (seen
    as "Fatal Python error: Aborted" while serializing a program for the persistent cache). The persistent cache
    spares most recompiles after a clear. With INFORM_JAX_MAPS_LOG=PATH each worker appends its mappings before and
    after, and whether it cleared, to PATH-<worker>."""
    yield
    from inform_jax.compile_cache import memory_mappings, release_programs_near_map_limit

    before = memory_mappings()
    cleared = release_programs_near_map_limit(0.5)
    if os.environ.get("INFORM_JAX_MAPS_LOG"):
        with open(os.environ["INFORM_JAX_MAPS_LOG"] + "-" + os.environ.get("PYTEST_XDIST_WORKER", "main"), "a") as f:
            f.write(f"{before} {memory_mappings()} {cleared}\n")


@pytest.fixture(scope="session")
def lab_cache(tmp_path_factory):
    """One laboratory cache (world, SFT policy, reward models) shared by the demo and notebook tests."""
    return tmp_path_factory.mktemp("lab-cache")


def pytest_collection_modifyitems(items):
    """Under pytest-xdist (``-n 2 --dist loadgroup``, the README's command) keep each test module on one worker,
    so that its module-scoped fixtures (tiny checkpoints, worlds) are built once, and every test that shares the
    laboratory cache on the same worker, so that the world, SFT policy and reward models are trained once. The
    laboratory's group is the longest: it goes first, and the other worker takes the rest meanwhile."""
    group = {
        item: "lab" if "lab_cache" in getattr(item, "fixturenames", ()) else item.module.__name__ for item in items
    }
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group[item]))
    items.sort(key=lambda item: group[item] != "lab")  # stable: the collection order within each part
