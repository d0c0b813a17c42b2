"""What a run writes to its folder, correct on one host or many: the run's config.yaml and cached arrays.

On many hosts the run folder must be a path every host sees (NFS, or a ``gs://`` bucket mounted on each host):
process 0 writes, every process reads. A cache that one host sees and another does not would make the hosts
take different paths through collective computations (a hang); that is detected and refused instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import jax
import numpy as np
import yaml

# Keys a resumed run may change freely: how it logs and where it writes, and PPO's iteration count (its learning
# rates are constant). A reward model's max_steps / epochs set its warmup-cosine schedule, so they count as changes.
RESUMABLE_KEYS = {
    "train.iterations", "train.log_every", "train.eval_every", "train.save_every", "train.keep_checkpoints",
    "train.progress", "train.output_dir", "train.allow_config_change",
}  # fmt: skip


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value and prefix.count(".") < 1:  # sections, not dict-valued keys
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_keys(stored: dict, new: dict) -> dict[str, tuple]:
    """{key: (stored, new)} for every config key whose value differs, but the run-length and logging keys."""
    a, b = _flat(stored), _flat(new)
    return {
        k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k not in RESUMABLE_KEYS and a.get(k) != b.get(k)
    }


def write_run_config(output_dir: str, config: dict, *, resumed_at: int = 0, allow_change: bool = False) -> None:
    """The run folder and its config.yaml, written by process 0 only.

    A resumed run (``resumed_at`` > 0) keeps the config.yaml it started with. If the new config differs in
    anything but run length and logging, the run stops with the changed keys listed, or, with ``allow_change``,
    the change is appended to config_changes.jsonl with the step it takes effect at."""
    path = os.path.join(output_dir, "config.yaml")
    if resumed_at > 0 and os.path.exists(path):
        with open(path) as f:
            stored = yaml.safe_load(f) or {}
        changes = changed_keys(stored, json.loads(json.dumps(config)))
        if changes and not allow_change:
            listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
            raise ValueError(
                f"{output_dir}: resuming at {resumed_at} with a changed config ({listed}); start a new run folder, "
                "or pass --allow-config-change (train.allow_config_change=true) to go on with the new values"
            )
        if changes and jax.process_index() == 0:
            with open(os.path.join(output_dir, "config_changes.jsonl"), "a") as f:
                f.write(json.dumps({"from": resumed_at, "changes": {k: list(v) for k, v in changes.items()}}) + "\n")
        return
    if jax.process_index() == 0:
        os.makedirs(output_dir, exist_ok=True)
        with open(path, "w") as f:
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
    if jax.process_index() == 0:  # written whole, then renamed: a process killed midway leaves no half file
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        partial = f"{path}.{os.getpid()}.partial"
        with open(partial, "wb") as f:
            np.save(f, value)
        os.replace(partial, path)
    return value
