"""Stacking copies of a module along a new leading parameter axis (scanned layers, ensemble members)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def stack_modules(modules: list[nnx.Module], axis_name: str) -> nnx.Module:
    """One module whose parameters carry a leading [len(modules)] axis with logical name `axis_name`.

    All modules must share one structure. Run it with `jax.lax.scan` or `jax.vmap` over `nnx.split`.
    """
    graphdef, _ = nnx.split(modules[0])
    states = [nnx.split(m)[1] for m in modules]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    module = nnx.merge(graphdef, stacked)
    for _, var in nnx.iter_graph(module):
        if isinstance(var, nnx.Variable) and "logical_axes" in var.get_metadata():
            var.set_metadata(logical_axes=(axis_name, *var.get_metadata()["logical_axes"]))
    return module


def unstack_module(module: nnx.Module, index: int | None = None, *, mean: bool = False) -> nnx.Module:
    """Member `index` of a stacked module, or the parameter average over members (`mean=True`, WARM)."""
    if (index is None) == (not mean):
        raise ValueError("give exactly one of index or mean=True")
    graphdef, state = nnx.split(module)
    picked = jax.tree.map(lambda x: jnp.mean(x, axis=0).astype(x.dtype) if mean else x[index], state)
    out = nnx.merge(graphdef, picked)
    for _, var in nnx.iter_graph(out):
        if isinstance(var, nnx.Variable) and "logical_axes" in var.get_metadata():
            var.set_metadata(logical_axes=var.get_metadata()["logical_axes"][1:])
    return out
