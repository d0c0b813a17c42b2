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
