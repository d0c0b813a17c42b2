"""Preemption: a SIGTERM (a TPU VM's or a scheduler's notice) stops the run at a step boundary with a checkpoint.

    with preemption_notice(store.reached_preemption) as preempted:
        ...
        if preempted(step):   # after each step: save this step, wait for it, raise Preempted

On many processes the notice is orbax's preemption sync point (``CheckpointManager.reached_preemption``): JAX's
preemption service, started by ``jax.distributed.initialize``, catches the SIGTERM on any host and agrees with
the others on one step at which every host answers True, so all save the same step. Every host must ask at every
step. Without ``jax.distributed`` that service does not exist and the sync point never fires, so on one process
a SIGTERM handler sets a flag that the loop reads at the next step boundary. The handler only sets the flag:
saving from a signal handler could interrupt the step's own device work or an orbax write halfway. A handler is
never installed on many processes: one host stopping on its own would leave the others in a collective.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

import jax

# EX_TEMPFAIL (sysexits.h): stopped for a reason outside the run; the same command resumes it.
PREEMPTED_EXIT_CODE = 75


class Preempted(Exception):
    """The run stopped at a preemption notice after saving (and waiting for) a checkpoint at ``done``."""

    def __init__(self, done: int, counter: str = "step"):
        super().__init__(f"preempted at {counter} {done}: checkpoint {done} saved; run the same command to resume")
        self.done = done


@contextlib.contextmanager
def preemption_notice(reached_preemption: Callable[[int], bool]) -> Iterator[Callable[[int], bool]]:
    """Yields preempted(step) -> bool, asked after every step: orbax's sync point, or on one process a SIGTERM
    received since entering. The SIGTERM handler (one process, main thread) is removed on exit."""
    received = threading.Event()
    install = jax.process_count() == 1 and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.set()) if install else None
    try:
        # The sync point first and always: every host must ask it at every step.
        yield lambda step: reached_preemption(step) or received.is_set()
    finally:
        if install:  # None: a handler not set from Python; the default is the closest we can put back
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
