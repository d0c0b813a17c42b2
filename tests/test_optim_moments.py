"""optim.moments_dtype: Adam's moments stored in bfloat16, the update computed in float32."""

import jax
import jax.numpy as jnp
import optax
import pytest

from inform_jax.train.config import OptimSection, config_from_dict
from inform_jax.train.optim import adamw


def run(moments_dtype: str, steps: int = 20):
    section = OptimSection(lr=1e-2, warmup_ratio=0.0, weight_decay=0.01, moments_dtype=moments_dtype)
    tx, _ = adamw(section, total_steps=100)
    params = {"w": jax.random.normal(jax.random.key(0), (64, 32)), "b": jnp.zeros((32,))}
    target = jax.random.normal(jax.random.key(1), (64, 32))
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.sum((p["w"] - target) ** 2) + jnp.sum((p["b"] - 1.0) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params, state


def moment_dtypes(state):
    adam = next(s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
                if isinstance(s, optax.ScaleByAdamState))  # fmt: skip
    return {x.dtype for x in jax.tree.leaves((adam.mu, adam.nu))}, adam.count.dtype


def test_bfloat16_moments_are_stored_in_bfloat16_and_train_like_float32():
    full, full_state = run("float32")
    half, half_state = run("bfloat16")
    assert moment_dtypes(full_state) == ({jnp.dtype(jnp.float32)}, jnp.dtype(jnp.int32))
    assert moment_dtypes(half_state) == ({jnp.dtype(jnp.bfloat16)}, jnp.dtype(jnp.int32))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(half))  # parameters stay float32
    # 20 steps of lr 1e-2 move each weight by up to ~0.2; storing the moments in bf16 changes the result by a
    # small fraction of that (measured ~1e-3), not by the step size.
    moved = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(run("float32", 0)[0]), strict=True)
    )
    diff = max(
        float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(half), strict=True)
    )
    assert 0 < diff < 0.05 * moved


def test_moments_dtype_is_checked():
    assert config_from_dict({"optim": {"moments_dtype": "bfloat16"}}).optim.moments_dtype == "bfloat16"
    with pytest.raises(ValueError, match="moments_dtype"):
        config_from_dict({"optim": {"moments_dtype": "float16"}})
