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
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from inform_jax.models.config import DecoderConfig
from inform_jax.models.decoder import CausalLM
from inform_jax.models.safetensors_io import open_tensors, save_file
from inform_jax.models.sharding import DEFAULT_RULES, variable_sharding

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint folder is missing a tensor, has a mis-shaped one, or cannot be read."""


@dataclass(frozen=True)
class TensorRule:
    """How one of our parameters is read from (and written to) Hugging Face tensors.

    `hf_names` are the HF tensor names (a format string with {prefix} and {i} for the layer);
    `load` maps the HF arrays of one layer to our array; `save` maps our array back to HF arrays.
    """

    path: tuple[str, ...]
    hf_names: tuple[str, ...]
    load: Callable[..., np.ndarray]
    save: Callable[[np.ndarray], tuple[np.ndarray, ...]]


def _linear(name):
    return TensorRule(("kernel",), (name,), lambda w: w.T, lambda k: (k.T,))


def _vector(name):
    return TensorRule((), (name,), lambda b: b, lambda b: (b,))


def _neox_qkv_rules(config: DecoderConfig, base: str) -> list[tuple[tuple[str, ...], TensorRule]]:
    """GPT-NeoX's fused query_key_value is laid out per head as [H, (q, k, v), head_dim] on the output axis."""
    h, hd, d = config.num_heads, config.resolved_head_dim, config.hidden_size
    rules = []
    for j, proj in enumerate(("q", "k", "v")):

        def load_w(w, j=j):
            return w.reshape(h, 3, hd, d)[:, j].reshape(h * hd, d).T

        def load_b(b, j=j):
            return b.reshape(h, 3, hd)[:, j].reshape(h * hd)

        rules.append(((proj,), TensorRule(("kernel",), (f"{base}.query_key_value.weight",), load_w, None)))
        if config.qkv_bias:
            rules.append(((proj,), TensorRule(("bias",), (f"{base}.query_key_value.bias",), load_b, None)))
    return rules


def layer_rules(config: DecoderConfig) -> list[tuple[tuple[str, ...], TensorRule]]:
    """(our path inside a Block, rule) pairs; HF names use {prefix} and {i}."""
    rules: list[tuple[tuple[str, ...], TensorRule]] = []

    def linear(path, hf, bias):
        rules.append((path, _linear(hf + ".weight")))
        if bias:
            rules.append((path, TensorRule(("bias",), (hf + ".bias",), lambda b: b, lambda b: (b,))))

    if config.family == "gpt_neox":
        base = "{prefix}layers.{i}"
        for ours, theirs in (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")):
            rules.append(((ours, "scale"), _vector(f"{base}.{theirs}.weight")))
            rules.append(((ours, "bias"), _vector(f"{base}.{theirs}.bias")))
        rules += [(("attn", *p), r) for p, r in _neox_qkv_rules(config, f"{base}.attention")]
        linear(("attn", "o"), f"{base}.attention.dense", config.o_bias)
        linear(("mlp", "up"), f"{base}.mlp.dense_h_to_4h", True)
        linear(("mlp", "down"), f"{base}.mlp.dense_4h_to_h", True)
        return rules
    base = "{prefix}layers.{i}"
    rules.append((("attn_norm", "scale"), _vector(f"{base}.input_layernorm.weight")))
    rules.append((("mlp_norm", "scale"), _vector(f"{base}.post_attention_layernorm.weight")))
    for proj in ("q", "k", "v"):
        linear(("attn", proj), f"{base}.self_attn.{proj}_proj", config.qkv_bias)
    linear(("attn", "o"), f"{base}.self_attn.o_proj", config.o_bias)
    for proj in ("gate", "up", "down"):
        linear(("mlp", proj), f"{base}.mlp.{proj}_proj", config.mlp_bias)
    return rules


def top_rules(config: DecoderConfig, lm_head: bool) -> list[tuple[tuple[str, ...], TensorRule]]:
    if config.family == "gpt_neox":
        rules = [
            (("embed", "embedding"), _vector("{prefix}embed_in.weight")),
            (("final_norm", "scale"), _vector("{prefix}final_layer_norm.weight")),
            (("final_norm", "bias"), _vector("{prefix}final_layer_norm.bias")),
        ]
        head = "embed_out.weight"
    else:
        rules = [
            (("embed", "embedding"), _vector("{prefix}embed_tokens.weight")),
            (("final_norm", "scale"), _vector("{prefix}norm.weight")),
        ]
        head = "lm_head.weight"
    if lm_head and not config.tie_word_embeddings:
        rules.append((("lm_head",), _linear(head)))
    return rules


# ---------------------------------------------------------------------------------------------- loading


def open_checkpoint(path: str) -> dict[str, np.ndarray]:
    """All tensors of a folder (single file or sharded with an index), memory-mapped."""
    index = os.path.join(path, INDEX_FILE)
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
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
    """'model.' / 'gpt_neox.' for *ForCausalLM (and *ForSequenceClassification) checkpoints, '' for bare models."""
    embed = "embed_in.weight" if config.family == "gpt_neox" else "embed_tokens.weight"
    for prefix in ("model.", "gpt_neox.", ""):
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
    """Our DecoderConfig from a local folder's config.json (via transformers' AutoConfig)."""
    import transformers

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
    """Load a local Hugging Face folder into a `CausalLM`.

    dtype: compute dtype; param_dtype: storage dtype (defaults to dtype). With `mesh`, every parameter is
    created directly with its NamedSharding from its logical axes. `runtime` sets other DecoderConfig
    runtime fields (scan_layers, remat, attention_impl). lm_head=False loads the backbone only (reward
    models). Unknown extra tensors (e.g. a classifier `score.weight`) are ignored.
    """
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


def _to_host(x) -> np.ndarray:
    if not x.is_fully_addressable:  # multi-host: every process gathers, process 0 writes
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))


def _fuse_neox_qkv(config, q, k, v):
    """Inverse of the per-head split: ([D, H*hd] kernels or [H*hd] biases) -> HF fused layout."""
    h, hd = config.num_heads, config.resolved_head_dim
    if q.ndim == 2:
        d = q.shape[0]
        parts = [p.T.reshape(h, 1, hd, d) for p in (q, k, v)]
        return np.concatenate(parts, axis=1).reshape(3 * h * hd, d)
    parts = [p.reshape(h, 1, hd) for p in (q, k, v)]
    return np.concatenate(parts, axis=1).reshape(3 * h * hd)


def hf_state_dict(model: CausalLM) -> dict[str, np.ndarray]:
    """Our parameters as Hugging Face *ForCausalLM tensors (host NumPy arrays)."""
    config = model.config
    flat = {k: _to_host(v[...]) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    prefix = "gpt_neox." if config.family == "gpt_neox" else "model."
    out = {}
    for path, rule in top_rules(config, model.lm_head is not None):
        (out[rule.hf_names[0].format(prefix=prefix)],) = rule.save(flat[path + rule.path])
    for i in range(config.num_layers):

        def get(path, i=i):
            return flat[("layers", *path)][i] if config.scan_layers else flat[("layers", i, *path)]

        fused: dict[str, list] = {}
        for path, rule in layer_rules(config):
            name = rule.hf_names[0].format(prefix=prefix, i=i)
            if rule.save is None:  # GPT-NeoX q/k/v, fused below
                fused.setdefault(name, []).append(get(path + rule.path))
                continue
            (out[name],) = rule.save(get(path + rule.path))
        for name, (q, k, v) in fused.items():
            out[name] = _fuse_neox_qkv(config, q, k, v)
    return out


def save_pretrained(model: CausalLM, path: str, *, max_shard_bytes: int = 5 * 2**30) -> None:
    """Write config.json and safetensors (sharded with an index above `max_shard_bytes`)."""
    tensors = hf_state_dict(model)
    if jax.process_index() != 0:
        return
    os.makedirs(path, exist_ok=True)
    hf_config = model.config.to_hf()
    family_class = {
        "gpt_neox": "GPTNeoXForCausalLM",
        "llama": "LlamaForCausalLM",
        "mistral": "MistralForCausalLM",
    }
    hf_config.architectures = [family_class.get(model.config.model_type, "Qwen2ForCausalLM")]
    hf_config.dtype = str(jnp.dtype(model.config.param_dtype))
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
