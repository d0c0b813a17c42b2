"""Sharded placement on 8 simulated devices, remat/scan equivalence, safetensors I/O and load errors."""

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from flax import nnx
from hf_models import make_hf_checkpoint, random_batch, rel_err

from inform_jax.models import (
    CausalLM,
    CheckpointError,
    DecoderConfig,
    UnsupportedModelError,
    batch_sharding,
    from_pretrained,
    make_mesh,
    shard_module,
)
from inform_jax.models.safetensors_io import open_tensors, save_file
from inform_jax.models.sharding import logical_to_spec


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama") / "ckpt"
    make_hf_checkpoint("llama3-gqa", path, hidden=64, layers=2, heads=8)
    return path


def test_eight_devices_are_simulated():
    assert jax.device_count() == 8


@pytest.mark.parametrize("scan_layers", [False, True])
def test_fsdp_sharded_forward_equals_single_device(llama_path, scan_layers):
    single = from_pretrained(str(llama_path), scan_layers=scan_layers)
    mesh = make_mesh(data=2, fsdp=4)
    sharded = from_pretrained(str(llama_path), scan_layers=scan_layers, mesh=mesh)
    # Parameters really are split: the embedding's width is over the 4 FSDP devices.
    emb = sharded.embed.embedding[...]
    assert emb.sharding.spec[1] == "fsdp"
    assert emb.addressable_shards[0].data.shape == (emb.shape[0], emb.shape[1] // 4)
    ids, mask = random_batch(np.random.default_rng(0), batch=8, length=16)
    expected = single(jnp.asarray(ids), jnp.asarray(mask), output_hidden_states=True)

    @nnx.jit
    def forward(model, ids, mask):
        return model(ids, mask, output_hidden_states=True)

    with jax.set_mesh(mesh):
        ids_s = jax.device_put(jnp.asarray(ids), batch_sharding(mesh))
        mask_s = jax.device_put(jnp.asarray(mask), batch_sharding(mesh))
        got = forward(sharded, ids_s, mask_s)
    assert rel_err(got.logits, expected.logits, mask) < 1e-5
    for a, b in zip(got.hidden_states, expected.hidden_states, strict=True):
        assert rel_err(a, b, mask) < 1e-5


def test_shard_module_places_a_random_model_by_logical_axes():
    config = DecoderConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
    )
    model = CausalLM(config, rngs=nnx.Rngs(0))
    ids = jnp.arange(24).reshape(2, 12) % 64
    before = model(ids).logits
    mesh = make_mesh(fsdp=4, tensor=2)
    shard_module(model, mesh)
    assert model.layers[0].mlp.up.kernel[...].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    after = nnx.jit(lambda m, x: m(x).logits)(model, ids)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)


def test_logical_to_spec_drops_axes_that_do_not_divide():
    mesh = make_mesh(fsdp=8)
    assert logical_to_spec(("vocab", "embed"), (97, 64), mesh) == jax.sharding.PartitionSpec(None, "fsdp")
    assert logical_to_spec(("vocab", "embed"), (97, 60), mesh) == jax.sharding.PartitionSpec(None, None)
    with pytest.raises(ValueError, match="devices"):
        make_mesh(data=3, fsdp=-1)
    with pytest.raises(ValueError, match="need 16 devices, 8 available"):
        make_mesh(data=2, fsdp=8)
    assert make_mesh(data=1, fsdp=2).devices.size == 2


@pytest.mark.parametrize("remat", [True, "dots"])
def test_remat_and_scan_give_the_same_loss_and_gradients(remat):
    base = DecoderConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2)
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 50, (2, 10)))

    def loss_and_grad(config):
        model = CausalLM(config, rngs=nnx.Rngs(3))

        def loss(m):
            logits = m(ids).logits
            return -jnp.mean(jax.nn.log_softmax(logits[:, :-1]) * jax.nn.one_hot(ids[:, 1:], 50)) * 50

        value, grads = nnx.value_and_grad(loss)(model)
        embed_grad = grads.embed.embedding[...]
        q_grad = grads.layers.attn.q.kernel[...][1] if config.scan_layers else grads.layers[1].attn.q.kernel[...]
        return value, embed_grad, q_grad

    reference = loss_and_grad(base)
    for config in (
        base.replace(remat=remat),
        base.replace(scan_layers=True),
        base.replace(scan_layers=True, remat=remat),
    ):
        got = loss_and_grad(config)
        for a, b in zip(got, reference, strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)


def test_safetensors_reader_matches_the_reference_library(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a": rng.normal(size=(3, 5)).astype(np.float32), "b": rng.integers(0, 9, (4,)).astype(np.int64)}
    safetensors.numpy.save_file(tensors, str(tmp_path / "ref.safetensors"))
    ours = open_tensors(str(tmp_path / "ref.safetensors"))
    for k, v in tensors.items():
        np.testing.assert_array_equal(ours[k], v)
    # bf16 written by the reference torch writer is read bit-exactly.
    bf = torch.randn(6, 7).to(torch.bfloat16)
    safetensors.torch.save_file({"w": bf}, str(tmp_path / "bf.safetensors"))
    read = open_tensors(str(tmp_path / "bf.safetensors"))["w"]
    assert read.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(read.astype(np.float32), bf.float().numpy())
    # Our writer's files load in the reference library (bf16 through torch).
    save_file({"w": read, "a": tensors["a"]}, str(tmp_path / "ours.safetensors"))
    back = safetensors.torch.load_file(str(tmp_path / "ours.safetensors"))
    torch.testing.assert_close(back["w"], bf)
    np.testing.assert_array_equal(back["a"].numpy(), tensors["a"])


def test_bf16_checkpoint_loads_into_bf16_params(tmp_path, llama_path):
    ours = from_pretrained(str(llama_path), dtype=jnp.bfloat16)
    assert ours.layers[0].attn.q.kernel[...].dtype == jnp.bfloat16
    mixed = from_pretrained(str(llama_path), dtype=jnp.bfloat16, param_dtype=jnp.float32)
    assert mixed.layers[0].attn.q.kernel[...].dtype == jnp.float32


def test_unsupported_architecture_is_named(tmp_path):
    import transformers

    transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=10).save_pretrained(str(tmp_path))
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        from_pretrained(str(tmp_path))


def test_missing_and_misshaped_tensors_are_named(tmp_path, llama_path):
    tensors = {k: np.asarray(v) for k, v in open_tensors(str(llama_path / "model.safetensors")).items()}
    config = json.loads((llama_path / "config.json").read_text())
    broken = tmp_path / "missing"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps(config))
    save_file(
        {k: v for k, v in tensors.items() if k != "model.layers.1.mlp.up_proj.weight"},
        str(broken / "model.safetensors"),
    )
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        from_pretrained(str(broken))
    misshaped = tmp_path / "misshaped"
    misshaped.mkdir()
    (misshaped / "config.json").write_text(json.dumps(config))
    bad = dict(tensors)
    bad["model.layers.0.self_attn.o_proj.weight"] = bad["model.layers.0.self_attn.o_proj.weight"][:, :-1]
    save_file(bad, str(misshaped / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"attn/o/kernel.*expected shape"):
        from_pretrained(str(misshaped))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.json").write_text(json.dumps(config))
        from_pretrained(str(tmp_path / "empty"))


def test_batch_plan_sizes():
    from inform_jax.models.batched import batch_plan

    assert batch_plan(320, 256) == (2, 160)  # equal batches, not 256 + 64
    assert batch_plan(5, 32, multiple=8) == (1, 8)  # rounded up to the data parallelism
    assert batch_plan(33, 32, exact=True) == (2, 32)
    with pytest.raises(ValueError, match="no rows"):
        batch_plan(0, 8)


def test_map_batches_over_a_mesh_equals_one_device_row_by_row():
    """A model placed on a 2 x 4 mesh scores 13 rows (batches of 8: one row of the second batch is a wrapped copy)
    as the same model on one device scores each row alone; shard_rows splits the rows as the mesh says."""
    from inform_jax.models.batched import map_batches
    from inform_jax.models.sharding import model_mesh, shard_rows

    config = DecoderConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                           num_kv_heads=2)  # fmt: skip
    model = CausalLM(config, rngs=nnx.Rngs(3))
    ids, mask = random_batch(np.random.default_rng(11), batch=13, length=10)
    ids = ids % 64
    assert model_mesh(model).devices.size == 1  # on one device it stays there
    expected = np.stack([np.asarray(model(jnp.asarray(ids[i : i + 1]), jnp.asarray(mask[i : i + 1])).logits[0])
                         for i in range(13)])  # fmt: skip
    mesh = make_mesh(data=2, fsdp=4)
    shard_module(model, mesh)
    assert model_mesh(model) == mesh
    placed = shard_rows({"ids": ids[:8]}, mesh)["ids"]
    assert placed.sharding.spec[0] == ("data", "fsdp") and placed.addressable_shards[0].data.shape == (1, 10)
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, b: nnx.merge(graphdef, s)(b["ids"], b["mask"]).logits)
    got = map_batches(lambda b, _: forward(state, b), {"ids": ids, "mask": mask}, batch_size=8, mesh=mesh)
    assert got.shape == (13, 10, 64)
    assert rel_err(got, expected, mask) < 1e-5


def test_index_entries_outside_the_model_folder_are_refused(tmp_path, llama_path):
    """A sharded folder whose index names a file by an absolute path, through `..`, or through a symlink out of
    the folder is refused naming the index and the entry; the same shards inside the folder (or behind a Hugging
    Face cache snapshot's links to its blobs) load."""
    tensors = {k: np.asarray(v) for k, v in open_tensors(str(llama_path / "model.safetensors")).items()}
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2 :]}  # fmt: skip
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for file, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, str(outside / file))

    def folder(name, second_shard, link=False):
        path = tmp_path / name
        path.mkdir(parents=True)
        (path / "config.json").write_text((llama_path / "config.json").read_text())
        first = "model-00001-of-00002.safetensors"
        (path / first).write_bytes((outside / first).read_bytes())
        if link:  # the second shard is a symlink in the folder
            (path / "model-00002-of-00002.safetensors").symlink_to(second_shard)
            second_shard = "model-00002-of-00002.safetensors"
        weight_map = {**dict.fromkeys(halves[first], first), **dict.fromkeys(halves["model-00002-of-00002.safetensors"],
                                                                             str(second_shard))}  # fmt: skip
        (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        return path

    reference = from_pretrained(str(llama_path))
    expected = np.asarray(reference.layers[0].mlp.up.kernel[...])
    for bad, match in [
        (
            folder("dotdot", "../elsewhere/model-00002-of-00002.safetensors"),
            r"'\.\./elsewhere/.*' is not a path inside",
        ),
        (folder("absolute", outside / "model-00002-of-00002.safetensors"), r"is not a path inside the model folder"),
        (folder("link", outside / "model-00002-of-00002.safetensors", link=True), r"resolves to .*elsewhere"),
    ]:
        with pytest.raises(
            CheckpointError, match=rf"{bad}/model\.safetensors\.index\.json: weight_map entry '.*" + match
        ):
            from_pretrained(str(bad))

    # A Hugging Face cache: snapshots/<revision>/<file> -> ../../blobs/<hash>.
    blobs = tmp_path / "hub" / "models--tiny" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "abc123").write_bytes((outside / "model-00002-of-00002.safetensors").read_bytes())
    snapshot = folder("hub/models--tiny/snapshots/rev0", "../../blobs/abc123", link=True)
    np.testing.assert_array_equal(np.asarray(from_pretrained(str(snapshot)).layers[0].mlp.up.kernel[...]), expected)
    inside = folder("inside", "model-00002-of-00002.safetensors")
    (inside / "model-00002-of-00002.safetensors").write_bytes(
        (outside / "model-00002-of-00002.safetensors").read_bytes()
    )
    np.testing.assert_array_equal(np.asarray(from_pretrained(str(inside)).layers[0].mlp.up.kernel[...]), expected)
