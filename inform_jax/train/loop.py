"""The one fit loop of the reward-model, PPO and SFT trainers: step, divergence check, metrics, callbacks, saves.

    done = fit_loop(settings, start, step, log=..., save=..., latest_checkpoint=...)

A trainer supplies ``step(i) -> metrics`` (device arrays or floats) and the loop does the rest in one order:
run the step; on a logging or saving step (or every step with ``sync_every_step``) fetch the metrics to the host
and stop with :class:`TrainingDivergedError` if a watched one is not finite (so a non-finite state is never
saved); let ``before_log`` add metrics (PPO's detection); write the metrics line; run ``after_log`` (callbacks,
held-out evaluation); save; on a preemption notice save this step (if not just saved) and raise
:class:`~inform_jax.train.preemption.Preempted`; stop early after ``stop_after`` steps of this call (a simulated
kill).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from inform_jax.train.metrics_log import MetricsLog, progress
from inform_jax.train.preemption import Preempted, preemption_notice


class TrainingDivergedError(RuntimeError):
    """A watched metric (loss, policy loss) became NaN or infinite; the checkpoints on disk are from finite steps."""


@dataclasses.dataclass
class LoopSettings:
    """total: the step count to reach; log_every / save_every: cadences (the last step always logs and saves;
    save_every None: no saves); label: the progress bar's; counter: the metrics line's name for the step count
    ("step" or "iteration"); watch: the metrics that must stay finite; sync_every_step: fetch metrics every step
    (PPO's are on the host anyway), not only on logging and saving steps."""

    total: int
    log_every: int
    save_every: int | None
    progress: bool = True
    label: str = "train"
    counter: str = "step"
    watch: Sequence[str] = ("loss",)
    sync_every_step: bool = False


def fit_loop(
    settings: LoopSettings,
    start: int,
    step: Callable[[int], dict],
    *,
    log: MetricsLog | None = None,
    record: dict | None = None,
    save: Callable[[int], None] | None = None,
    latest_checkpoint: Callable[[], int | None] = lambda: None,
    before_log: Callable[[int, dict], dict] | None = None,
    after_log: Callable[[int, dict], None] | None = None,
    postfix: Callable[[dict], dict] | None = None,
    stop_after: int | None = None,
    reached_preemption: Callable[[int], bool] | None = None,
    checkpoints=None,
) -> int:
    """Run ``step(i)`` for i = start .. total - 1; returns the step count reached.

    record: fixed fields of every metrics line (e.g. ``{"split": "train"}``); postfix(metrics) -> the progress
    bar's postfix fields. The seconds since this call's start are logged with each line. reached_preemption(done):
    orbax's preemption sync point, asked after every step (with ``save``); see :mod:`inform_jax.train.preemption`.
    checkpoints: the run's :class:`inform_jax.train.checkpoints.CheckpointStore`, which gives ``latest_checkpoint``
    and ``reached_preemption``; on the way out, also on divergence, preemption or Ctrl-C, ``log`` is closed and the
    pending save (of the last good checkpoint) completes.
    """
    if checkpoints is not None:
        latest_checkpoint, reached_preemption = checkpoints.latest_step, checkpoints.reached_preemption
    s = settings
    bar = progress(s.total, start, s.progress, s.label)
    began = time.perf_counter()
    done = start
    watch = save is not None and reached_preemption is not None
    notice = preemption_notice(reached_preemption) if watch else contextlib.nullcontext(lambda done: False)
    scope = contextlib.ExitStack()
    try:
        preempted = scope.enter_context(notice)
        while done < s.total:
            metrics = step(done)
            done += 1
            bar.update(1)
            logging = done % s.log_every == 0 or done == s.total
            saving = save is not None and (done % s.save_every == 0 or done == s.total)
            if logging or saving or s.sync_every_step:
                metrics = jax.device_get(metrics)
                _check_finite(metrics, s.watch, done, s.counter, latest_checkpoint)
            if before_log is not None:
                metrics = before_log(done, metrics)
            if logging and log is not None:
                log.write({s.counter: done, **(record or {}), **metrics, "seconds": time.perf_counter() - began})
                if postfix is not None:
                    bar.set_postfix(postfix(metrics))
            if after_log is not None:
                after_log(done, metrics)
            if saving:
                save(done)
            if preempted(done):
                if not saving:
                    save(done)
                raise Preempted(done, s.counter)  # the save completes on the way out (below)
            if stop_after is not None and done - start >= stop_after:
                break
    finally:
        scope.close()  # the SIGTERM handler, if one was installed, goes
        bar.close()
        if log is not None:
            log.close()
        if checkpoints is not None:
            checkpoints.wait_until_finished()
    return done


def _check_finite(metrics: dict, watch: Sequence[str], done: int, counter: str, latest_checkpoint) -> None:
    for key in watch:
        value = float(metrics[key])
        if not math.isfinite(value):
            raise TrainingDivergedError(
                f"{key} is {value} at {counter} {done}; last good checkpoint: {counter} {latest_checkpoint()}"
            )


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.asarray(True)


def ensure_finite(state, done: int, counter: str, latest_checkpoint: Callable[[], int | None]) -> None:
    """Stop with TrainingDivergedError before saving a state (parameters, optimizer moments) that holds a NaN or an
    infinity: a finite loss can sit beside overflowed Adam moments, which no later step recovers from."""
    if not bool(_all_finite(state)):
        raise TrainingDivergedError(
            f"the parameters or optimizer state hold NaN or inf at {counter} {done}; not saved; last good "
            f"checkpoint: {counter} {latest_checkpoint()}"
        )
