"""A run's checkpoints: orbax saves, a digest of every saved file, and resume from the newest checkpoint that verifies.

    store = CheckpointStore(os.path.join(output_dir, "checkpoints"), keep=2)
    store.save(step, state)                  # asynchronous; the digest follows once orbax has finalized the step
    found = store.restore_latest_good(state) # (step, restored state) or None when there is no checkpoint
    store.wait_until_finished()              # the pending save and its digest are on disk

Orbax checks the structure of what it restores, not the bytes of the array data: a flipped bit in a data file
restores as a wrong parameter. So once a save has completed, process 0 writes ``<step>/sha256.json``: the relative
path, size and sha256 of every file in the step's folder, written beside and renamed in (never half-written). On
many hosts every process writes its shards into that folder; orbax finalizes the step only after all of them have
(a barrier), and the run folder is one path every host sees, so process 0 digests them all.

On resume the checkpoints are tried newest first. The rule:

* a digest: the checkpoint is good if every file it lists is there with its size and sha256 (files it does not
  list, e.g. an NFS ``.nfs*`` leftover, are ignored), and orbax restores it;
* no digest, and an older checkpoint has one: this code saved it and the process died before its digest was
  written (the digest is written a moment after orbax's finalization): not completed, bad;
* no digest and no older checkpoint with one (a run folder from before digests, or the only checkpoint left):
  restored unverified, with a line saying so; orbax raising makes it bad.

Each bad checkpoint newer than the one restored gets one line naming its step and the reason, and is moved to
``<run>/bad_checkpoints/<step>`` (kept to look at; orbax would otherwise not save that step again when the run
reaches it). If none is good, :class:`CheckpointsUnusable` names the folder and nothing is moved.

The cost: process 0 reads each checkpoint once more after saving it (in a background thread, while training goes
on) and the newest ones again on resume; sha256 hashes a few hundred MB to about 2 GB a second on one core,
depending on the CPU (230 MB/s on the machine that ran the tests), so a checkpoint of tens of GB adds minutes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

DIGEST = "sha256.json"


class CheckpointsUnusable(RuntimeError):
    """Every checkpoint in the folder failed verification or restore; the message names the folder and why."""


# ----------------------------------------------------------------------------------------------- digests


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(folder: str) -> list[str]:
    """Every file under ``folder``, as sorted paths relative to it, the digest itself (and its temporary) left out."""
    out = []
    for root, _, names in os.walk(folder):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if not rel.startswith(DIGEST):
                out.append(rel)
    return sorted(out)


def write_digest(folder: str) -> None:
    """``folder/sha256.json``: {"files": [{"path", "size", "sha256"}, ...]} of every file in ``folder``."""
    files = [
        {"path": rel, "size": os.path.getsize(os.path.join(folder, rel)), "sha256": _sha256(os.path.join(folder, rel))}
        for rel in _files(folder)
    ]
    tmp = os.path.join(folder, f"{DIGEST}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump({"files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(folder, DIGEST))


def digest_mismatch(folder: str) -> str | None:
    """Why ``folder`` does not match its digest (a missing file, another size, another sha256), or None if it does.
    Sizes are compared first: a truncated file is named without hashing the rest."""
    with open(os.path.join(folder, DIGEST)) as f:
        files = json.load(f)["files"]
    for entry in files:
        path = os.path.join(folder, entry["path"])
        if not os.path.isfile(path):
            return f"{entry['path']} is missing"
        size = os.path.getsize(path)
        if size != entry["size"]:
            return f"{entry['path']} has {size} bytes, its digest says {entry['size']}"
    for entry in files:
        if _sha256(os.path.join(folder, entry["path"])) != entry["sha256"]:
            return f"{entry['path']} does not match its sha256"
    return None


# ----------------------------------------------------------------------------------------------- many hosts


def _from_process_0(value: int) -> int:
    """Process 0's ``value`` on every process (the verdicts it reached reading the shared folder)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def _on_every_process(ok: bool) -> bool:
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.asarray(ok))).all())


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ----------------------------------------------------------------------------------------------- the store

GOOD, UNVERIFIED, BAD = 0, 1, 2


class CheckpointStore:
    """An orbax ``CheckpointManager`` over ``directory`` (keeping the ``keep`` newest steps) with digests and
    fallback; ``log``: where process 0 writes its lines (fallbacks, unverified restores, a digest not written)."""

    def __init__(self, directory: str, *, keep: int, log: Callable[[str], None] = print):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )
        self._log = log if jax.process_index() == 0 else (lambda line: None)
        self._digest_thread: threading.Thread | None = None

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def reached_preemption(self, step: int) -> bool:
        """Orbax's preemption sync point (every host must ask at every step; False without jax.distributed)."""
        return self.manager.reached_preemption(step)

    def save(self, step: int, state) -> None:
        """Start an asynchronous save of ``state`` (a pytree of global arrays) as ``step``; process 0 digests it
        in the background once orbax reports the save complete."""
        self.wait_until_finished()
        if not self.manager.save(step, args=ocp.args.StandardSave(state)):
            raise RuntimeError(f"{self.directory}: orbax did not save step {step} (a step at or past it is on disk)")
        if jax.process_index() == 0:
            self._digest_thread = threading.Thread(target=self._digest_when_saved, args=(step,), daemon=True)
            self._digest_thread.start()

    def _digest_when_saved(self, step: int) -> None:
        # Polled, not waited for: orbax's wait_until_finished belongs to the thread that saves. The flag drops
        # after the step's folder is renamed into place on every host.
        while self.manager.is_saving_in_progress():
            time.sleep(0.05)
        folder = os.path.join(self.directory, str(step))
        if not os.path.isdir(folder):  # the save failed; wait_until_finished raises orbax's error
            return
        try:
            write_digest(folder)
        except OSError as err:
            self._log(f"checkpoint step {step}: digest not written ({err}); a resume will not trust this step")

    def wait_until_finished(self) -> None:
        """Block until the pending save and its digest are on disk."""
        self.manager.wait_until_finished()
        if self._digest_thread is not None:
            self._digest_thread.join()
            self._digest_thread = None

    def close(self) -> None:
        self.wait_until_finished()
        self.manager.close()

    # ------------------------------------------------------------------------------------------- restore

    def _verdict(self, step: int, older: list[int]) -> tuple[int, str]:
        """(GOOD / UNVERIFIED / BAD, the reason) for one step, read from the folder (process 0)."""
        folder = os.path.join(self.directory, str(step))
        if os.path.exists(os.path.join(folder, DIGEST)):
            try:
                reason = digest_mismatch(folder)
            except (OSError, ValueError, KeyError, TypeError) as err:
                reason = f"its digest is unreadable ({err})"
            return (GOOD, "") if reason is None else (BAD, reason)
        if any(os.path.exists(os.path.join(self.directory, str(s), DIGEST)) for s in older):
            return BAD, "no digest: the save did not complete (an older checkpoint has one)"
        return UNVERIFIED, "no digest (a checkpoint from before digests, or the last one left)"

    def restore_latest_good(self, target) -> tuple[int, dict] | None:
        """(step, state) from the newest checkpoint that verifies and restores, following the rule in the module's
        docstring; None when the folder holds no checkpoint. ``target``: a pytree like the saved state (arrays or
        ShapeDtypeStructs with their shardings), the shapes, dtypes and shardings to restore to."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        bad: list[tuple[int, str]] = []
        for i, step in enumerate(steps):
            verdict, reason = self._verdict(step, steps[i + 1 :]) if jax.process_index() == 0 else (GOOD, "")
            verdict = _from_process_0(verdict)
            if verdict != BAD:
                try:
                    state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
                    error = None
                except Exception as err:  # orbax raises many kinds; any of them means this step cannot be used
                    state, error = None, err
                if _on_every_process(error is None):
                    if verdict == UNVERIFIED:
                        self._log(f"checkpoint step {step}: {reason}; restored unverified")
                    self._set_aside(bad, step)
                    return step, state
                reason = "orbax could not restore it on another process"
                if error is not None:  # its first line: orbax's messages run to pages
                    first_line = (str(error).strip().splitlines() or [""])[0][:200]
                    reason = f"orbax could not restore it: {type(error).__name__}: {first_line}"
            bad.append((step, reason))
        listed = "; ".join(f"step {s}: {r}" for s, r in bad)
        raise CheckpointsUnusable(
            f"{self.directory}: no usable checkpoint ({listed}); move the folder away to start the run over"
        )

    def _set_aside(self, bad: list[tuple[int, str]], restored: int) -> None:
        """Move the bad steps (all newer than ``restored``) to <run>/bad_checkpoints/, one line each."""
        if not bad:
            return
        if jax.process_index() == 0:
            aside = os.path.join(os.path.dirname(self.directory), "bad_checkpoints")
            os.makedirs(aside, exist_ok=True)
            for step, reason in bad:
                dest = os.path.join(aside, str(step))
                n = 1
                while os.path.exists(dest):  # the same step bad in an earlier resume too
                    dest, n = os.path.join(aside, f"{step}.{n}"), n + 1
                os.replace(os.path.join(self.directory, str(step)), dest)
                self._log(f"checkpoint step {step} is bad: {reason}; moved to {dest}; resuming from step {restored}")
        _sync("inform_jax.checkpoints.set_aside")
        self.manager.reload()
