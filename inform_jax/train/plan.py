"""Ahead-of-time plans: compile the real train step for a TPU topology on any CPU machine, report memory.

    inform-jax plan --config experiments/rm/llama3-8b-hh.yaml --topology v5p:2x4x4

Needs libtpu (`pip install -e ".[tpu]"`) for the TPU compiler; no TPU is used. Nothing is allocated:
the model, optimizer state and batch are shapes with shardings, and `.lower().compile()` produces the
program XLA would run, whose `memory_analysis()` gives the bytes each device needs.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from inform_jax.models import CausalLM, make_mesh
from inform_jax.models.attention_backends import choose_backend
from inform_jax.models.sharding import BATCH_AXES, variable_sharding
from inform_jax.train.backbone import section_config
from inform_jax.train.config import RMTrainConfig
from inform_jax.train.optim import adamw
from inform_jax.train.ppo.config import PPOConfig
from inform_jax.train.ppo.trainer import Rollout, ValueModel, make_ppo_update, ppo_optimizers
from inform_jax.train.rm.step import make_train_step, optimizer_shardings
from inform_jax.train.rm.trainer import build_reward_model

# High-bandwidth memory per chip, GiB (public specifications).
HBM_GIB = {"v4": 32, "v5 lite": 16, "v5e": 16, "v5": 95, "v5p": 95, "v6 lite": 32, "v6e": 32}


def topology_devices(topology: str, *, per_core: bool = False):
    """Compile-only devices of a TPU topology such as "v5p:2x4x4", "v4:2x2x2" or "v5e:4x4" (needs libtpu).

    A v4 chip has two TensorCores sharing 32 GiB of HBM (https://cloud.google.com/tpu/docs/v4). A real v4 slice
    runs each chip as one "megacore" device that drives both cores: a v4-32 VM lists 4 devices per host, one per
    chip, each with core_on_chip=0 (`jax.local_devices()` on a v4-32, gist.github.com/yejingxin/
    7896608a1c23632bd463f4d0d1d818e6), and "On TPU v4, a JAX logical device is normally configured as a Megacore
    containing two physical TensorCores" (github.com/jax-ml/jax/discussions/36155). libtpu's topology description
    instead defaults to one device per core for v4 (16 devices for v4:2x2x2), so v4 topologies are described
    with `chip_config_name="megacore"` (as MaxText's ahead-of-time compiles do for v4: accelerator_to_spec_map.py),
    8 devices of 32 GiB for v4:2x2x2. per_core=True keeps libtpu's default, one device per core (the layout libtpu
    runs only when asked to, with --deepsea_chip_config_name=legacy). v5p is megacore by default, v5e and v6e
    have one core a chip.
    """
    from jax.experimental import topologies

    options = {"chip_config_name": "megacore"} if topology.lower().startswith("v4") and not per_core else {}
    try:
        return topologies.get_topology_desc(topology, "tpu", **options).devices
    except Exception as e:  # libtpu missing, held by another process, or a bad name: say which
        hint = "install the tpu extra: pip install -e '.[tpu]'"
        if "lockfile" in str(e):
            hint = "another process has libtpu loaded; when only planning, set ALLOW_MULTIPLE_LIBTPU_LOAD=1"
        raise RuntimeError(f"cannot describe TPU topology {topology!r} ({e}); {hint}") from e


def chip_hbm_bytes(device) -> int | None:
    kind = device.device_kind.lower().replace("tpu ", "")
    return HBM_GIB[kind] * 2**30 if kind in HBM_GIB else None


def device_hbm_bytes(devices) -> int | None:
    """HBM of one device: the chip's, shared by the devices on one chip (one device a chip for megacore v4 and v5p;
    two for v4 described per core)."""
    chip = chip_hbm_bytes(devices[0])
    if chip is None:
        return None
    coords = [tuple(d.coords) for d in devices if hasattr(d, "coords")]
    return chip // (len(coords) // len(set(coords)) if coords else 1)


def plan_rm_train_step(config: RMTrainConfig, devices, *, num_layers: int | None = None) -> dict:
    """Compile the RM train step for `devices` with the config's mesh; per-device memory in bytes and the
    attention backend the step runs ("attention": e.g. "splash" for `model.attention_impl=auto` on a TPU).

    num_layers: plan a shallower model of the same width (quicker to compile); the memory reported is that
    model's.
    """
    arch = section_config(config.model, preset_if_path_missing=True)
    if num_layers is not None:
        arch = arch.replace(num_layers=num_layers)
    section = dataclasses.replace(config.model, path=None, preset=None, config=_arch_fields(arch))
    planned = dataclasses.replace(config, model=section)
    mesh = make_mesh(**dataclasses.asdict(config.mesh), devices=devices)
    graphdef, params = abstract_sharded(lambda: build_reward_model(planned), mesh)
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    t = config.train
    tx, schedule = adamw(config.optim, max(t.max_steps or 1000, 1))
    opt_state, opt_shardings = abstract_optimizer_state(tx, params, mesh)
    step = make_train_step(planned, graphdef, tx, schedule, param_shardings, opt_shardings, right_padded=True)
    batch = abstract_batch(config, mesh)
    with jax.set_mesh(mesh):
        compiled = step.lower(params, opt_state, batch, jax.ShapeDtypeStruct((), jnp.int32)).compile()
    # One pass runs chosen and rejected rows together: 2 B / grad_accum rows (the backend does not depend on it).
    rows = 2 * t.batch_size // t.grad_accum
    attention = planned_attention(arch, devices, rows, config.data.max_length, right_padded=True)
    return {**memory_report(compiled, devices, mesh, arch.num_layers, params), "attention": attention}


def planned_attention(arch, devices, rows: int, length: int, *, right_padded: bool) -> str:
    """The self-attention backend `arch.attention_impl` resolves to on `devices` for [rows, length] batches:
    the same choice the model makes while the step is traced (`choose_backend`, at the devices' platform)."""
    q = (rows, length, arch.num_heads, arch.resolved_head_dim)
    k = (rows, length, arch.num_kv_heads, arch.resolved_head_dim)
    return choose_backend(
        arch.attention_impl, q, k, jnp.dtype(arch.dtype), windowed=any(w > 0 for w in arch.layer_windows),
        right_padded=right_padded, platform=devices[0].platform, device_kind=devices[0].device_kind,
    )  # fmt: skip


def abstract_sharded(build, mesh):
    """(graphdef, params) of the module `build()` makes, as shapes with their mesh shardings; nothing allocated."""
    graphdef, params = nnx.split(nnx.eval_shape(build))
    for _, var in nnx.to_flat_state(params):
        var.set_value(jax.ShapeDtypeStruct(var.shape, var.dtype, sharding=variable_sharding(var, mesh)))
    return graphdef, params


def abstract_optimizer_state(tx: optax.GradientTransformation, params, mesh):
    """(state shapes with shardings, shardings) of `tx.init(params)` for abstract sharded params."""
    shardings = optimizer_shardings(tx, params, jax.tree.map(lambda x: x.sharding, params), mesh)
    state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), jax.eval_shape(tx.init, params), shardings
    )
    return state, shardings


def memory_report(compiled, devices, mesh, num_layers: int, *param_trees) -> dict:
    """Per-device bytes of a compiled program (`memory_analysis`) against one device's HBM."""
    memory = compiled.memory_analysis()
    per_device = {
        "arguments": memory.argument_size_in_bytes,
        "outputs": memory.output_size_in_bytes,
        "aliased": memory.alias_size_in_bytes,
        "temporaries": memory.temp_size_in_bytes,
        "code": memory.generated_code_size_in_bytes,
    }
    total = per_device["arguments"] + per_device["outputs"] - per_device["aliased"] + per_device["temporaries"]
    hbm = device_hbm_bytes(devices)
    num_params = sum(x.size for x in jax.tree.leaves(param_trees))
    return {
        "devices": len(devices),
        "device_kind": devices[0].device_kind,
        "mesh": dict(mesh.shape),
        "num_layers": num_layers,
        "parameters": int(num_params),
        "per_device_bytes": per_device,
        "per_device_total_bytes": int(total),
        "hbm_bytes": hbm,
        "fits": None if hbm is None else bool(total <= hbm),
    }


def plan_ppo_update(
    config: PPOConfig, devices, *, minibatch: int, prompt_len: int, response_len: int, num_layers: int | None = None
) -> dict:
    """Compile one PPO minibatch update (actor with LM head + critic of the same architecture, both with Adam)
    for `devices` with the config's mesh; per-device memory in bytes.

    minibatch: rollouts M per update, each `prompt_len` + `response_len` tokens. The policy comes from
    `policy.preset` (or `policy.path`'s config.json); the critic is the SFT-initialised value model.
    """
    arch = section_config(config.policy, preset_if_path_missing=True)
    if num_layers is not None:
        arch = arch.replace(num_layers=num_layers)
    mesh = make_mesh(**dataclasses.asdict(config.mesh), devices=devices)
    actor_graph, actor = abstract_sharded(lambda: CausalLM(arch, rngs=nnx.Rngs(0)), mesh)
    critic_graph, critic = abstract_sharded(
        lambda: ValueModel(CausalLM(arch, rngs=nnx.Rngs(0), lm_head=False), rngs=nnx.Rngs(1)), mesh
    )
    actor_tx, critic_tx = ppo_optimizers(config)
    actor_opt, actor_opt_shardings = abstract_optimizer_state(actor_tx, actor, mesh)
    critic_opt, critic_opt_shardings = abstract_optimizer_state(critic_tx, critic, mesh)
    update = make_ppo_update(config, actor_graph, critic_graph, actor_tx, critic_tx)
    shardings = tuple(jax.tree.map(lambda x: x.sharding, tree) for tree in (actor, critic))
    step = jax.jit(
        update, donate_argnums=(0, 1, 2, 3), out_shardings=(*shardings, actor_opt_shardings, critic_opt_shardings, None)
    )
    rows = NamedSharding(mesh, PartitionSpec(BATCH_AXES, None))
    length = prompt_len + response_len
    tokens = jax.ShapeDtypeStruct((minibatch, length), jnp.int32, sharding=rows)
    actions = jax.ShapeDtypeStruct((minibatch, response_len), jnp.int32, sharding=rows)
    values = jax.ShapeDtypeStruct((minibatch, response_len), jnp.float32, sharding=rows)
    batch = Rollout(tokens, tokens, actions, values, values, values, values)
    with jax.set_mesh(mesh):
        compiled = step.lower(actor, critic, actor_opt, critic_opt, batch).compile()
    # Rollouts' prompts are left-padded: no right-padding promise.
    attention = planned_attention(arch, devices, minibatch, length, right_padded=False)
    return {**memory_report(compiled, devices, mesh, arch.num_layers, actor, critic), "attention": attention}


def _arch_fields(arch) -> dict:
    runtime = {"dtype", "param_dtype", "scan_layers", "remat", "attention_impl"}
    return {f.name: getattr(arch, f.name) for f in dataclasses.fields(arch) if f.name not in runtime}


def abstract_batch(config: RMTrainConfig, mesh) -> dict:
    """Shapes of one global batch: [B, T] ids and masks ([K, B, T] for WARM), sharded over the data axes."""
    b, t = config.train.batch_size, config.data.max_length
    lead = (config.loss.num_members,) if config.scheme == "warm" else ()
    spec = (None, BATCH_AXES) if lead else (BATCH_AXES,)

    def sds(shape, dtype):
        sharding = NamedSharding(mesh, PartitionSpec(*spec, *([None] * (len(shape) - len(spec)))))
        return jax.ShapeDtypeStruct(lead + shape, dtype, sharding=sharding)

    batch = {k: sds((b, t), jnp.int32) for k in ("chosen_input_ids", "chosen_attention_mask")}
    batch.update({k: sds((b, t), jnp.int32) for k in ("rejected_input_ids", "rejected_attention_mask")})
    batch["response_lengths"] = sds((b, 2), jnp.int32)
    batch["weights"] = sds((b,), jnp.float32)
    if config.loss.margin == "column":
        batch["margins"] = sds((b,), jnp.float32)
    return batch


def format_plan(plan: dict) -> str:
    gib = 2**30
    m = plan["per_device_bytes"]
    lines = [
        f"{plan['devices']} x {plan['device_kind']}, mesh {plan['mesh']}, {plan['num_layers']} layers, "
        f"{plan['parameters'] / 1e9:.2f}B parameters, attention {plan.get('attention', '?')}",
        f"per device: arguments {m['arguments'] / gib:.2f} GiB, outputs {m['outputs'] / gib:.2f} GiB "
        f"(aliased {m['aliased'] / gib:.2f}), temporaries {m['temporaries'] / gib:.2f} GiB",
        f"per device total {plan['per_device_total_bytes'] / gib:.2f} GiB"
        + ("" if plan["hbm_bytes"] is None else f" of {plan['hbm_bytes'] / gib:.0f} GiB HBM: "
           + ("fits" if plan["fits"] else "DOES NOT FIT")),
    ]  # fmt: skip
    return "\n".join(lines)
