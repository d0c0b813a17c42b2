"""`python -m benchmarks`: runs a script in its own process, reads its result, and tabulates ratios and targets."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks.__main__ import _overhead, _row, main, markdown_table
from inform_jax.models import CausalLM, DecoderConfig


def test_rows_compute_ratios_and_targets():
    fast, slow = _row("a", "tokens/s", 300.0, 100.0, 1.5), _row("b", "tokens/s", 100.0, 300.0, 1.5)
    assert fast["ratio"] == 3.0 and fast["met"] and not slow["met"]
    assert _row("c", "tokens/s", 1.0, None)["ratio"] is None  # no peer: no ratio, no verdict
    assert _overhead("d", 1.0, 2.0)["met"] and not _overhead("e", 2.5, 2.0)["met"]
    table = markdown_table([fast, slow])
    assert "| yes |" in table and "| **no** |" in table and ">= 1.5x" in table


def test_runner_runs_a_script_and_writes_the_summary(tmp_path):
    assert main(["--quick", "--only", "kmeans", "--out", str(tmp_path)]) == 0
    (summary,) = [p for p in tmp_path.glob("cpu-*.json")]
    result = json.loads(summary.read_text())
    (row,) = result["rows"]
    assert row["workload"].startswith("k-means 2000x8") and row["ratio"] > 0 and row["target"] == 2.0
    assert result["results"]["kmeans"]["n"] == 2000  # the script's own result, as written to --out
    assert (tmp_path / summary.name.replace(".json", ".md")).read_text().count("| k-means") == 1


def test_decode_roofline_counts_bytes_and_matches_transformers_greedy(tmp_path):
    """The GPU decode benchmark at its tiny size on the CPU, in float32: the peer (transformers with our weights)
    decodes the same greedy tokens, and the bytes per step are the tied model's weights plus the whole KV cache."""
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "decode_roofline.py")
    args = ["--tiny", "--dtype", "float32", "--batch", "1", "3", "--peer-batch", "3", "--prompt", "8",
            "--new-tokens", "6", "--repeats", "1", "--probe-gb", "0.01"]  # fmt: skip
    env = {**os.environ, "INFORM_JAX_BENCH_RESULTS": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, script, *args], env=env, check=True, capture_output=True)
    (path,) = tmp_path.glob("decode_roofline-float32-cpu-*.json")
    result = json.loads(path.read_text())
    assert [r["batch"] for r in result["rows"]] == [1, 3] and not result["rows"][0]["single_row_padded"]
    (peer,) = result["peer"]
    assert peer["rows_identical"] == 3 and peer["mean_tokens_before_first_difference"] == 6
    layers, kv_heads, head_dim = 2, 2, 16  # the --tiny model; its embedding table is tied to the LM head
    for row in result["rows"]:
        assert row["weight_bytes_per_step"] == 4 * result["parameters"]
        cache = 2 * layers * row["batch"] * kv_heads * head_dim * (8 + 6) * 4
        assert row["bytes_per_step_ours"] == row["weight_bytes_per_step"] + cache
        assert row["weight_bytes_per_step"] < row["bytes_per_step_least"] < row["bytes_per_step_ours"]


def test_decode_roofline_reads_an_untied_input_table_only_for_the_batch_rows(monkeypatch):
    """Untied embeddings: the LM head's [D, V] kernel is read whole, the input table only for B gathered rows."""
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from decode_roofline import weight_bytes_per_step

    config = DecoderConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                           num_kv_heads=2, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)  # fmt: skip
    model = CausalLM(config, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    every = sum(x.size for x in jax.tree.leaves(params)) * 2  # bf16
    for batch in (1, 5):
        assert weight_bytes_per_step(model, batch) == every - 96 * 32 * 2 + batch * 32 * 2


def test_lab_seeds_vmapped_computes_what_the_loop_computes(tmp_path):
    """benchmarks/lab_seeds.py times the lab's seeds vmapped against a loop: both must compute the same rollouts
    (sampled tokens equal), scores and updates, or the ratio compares different work."""
    assert main(["--quick", "--only", "lab_seeds", "--out", str(tmp_path)]) == 0
    (summary,) = [p for p in tmp_path.glob("cpu-*.json")]
    result = json.loads(summary.read_text())["results"]["lab_seeds"]
    assert result["seeds"] == 2
    assert result["rollout"]["max_abs_difference"] == 0.0
    assert result["scoring"]["max_abs_difference"] < 1e-4 and result["update"]["max_abs_difference"] < 1e-4
    assert all(result[k]["loop_s"] > 0 and result[k]["vmapped_s"] > 0 for k in ("rollout", "scoring", "update"))
