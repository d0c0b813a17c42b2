"""Load and save Hugging Face checkpoint folders (config.json + *.safetensors) without torch.

`from_pretrained` builds the model abstractly (no random weights are materialized), reads each tensor
from memory-mapped safetensors files, converts it to our layout ([in, out] kernels, GPT-NeoX's fused
per-head qkv split into q/k/v, layers stacked for scan) and places it with its target sharding when a
mesh is given, so a host only reads the slices its devices hold. `save_pretrained` writes the inverse,
loadable by transformers' PyTorch `from_pretrained`.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from inform_jax.hub import resolve_path
from inform_jax.models.config import DecoderConfig
from inform_jax.models.decoder import CausalLM
from inform_jax.models.families.rules import Rules
from inform_jax.models.safetensors_io import open_tensors, save_file
from inform_jax.models.sharding import DEFAULT_RULES, to_host, variable_sharding

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint folder is missing a tensor, has a mis-shaped one, or cannot be read."""


def layer_rules(config: DecoderConfig) -> Rules:
    """(our path inside a Block, rule) pairs of the config's family; HF names use {prefix} and {i}."""
    return config.family_module.layer_rules(config)


def top_rules(config: DecoderConfig, lm_head: bool) -> Rules:
    """(our path, rule) pairs of the embedding, final norm and LM head of the config's family."""
    return config.family_module.top_rules(config, lm_head)


# ---------------------------------------------------------------------------------------------- loading


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def index_shards(path: str) -> list[str]:
    """The shard files the folder's index names, each checked to lie inside the folder: an index is text anyone
    can write, and an absolute path, a ``..`` or a symlink out of the folder would have us read any file on the
    machine. One exception: a Hugging Face cache snapshot (``.../snapshots/<revision>``), whose files are symlinks
    to the cache's own ``../../blobs``."""
    index = os.path.join(path, INDEX_FILE)
    try:
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        entries = {file: tensor for tensor, file in weight_map.items()}  # file -> one tensor stored in it
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{index}: not a safetensors index with a weight_map ({err})") from None
    root = os.path.realpath(path)
    allowed = [root]
    if os.path.basename(os.path.dirname(root)) == "snapshots":
        allowed.append(os.path.join(os.path.dirname(os.path.dirname(root)), "blobs"))
    for file, tensor in entries.items():
        where = f"{index}: weight_map entry {tensor!r}: {file!r}"
        if not isinstance(file, str) or not file:
            raise CheckpointError(f"{where} is not a file name")
        if os.path.isabs(file) or ".." in file.replace("\\", "/").split("/"):
            raise CheckpointError(f"{where} is not a path inside the model folder")
        target = os.path.realpath(os.path.join(path, file))
        if not any(_inside(target, folder) for folder in allowed):
            raise CheckpointError(f"{where} resolves to {target}, outside the model folder")
    return sorted(entries)


def open_checkpoint(path: str) -> dict[str, np.ndarray]:
    """All tensors of a folder (single file or sharded with an index), memory-mapped."""
    if os.path.exists(os.path.join(path, INDEX_FILE)):
        files = index_shards(path)
    elif os.path.exists(os.path.join(path, SINGLE_FILE)):
        files = [SINGLE_FILE]
    else:
        found = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not found:
            raise CheckpointError(f"{path}: no {SINGLE_FILE}, {INDEX_FILE} or *.safetensors file")
        files = found
    tensors: dict[str, np.ndarray] = {}
    for name in files:
        tensors.update(open_tensors(os.path.join(path, name)))
    return tensors


def _detect_prefix(config: DecoderConfig, names) -> str:
    """The family's base-model prefix ('model.', 'gpt_neox.') for *ForCausalLM (and *ForSequenceClassification)
    checkpoints, '' for bare models."""
    embed = config.family_module.EMBED_TENSOR
    for prefix in (config.family_module.HF_PREFIX, ""):
        if prefix + embed in names:
            return prefix
    raise CheckpointError(f"no embedding tensor (*{embed}) found; tensors start with {sorted(names)[:5]}")


def _lookup(tensors, name, folder):
    if name in tensors:
        return tensors[name]
    if name == "embed_out.weight" and "lm_head.weight" in tensors:  # GPT-NeoX saved by newer code
        return tensors["lm_head.weight"]
    raise CheckpointError(f"{folder}: missing tensor {name!r}")


def _param_sources(config: DecoderConfig, tensors, folder, lm_head: bool):
    """{our flat path: (layer -> numpy array) or array} describing where each parameter comes from."""
    prefix = _detect_prefix(config, tensors)
    sources = {}
    for path, rule in top_rules(config, lm_head):
        arrays = [_lookup(tensors, n.format(prefix=prefix), folder) for n in rule.hf_names]
        sources[path + rule.path] = rule.load(*arrays)
    for path, rule in layer_rules(config):

        def per_layer(i, rule=rule):
            return rule.load(*[_lookup(tensors, n.format(prefix=prefix, i=i), folder) for n in rule.hf_names])

        if config.scan_layers:
            sources[("layers", *path, *rule.path)] = per_layer
        else:
            for i in range(config.num_layers):
                sources[("layers", i, *path, *rule.path)] = per_layer(i)
    return sources


def _place(source, var_shape, dtype, sharding, name, num_layers):
    """A jax.Array of `var_shape` read from `source` (an array, or a layer -> array function)."""
    if callable(source):
        first = source(0)
        if (num_layers, *first.shape) != tuple(var_shape):
            raise CheckpointError(f"tensor for {name}: expected shape {var_shape}, found {(num_layers, *first.shape)}")

        def read(index):
            layers = range(num_layers)[index[0]]
            return np.stack([np.asarray(source(i)[index[1:]], dtype=dtype) for i in layers])

    else:
        if tuple(source.shape) != tuple(var_shape):
            raise CheckpointError(f"tensor for {name}: expected shape {var_shape}, found {tuple(source.shape)}")

        def read(index):
            return np.asarray(source[index], dtype=dtype)

    if sharding is None:
        full = tuple(slice(None) for _ in var_shape)
        return jnp.asarray(read(full))
    return jax.make_array_from_callback(tuple(var_shape), sharding, read)


def config_from_pretrained(path: str, **runtime) -> DecoderConfig:
    """Our DecoderConfig from a folder's config.json (via transformers' AutoConfig); ``path`` may be a Hub id
    (:func:`inform_jax.hub.resolve_path`)."""
    import transformers

    path = resolve_path(path, what="model folder")
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: not a folder")
    hf_config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    return DecoderConfig.from_hf(hf_config, **runtime)


def from_pretrained(
    path: str,
    *,
    dtype=jnp.float32,
    param_dtype=None,
    mesh: Mesh | None = None,
    rules=DEFAULT_RULES,
    lm_head: bool = True,
    **runtime,
) -> CausalLM:
    """Load a Hugging Face folder into a `CausalLM`; ``path`` may be a Hub id ``org/name[@revision]``, read from
    its local snapshot folder (:func:`inform_jax.hub.resolve_path`).

    dtype: compute dtype; param_dtype: storage dtype (defaults to dtype). With `mesh`, every parameter is
    created directly with its NamedSharding from its logical axes. `runtime` sets other DecoderConfig
    runtime fields (scan_layers, remat, attention_impl). lm_head=False loads the backbone only (reward
    models). Unknown extra tensors (e.g. a classifier `score.weight`) are ignored.
    """
    path = resolve_path(path, what="model folder")
    config = config_from_pretrained(
        path, dtype=dtype, param_dtype=param_dtype if param_dtype is not None else dtype, **runtime
    )
    tensors = open_checkpoint(path)
    abstract = nnx.eval_shape(lambda: CausalLM(config, rngs=nnx.Rngs(0), lm_head=lm_head))
    graphdef, state = nnx.split(abstract)
    sources = _param_sources(config, tensors, path, lm_head)
    flat = dict(nnx.to_flat_state(state))
    missing = set(flat) - set(sources)
    if missing:
        raise CheckpointError(f"{path}: no rule loads parameters {sorted(missing)}")
    np_dtype = np.dtype(jnp.dtype(config.param_dtype))
    for key, var in flat.items():
        sharding = variable_sharding(var, mesh, rules) if mesh is not None else None
        name = "/".join(map(str, key))
        value = _place(sources[key], var.shape, np_dtype, sharding, name, config.num_layers)
        var.set_value(value) if hasattr(var, "set_value") else setattr(var, "value", value)
    return nnx.merge(graphdef, state)


# ---------------------------------------------------------------------------------------------- saving


def hf_state_dict(model: CausalLM) -> dict[str, np.ndarray]:
    """Our parameters as Hugging Face *ForCausalLM tensors (host NumPy arrays)."""
    config = model.config
    flat = {k: to_host(v[...]) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    prefix = config.family_module.HF_PREFIX
    out = {}
    for path, rule in top_rules(config, model.lm_head is not None):
        (out[rule.hf_names[0].format(prefix=prefix)],) = rule.save(flat[path + rule.path])
    for i in range(config.num_layers):

        def get(path, i=i):
            return flat[("layers", *path)][i] if config.scan_layers else flat[("layers", i, *path)]

        fused: dict[str, tuple] = {}
        for path, rule in layer_rules(config):
            name = rule.hf_names[0].format(prefix=prefix, i=i)
            if rule.save is None:  # one HF tensor made of several of ours (GPT-NeoX q/k/v): fused below
                fuse, parts = fused.get(name, (rule.fuse, []))
                fused[name] = (fuse, [*parts, get(path + rule.path)])
                continue
            (out[name],) = rule.save(get(path + rule.path))
        for name, (fuse, parts) in fused.items():
            out[name] = fuse(config, *parts)
    return out


def save_pretrained(
    model: CausalLM,
    path: str,
    *,
    max_shard_bytes: int = 5 * 2**30,
    architecture: str | None = None,
    extra_tensors: dict[str, np.ndarray] | None = None,
    config_updates: dict | None = None,
) -> None:
    """Write config.json and safetensors (sharded with an index above `max_shard_bytes`).

    architecture: config.json's class name (default the family's *ForCausalLM); extra_tensors: more tensors
    by their HF names (a classifier's `score.weight`); config_updates: attributes set on the HF config
    (`num_labels`, `pad_token_id`). The three let `hf_export` write a *ForSequenceClassification folder.
    """
    tensors = hf_state_dict(model) | dict(extra_tensors or {})
    if jax.process_index() != 0:
        return
    os.makedirs(path, exist_ok=True)
    hf_config = model.config.to_hf()
    hf_config.architectures = [architecture or model.config.family_module.CAUSAL_LM_CLASSES[model.config.model_type]]
    hf_config.dtype = str(jnp.dtype(model.config.param_dtype))
    for key, value in (config_updates or {}).items():
        setattr(hf_config, key, value)
    hf_config.save_pretrained(path)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], os.path.join(path, SINGLE_FILE))
        return
    weight_map = {}
    for n, shard in enumerate(shards):
        file = f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(path, file))
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(t.nbytes for t in tensors.values())
    with open(os.path.join(path, INDEX_FILE), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def checkpoint_digest(path: str) -> str:
    """A sha256 digest of a checkpoint folder's weights and config (every ``*.safetensors`` file and config.json,
    read in full): a cache keyed on it is never reused for another model, even one sharing some tensors."""
    import hashlib

    path = resolve_path(path, what="model folder")  # a Hub id: its snapshot (same bytes, same digest)
    digest = hashlib.sha256()
    names = sorted(f for f in os.listdir(path) if f.endswith(".safetensors") or f == "config.json")
    if not any(n.endswith(".safetensors") for n in names):
        raise CheckpointError(f"{path}: no *.safetensors file to digest")
    for name in names:
        digest.update(name.encode())
        with open(os.path.join(path, name), "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()
