"""The jitted reward-model train step (shared by the trainer and the ahead-of-time planner)."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from inform_jax.models.attention_backends import rows_padded_on_the_right
from inform_jax.train.rm.objective import objective


def optimizer_shardings(tx: optax.GradientTransformation, params, param_shardings, mesh):
    """Optimizer-state shardings: moments like their parameters, scalars (step counts) replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    abstract = jax.eval_shape(tx.init, params)
    return optax.tree_map_params(
        tx, lambda _, s: s, abstract, param_shardings, transform_non_params=lambda _: replicated
    )


def make_train_step(config, graphdef, tx, schedule, param_shardings, opt_shardings, *, right_padded: bool = False):
    """jit(step(params, opt_state, batch, step) -> (params, opt_state, metrics)), buffers donated.

    right_padded: every row of every batch has its tokens first (as `prepare_pairs` pads); attention may then
    take a kernel that reads padding as row lengths (cuDNN on GPU).

    The batch holds [B, ...] arrays ([K, B, ...] for WARM); with `train.grad_accum` = A > 1 it is split
    into A micro-batches whose gradients are averaged by a `lax.scan` (one optimizer update per step).
    The PRNG key for InfoRM's latent samples is derived from the seed and the step, so a resumed run
    draws the same samples.
    """
    accum, method = config.train.grad_accum, config.method_spec
    batch_axis = 1 if method.scheme == "warm" else 0
    base_key = jax.random.key(config.train.seed)

    def loss_fn(params, batch, key):
        with rows_padded_on_the_right() if right_padded else contextlib.nullcontext():
            return objective(nnx.merge(graphdef, params), batch, key, config.loss, method)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulated(params, batch, key):
        def split(x):  # [.., B, ..] -> [A, .., B / A, ..]; micro-batch i holds rows i, i + A, i + 2A, ...
            # Strided, not contiguous, rows: B is split over the devices in contiguous blocks, so each device
            # then holds its share of every micro-batch and no micro-batch waits on a few devices.
            shape = x.shape[:batch_axis] + (-1, accum) + x.shape[batch_axis + 1 :]
            return jnp.moveaxis(x.reshape(shape), batch_axis + 1, 0)

        micro = jax.tree.map(split, batch)

        def body(total, inputs):
            mb, i = inputs
            (loss, aux), grads = grad_fn(params, mb, jax.random.fold_in(key, i))
            return jax.tree.map(jnp.add, total, (loss, aux, grads)), None

        first = jax.tree.map(lambda x: x[0], micro)
        (loss_shape, aux_shape), grads_shape = jax.eval_shape(grad_fn, params, first, key)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss_shape, aux_shape, grads_shape))
        (loss, aux, grads), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(accum)))
        return jax.tree.map(lambda x: x / accum, (loss, aux, grads))

    def step_fn(params, opt_state, batch, step):
        key = jax.random.fold_in(base_key, step)
        if accum == 1:
            (loss, aux), grads = grad_fn(params, batch, key)
        else:
            loss, aux, grads = accumulated(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads), "lr": schedule(step)}
        return params, opt_state, metrics

    return jax.jit(step_fn, donate_argnums=(0, 1), out_shardings=(param_shardings, opt_shardings, None))
