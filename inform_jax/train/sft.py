"""Supervised fine-tuning of a CausalLM on (prompt, response) demonstrations: next-token loss on responses.

Small and single-purpose: the synthetic world's SFT policy, and reward-model backbones initialized from
it (as the papers' reward models start from the SFT model).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from inform_jax.models import CausalLM
from inform_jax.train.batches import batch_indices, take
from inform_jax.train.loop import LoopSettings, fit_loop


def response_nll(logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of the tokens marked in loss_mask. logits [B,T,V]; ids, mask [B,T]."""
    logprobs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    targets = input_ids[:, 1:]
    token_ll = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
    weights = loss_mask[:, 1:].astype(jnp.float32)
    return -jnp.sum(token_ll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def train_sft(
    model: CausalLM,
    arrays: dict[str, np.ndarray],
    *,
    steps: int,
    batch_size: int,
    lr: float = 1e-3,
    warmup_ratio: float = 0.05,
    seed: int = 0,
    log=None,
) -> list[float]:
    """Train `model` in place on `input_ids`, `attention_mask`, `loss_mask` [N, T]; returns per-step losses.

    Runs the trainers' fit loop (no checkpoints: the SFT policies here train in seconds); a non-finite loss at a
    logged step (every steps / 5) stops with TrainingDivergedError."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(int(warmup_ratio * steps), 1), steps, lr * 0.1)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=0.0))
    graphdef, params = nnx.split(model)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        def loss_fn(p):
            out = nnx.merge(graphdef, p)(batch["input_ids"], batch["attention_mask"])
            return response_nll(out.logits, batch["input_ids"], batch["loss_mask"])

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    n = len(arrays["input_ids"])
    losses = []
    state = {"params": params, "opt_state": opt_state}

    def one_step(s: int) -> dict:
        batch = take(arrays, batch_indices(n, batch_size, s, seed))
        state["params"], state["opt_state"], loss = step(state["params"], state["opt_state"], batch)
        losses.append(loss)
        return {"loss": loss}

    def report(done: int, metrics: dict) -> None:
        if log is not None and done % log_every == 0:
            log(f"sft step {done}/{steps}: loss {float(metrics['loss']):.4f}")

    log_every = max(steps // 5, 1)
    settings = LoopSettings(total=steps, log_every=log_every, save_every=None, progress=False, label="sft")
    fit_loop(settings, 0, one_step, after_log=report)
    nnx.update(model, state["params"])
    return [float(x) for x in jax.device_get(losses)]
