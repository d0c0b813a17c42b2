"""JAX's persistent compilation cache, for commands that compile the same programs again and again.

The laboratory compiles one program set per method, and methods with the same shapes (PPO, PPO w/ KL and EPPO
share every program but the penalty's) compile identical programs; the cache also makes a second run of the same
command skip compilation. It is keyed by the program, the compile options, the jax version and the device, so a
stale entry is never used. A folder chosen by the user (``JAX_COMPILATION_CACHE_DIR`` or
``jax.config.update("jax_compilation_cache_dir", ...)``) is kept.
"""

from __future__ import annotations

import os

import jax


def use_compile_cache(folder: str, *, min_compile_seconds: float = 0.2) -> str:
    """Cache compiled programs in ``folder`` unless a cache folder is already configured; returns the folder in
    use. Programs that compile faster than ``min_compile_seconds`` are not written."""
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    os.makedirs(folder, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    return folder


def memory_mappings() -> tuple[int, int] | None:
    """(memory mappings of this process, the kernel's limit vm.max_map_count), or None where /proc does not say
    (not Linux)."""
    try:
        with open("/proc/self/maps") as f:
            used = sum(1 for _ in f)
        with open("/proc/sys/vm/max_map_count") as f:
            return used, int(f.read())
    except (OSError, ValueError):
        return None


def release_programs_near_map_limit(fraction: float = 0.5) -> bool:
    """Clear JAX's in-memory caches (traces and compiled programs) when this process holds more than ``fraction`` of
    the kernel's memory-mapping limit; where that cannot be read, always. Returns whether it cleared.

    Every compiled program stays mapped while its jitted function is cached; a process that runs many different
    programs (a 10-seed study: a world, a gold scorer and reward models per seed) ended with "LLVM compilation
    error: Cannot allocate memory" at the limit (65530 by default). Clearing only near it keeps the traces that
    runs with the same shapes share (:func:`inform_jax.train.ppo.trainer.shared_programs`); the persistent cache
    (:func:`use_compile_cache`) spares the recompiles after a clear."""
    maps = memory_mappings()
    if maps is not None and maps[0] < fraction * maps[1]:
        return False
    jax.clear_caches()
    return True
