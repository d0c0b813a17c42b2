"""Device meshes and logical-axis sharding rules for parameters and batches.

Parameters carry logical axis names (`logical_axes` metadata: "vocab", "embed", "heads", "kv_heads",
"mlp", "norm", "layers"). Rules map them to mesh axes ("data", "fsdp", "tensor"). A mesh axis that
does not divide a dimension is dropped for that parameter (it stays replicated along it), so tiny test
models and odd vocabularies still place on any mesh.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# FSDP shards the model width; tensor parallelism (when the "tensor" axis is > 1) shards heads and MLP.
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("layers", None),
    ("norm", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
)

# Batches are split over every data-like axis (FSDP is data parallel for activations).
BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices=None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh; one size may be -1 to take the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError("at most one mesh axis size may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not split into mesh sizes {sizes}")
        sizes[sizes.index(-1)] = len(devices) // known
    needed = int(np.prod(sizes))
    if needed > len(devices):
        raise ValueError(
            f"mesh sizes {dict(zip(MESH_AXES, sizes, strict=True))} need {needed} devices, {len(devices)} available"
        )
    if needed < len(devices):
        if jax.process_count() > 1:  # a mesh without some hosts' devices leaves those hosts nothing to run
            raise ValueError(
                f"mesh sizes {dict(zip(MESH_AXES, sizes, strict=True))} use {needed} of the {len(devices)} devices "
                f"of {jax.process_count()} processes; on many hosts the mesh must span every device (use -1)"
            )
        # allowed on one host (e.g. a one-device debug run) but worth knowing
        logging.getLogger(__name__).warning("mesh uses %d of %d devices", needed, len(devices))
        devices = devices[:needed]
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def logical_to_spec(axes, shape, mesh: Mesh, rules=DEFAULT_RULES) -> PartitionSpec:
    """PartitionSpec for an array with logical `axes`, dropping mesh axes that don't divide a dim."""
    rule = dict(rules)
    used: set[str] = set()
    spec = []
    for name, dim in zip(axes, shape, strict=True):
        mesh_axis = rule.get(name)
        if mesh_axis is None or mesh_axis in used or mesh_axis not in mesh.shape:
            spec.append(None)
            continue
        size = mesh.shape[mesh_axis]
        if size == 1 or dim % size:
            spec.append(None)
            continue
        used.add(mesh_axis)
        spec.append(mesh_axis)
    return PartitionSpec(*spec)


def variable_sharding(var: nnx.Variable, mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
    axes = var.get_metadata().get("logical_axes")
    shape = var.shape
    if axes is None:
        return NamedSharding(mesh, PartitionSpec())
    return NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))


def state_shardings(state, mesh: Mesh, rules=DEFAULT_RULES):
    """A tree of NamedSharding matching an nnx State (Variables as leaves)."""
    return jax.tree.map(
        lambda v: (
            variable_sharding(v, mesh, rules) if isinstance(v, nnx.Variable) else NamedSharding(mesh, PartitionSpec())
        ),
        state,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )


def shard_module(module: nnx.Module, mesh: Mesh, rules=DEFAULT_RULES, *, copy: bool = False) -> nnx.Module:
    """Place every parameter of `module` on `mesh` by its logical axes (in place; returns the module).

    copy=True always makes new buffers, so that a jitted step that donates them cannot delete arrays
    another module still shares (e.g. one cloned from the same SFT model). (`device_put(..., may_alias=False)`
    is not enough: a replicated placement may keep the source buffer as one of its shards.)
    """
    graphdef, state = nnx.split(module)
    shardings = state_shardings(state, mesh, rules)
    values = jax.tree.map(
        lambda v, s: jax.device_put(jnp.array(v[...], copy=True) if copy else v[...], s),
        state,
        shardings,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    nnx.update(module, values)
    return module


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding for a batch array [B, ...]: B split over the data-like axes."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def constrain_batch(x: jax.Array) -> jax.Array:
    """Keep an activation [B, ...] split over the data-like axes of the mesh in context (`jax.set_mesh`).

    Why: under FSDP the embedding table and every weight are split along the model width, and without a
    constraint XLA may propagate that width split into the activations and gather the whole batch on every
    device instead of gathering each layer's weights (a 64-chip plan held all 128 sequences' MLP activations
    per chip). Outside a mesh, or when B does not divide over the axes, x is returned unchanged.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    axes = tuple(a for a in BATCH_AXES if mesh.shape.get(a, 1) > 1)
    size = int(np.prod([mesh.shape[a] for a in axes]))
    if not axes or x.shape[0] % size:
        return x
    return jax.lax.with_sharding_constraint(x, PartitionSpec(axes, *([None] * (x.ndim - 1))))


def data_parallelism(mesh: Mesh) -> int:
    """How many ways a batch's rows split over ``mesh`` (the product of its data-like axes): batch sizes must be
    multiples of it."""
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES if a in mesh.shape]))


def shard_rows(tree, mesh: Mesh, *, member_axis: bool = False):
    """Every NumPy array [B, ...] of ``tree`` (the same value on every process) as a global array on ``mesh`` with
    its rows split over the data-like axes (``member_axis``: arrays [K, B, ...], rows on the second axis).

    Each process transfers only the rows its own devices hold (``jax.make_array_from_callback``), so on many hosts
    no host copies the whole batch to its devices.
    """
    lead = (None, BATCH_AXES) if member_axis else (BATCH_AXES,)

    def put(x):
        x = np.asarray(x)
        sharding = NamedSharding(mesh, PartitionSpec(*lead, *([None] * (x.ndim - len(lead)))))
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def local_positions(mesh: Mesh, shape: tuple[int, ...], *, member_axis: bool = False, devices=None) -> np.ndarray:
    """Which rows of a batch of ``shape`` ([B], or [K, B] with ``member_axis``) :func:`shard_rows` places on
    ``devices`` (default: this process's devices of ``mesh``): a bool array of ``shape``, the rows this process
    must supply. The same on every process for a given device set; no collective."""
    lead = (None, BATCH_AXES) if member_axis else (BATCH_AXES,)
    placed = NamedSharding(mesh, PartitionSpec(*lead)).devices_indices_map(tuple(shape))
    if devices is None:
        devices = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    mine = np.zeros(shape, bool)
    for device in devices:
        mine[placed[device]] = True
    return mine


def model_mesh(module: nnx.Module) -> Mesh:
    """The mesh to run ``module`` on: the one its parameters are placed on. A module on one device of a single
    process keeps that device (a one-device mesh); on many processes, or with parameters on no mesh but several
    devices, it is placed (in place) over a mesh of every device first, since every host must take part."""
    leaves = jax.tree.leaves(nnx.state(module))
    sharding = leaves[0].sharding if leaves else None
    if isinstance(sharding, NamedSharding) and all(
        isinstance(x.sharding, NamedSharding) and x.sharding.mesh == sharding.mesh for x in leaves
    ):
        return sharding.mesh
    devices = {d for x in leaves for d in x.sharding.device_set}
    if jax.process_count() == 1 and len(devices) == 1:
        return Mesh(np.asarray(list(devices)).reshape(1, 1, 1), MESH_AXES)
    mesh = make_mesh()
    shard_module(module, mesh)
    return mesh


def to_host(x) -> np.ndarray:
    """A jax.Array's full value as NumPy on every process. On many hosts an array that spans devices of other
    processes is gathered (a collective: every process must call this), a replicated one is read locally."""
    if not x.is_fully_addressable and not x.is_fully_replicated:
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))


def replicated(x, mesh: Mesh) -> jax.Array:
    """``x`` (NumPy or a scalar, the same value on every process) as a global array replicated over ``mesh``:
    what a checkpoint can hold on many hosts, where a host-local array is refused."""
    return jax.device_put(np.asarray(x), NamedSharding(mesh, PartitionSpec()))
