"""AdamW with linear warmup and cosine decay to a floor, and global-norm gradient clipping."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def warmup_cosine(lr: float, total_steps: int, warmup_ratio: float, min_lr_ratio: float) -> optax.Schedule:
    warmup = int(round(warmup_ratio * total_steps))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=lr,
        warmup_steps=max(warmup, 1) if warmup_ratio > 0 else 0,
        decay_steps=max(total_steps, 1),
        end_value=lr * min_lr_ratio,
    )


def adamw(section, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`section`: an OptimSection (lr, warmup_ratio, min_lr_ratio, b1, b2, eps, weight_decay, grad_clip,
    moments_dtype)."""
    schedule = warmup_cosine(section.lr, total_steps, section.warmup_ratio, section.min_lr_ratio)
    parts = [optax.clip_by_global_norm(section.grad_clip)] if section.grad_clip else []
    moments = jnp.dtype(getattr(section, "moments_dtype", "float32"))
    if moments == jnp.float32:
        parts.append(
            optax.adamw(schedule, b1=section.b1, b2=section.b2, eps=section.eps, weight_decay=section.weight_decay)
        )
    else:  # optax.adamw's chain, with Adam's state stored in `moments`
        parts += [
            stored_in(optax.scale_by_adam(b1=section.b1, b2=section.b2, eps=section.eps), moments),
            optax.add_decayed_weights(section.weight_decay),
            optax.scale_by_learning_rate(schedule),
        ]
    return optax.chain(*parts), schedule


def stored_in(inner: optax.GradientTransformation, dtype) -> optax.GradientTransformation:
    """`inner` with its floating-point state kept in `dtype` between steps and computed in float32.

    Adam's two moments are 8 of the 16 bytes per parameter that fp32 weights and AdamW hold (before gradients);
    bf16 moments free 4 of them. Each update reads the moments as float32, so only their storage is rounded
    (relative 2^-8 for bf16); the update itself and the parameters stay float32.
    """

    def cast(tree, to):
        return jax.tree.map(lambda x: x.astype(to) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    def init(params):
        return cast(inner.init(params), dtype)

    def update(updates, state, params=None):
        updates, state = inner.update(updates, cast(state, jnp.float32), params)
        return updates, cast(state, dtype)

    return optax.GradientTransformation(init, update)
