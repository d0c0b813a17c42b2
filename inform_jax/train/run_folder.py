"""What a run writes to its folder, correct on one host or many: the run's config.yaml and cached arrays.

On many hosts the run folder must be a path every host sees (NFS, or a ``gs://`` bucket mounted on each host):
process 0 writes, every process reads. A cache that one host sees and another does not would make the hosts
take different paths through collective computations (a hang); that is detected and refused instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import numpy as np
import yaml


def write_run_config(output_dir: str, config: dict) -> None:
    """The run folder and its config.yaml, written by process 0 only."""
    if jax.process_index() == 0:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "config.yaml"), "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)


def cached_array(path: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array stored at ``path``, or ``compute()`` (run by every process: it may hold collectives) saved there
    by process 0. Every process must see the same answer to "is it cached?"."""
    exists = os.path.exists(path)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        seen = np.asarray(multihost_utils.process_allgather(np.asarray(exists)))
        if seen.any() != seen.all():
            raise RuntimeError(
                f"{path} exists on some hosts and not on others: the run folder must be a path every host shares"
            )
    if exists:
        return np.load(path)
    value = np.asarray(compute())
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        np.save(path, value)
    return value
