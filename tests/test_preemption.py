"""Preemption as on a TPU VM: `inform-jax train-rm` sent SIGTERM mid-run saves the step it is at, exits with code 75,
and the same command resumes it to the parameters of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from inform_jax.cli import main
from inform_jax.train.checkpoints import DIGEST
from inform_jax.train.loop import LoopSettings, fit_loop
from inform_jax.train.preemption import PREEMPTED_EXIT_CODE, Preempted
from inform_jax.world.world import SyntheticWorld

TINY = "{vocab_size: 96, hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 4, num_kv_heads: 4}"
STEPS = 64
TIMEOUT = 300


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return SyntheticWorld().write(out, n_train=64, n_test=16, n_sft=8, n_prompts_train=8, n_prompts_test=8)


def train_rm_args(world, out):
    sets = [
        f"model.config={TINY}", "model.dtype=float32", f"data.train={world['prefs_train.jsonl']}",
        f"data.tokenizer={world['tokenizer']}", "data.max_length=40", "head.latent_dim=8", "train.batch_size=8",
        f"train.max_steps={STEPS}", "train.save_every=4", "train.log_every=4", "train.progress=false",
        f"train.output_dir={out}",
    ]  # fmt: skip
    return ["train-rm", "--method", "inform", *[a for s in sets for a in ("--set", s)]]


def steps_on_disk(folder):
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit()) if folder.exists() else []


def test_sigterm_saves_the_current_step_exits_75_and_resumes_exactly(world, tmp_path):
    whole, preempted = tmp_path / "whole", tmp_path / "preempted"
    assert main(train_rm_args(world, whole)) == 0

    log = tmp_path / "preempted.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inform_jax.cli", *train_rm_args(world, preempted)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.time() + TIMEOUT
        while not steps_on_disk(preempted / "checkpoints"):  # the loop (and its SIGTERM handler) is running
            assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=TIMEOUT)
    printed = log.read_text()
    assert code == PREEMPTED_EXIT_CODE, printed[-3000:]
    assert not (preempted / "final").exists()
    line = next(line for line in printed.splitlines() if line.startswith("preempted at step"))
    stopped = int(line.split()[3].rstrip(":"))
    assert 0 < stopped < STEPS, line
    # The step it stopped at is on disk, complete with its digest, whether or not it was a save_every step.
    assert steps_on_disk(preempted / "checkpoints")[-1] == stopped
    assert (preempted / "checkpoints" / str(stopped) / DIGEST).exists()

    assert main(train_rm_args(world, preempted)) == 0
    for name in ("reward_head.safetensors", "model.safetensors"):
        a, b = load_file(str(whole / "final" / name)), load_file(str(preempted / "final" / name))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name


def _loop(reached_preemption, signal_at=None, total=10):
    """fit_loop over steps that do nothing (save_every 4); SIGTERM sent to this process during step ``signal_at``.
    Returns the steps saved and the step it stopped at (None: it ran to the end)."""
    saved = []

    def step(i):
        if i + 1 == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return {"loss": 0.0}

    settings = LoopSettings(total=total, log_every=100, save_every=4, progress=False)
    try:
        fit_loop(settings, 0, step, save=saved.append, reached_preemption=reached_preemption)
    except Preempted as stop:
        return saved, stop.done
    return saved, None


def test_the_loop_saves_the_step_a_sigterm_arrives_in_and_stops():
    before = signal.getsignal(signal.SIGTERM)
    assert _loop(lambda step: False, signal_at=6) == ([4, 6], 6)  # 6 is not a save_every step: saved anyway
    assert _loop(lambda step: False, signal_at=8) == ([4, 8], 8)  # a save_every step: saved once
    assert signal.getsignal(signal.SIGTERM) is before  # the handler lives only while the loop runs


def test_the_loop_stops_at_orbax_sync_point_and_asks_it_every_step():
    asked = []

    def reached(step):
        asked.append(step)
        return step == 3

    assert _loop(reached) == ([3], 3)
    assert asked == [1, 2, 3]
    assert _loop(lambda step: False) == ([4, 8, 10], None)  # no notice: the usual saves, to the end
