"""benchmarks/gpu_suite.py, the prepared run for a lent GPU: its --tiny mode on the CPU measures every row and writes
both files, a zero budget skips with reasons, and its module-level imports are only what the GPU image has."""

import ast
import importlib.util
import json
import math
import os
import subprocess
import sys
import types

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_suite.py")
# The third-party packages the script may import at module level (the rest is imported inside functions).
MODULE_LEVEL = {"jax", "flax", "optax", "numpy", "torch", "transformers"}


def run_suite(tmp_path, *args):
    """The script in a fresh process on one CPU device (the tests' simulated 8-device mesh stripped)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags)
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--tiny", "--out", str(tmp_path), *args], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("gpu-cpu-*-tiny.json")
    return json.loads(path.read_text()), path.with_suffix(".md").read_text()


def is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def module_level_imports(tree: ast.Module) -> set[str]:
    """Top-level package names imported when the module loads: every statement outside function bodies."""
    found, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
        todo.extend(ast.iter_child_nodes(node))
    return found


def test_module_level_imports_are_the_standard_library_and_the_gpu_image_basics():
    with open(SCRIPT) as f:
        imported = module_level_imports(ast.parse(f.read()))
    others = {name for name in imported if name not in sys.stdlib_module_names and name != "__future__"}
    assert others <= MODULE_LEVEL, others - MODULE_LEVEL
    assert "jax" in imported  # and the test sees the imports at all


@pytest.mark.slow
def test_tiny_run_measures_every_row(tmp_path):
    record, markdown = run_suite(tmp_path)
    rows = {r["name"]: r for r in record["rows"]}
    assert list(rows) == ["attention", "rm_train_step", "kmeans", "ppo_iteration"]
    for row in rows.values():  # in tiny mode an error or a skip is a failure
        assert row["status"] == "ok" and not row["errors"] and not row["skipped"], (row["name"], row["errors"])
    assert record["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and record["elapsed_s"] > 0

    attention = rows["attention"]
    assert attention["results"]["attention_impl"] == "auto" and attention["results"]["backend"] == "blocked"
    assert attention["results"]["max_abs_diff_output"] < 0.05 and len(attention["results"]["max_abs_diff_grads"]) == 3
    assert all(is_number(attention["measurements"][impl]["fwd_bwd_ms"]) for impl in ("auto", "einsum"))

    rm = rows["rm_train_step"]
    for key in ("torch_tokens_per_s", "ours_standard_tokens_per_s", "ours_inform_tokens_per_s",
                "ratio_ours_over_torch", "ratio_inform_over_torch", "inform_overhead_pct", "ours_standard_tflops",
                "ours_inform_tflops", "ours_standard_compile_s"):  # fmt: skip
        assert is_number(rm["results"][key]), key
    assert rm["results"]["mfu_standard"] is None  # no bf16 peak for a CPU
    peer = rm["measurements"]["torch_peer"]
    assert peer["attn_implementation"] == "sdpa" and peer["gradient_checkpointing"]
    assert rm["settings"]["remat"] == "full" and is_number(rm["measurements"]["ours_inform"]["loss"])
    assert rm["results"]["attention_impl"] == "auto" and rm["results"]["attention_fallback"] is None

    kmeans = rows["kmeans"]
    assert is_number(kmeans["results"]["ratio_ours_over_sklearn"])
    for side in ("ours", "sklearn"):
        m = kmeans["measurements"][side]
        assert is_number(m["seconds"]) and m["iterations"] >= 1 and is_number(m["inertia"])

    ppo = rows["ppo_iteration"]
    for key in ("ppo_iteration_s", "eppo_iteration_s", "eppo_overhead_pct"):
        assert is_number(ppo["results"][key]), key
    for split in (ppo["measurements"]["ppo"], *ppo["measurements"]["eppo"].values()):
        if isinstance(split, dict):
            assert all(is_number(split[k]) for k in ("rollout_s", "scoring_s", "update_s", "iteration_s"))
    assert is_number(ppo["measurements"]["eppo"]["sft_energy_cache_s"])

    # Every target recorded with its value; --tiny profiles every step, and the top ops come out of each trace.
    for row in rows.values():
        assert row["targets"] and all(t["met"] is not None or t["value"] is None for t in row["targets"])
    for name, label in (("rm_train_step", "standard"), ("rm_train_step", "inform"), ("kmeans", "ours"),
                        ("ppo_iteration", "eppo")):  # fmt: skip
        trace = rows[name]["traces"][f"trace_{label}"]
        assert (tmp_path / trace["path"]).is_dir() and trace["top_ops"]["ops"], (name, label)

    assert "| row | metric | ours | peer | ratio / value | target | met |" in markdown
    for name in rows:
        assert f"| {name} |" in markdown and f"## {name}: ok" in markdown
    assert not list(tmp_path.glob(".tmp-*"))  # the atomic writes left no temporary file


def test_a_spent_budget_skips_with_the_reason(tmp_path):
    record, markdown = run_suite(tmp_path, "--rows", "kmeans", "--budget-s", "0")
    (row,) = record["rows"]
    assert row["status"] == "skipped" and not row["measurements"] and not row["errors"]
    assert set(row["skipped"]) == {"sklearn", "ours"} and "budget" in row["skipped"]["ours"]
    assert "skipped ours: budget" in markdown


@pytest.mark.slow
def test_an_attention_that_raises_in_the_rm_step_costs_the_row_no_step(tmp_path):
    """cuDNN on the CPU raises, as a cuDNN that refuses the shape would on a GPU: the standard step is measured
    again with the einsum, InfoRM's goes straight to it, and the row says why."""
    record, markdown = run_suite(tmp_path, "--rows", "rm", "--attention", "cudnn", "--trace", "never")
    (rm,) = record["rows"]
    assert rm["results"]["attention_impl"] == "einsum"
    for method in ("standard", "inform"):
        assert is_number(rm["measurements"][f"ours_{method}"]["seconds"])
    assert is_number(rm["results"]["ratio_ours_over_torch"]) and is_number(rm["results"]["inform_overhead_pct"])
    assert set(rm["errors"]) == {"ours_standard (attention cudnn)"} and rm["status"] == "partial"
    reason = rm["results"]["attention_fallback"]
    assert reason.startswith("ours_standard (attention cudnn) raised") and "cuDNN runs on NVIDIA GPUs" in reason
    assert "| ours: model.attention_impl (a fall-back: see the notes) | einsum |" in markdown
    assert f"- ours ran attention as einsum, since {reason}" in markdown


def load_suite_module(monkeypatch):
    """The script as a module; the allocator variables it sets on import are restored after the test."""
    for key in ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION"):
        monkeypatch.delenv(key, raising=False)
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("impl", ["auto", "cudnn", "einsum"])
def test_the_rm_row_skips_an_attention_the_attention_row_saw_raise(impl, monkeypatch):
    rm_attention = load_suite_module(monkeypatch).rm_attention

    def suite(errors):
        rows = [] if errors is None else [{"name": "attention", "errors": errors}]
        return types.SimpleNamespace(args=types.SimpleNamespace(attention=impl), record={"rows": rows})

    assert rm_attention(suite(None)) == (impl, None)  # no attention row: the step tries it
    assert rm_attention(suite({})) == (impl, None)
    assert rm_attention(suite({"einsum": "MemoryError"})) == (impl, None)  # not the chosen one's error
    chosen, why = rm_attention(suite({impl: "ValueError: cuDNN refused\n  traceback"}))
    if impl == "einsum":  # nothing to fall back to
        assert (chosen, why) == ("einsum", None)
    else:
        assert chosen == "einsum" and why == f"the attention row's {impl} raised: ValueError: cuDNN refused"


def test_only_running_out_of_memory_keeps_the_rm_step_from_the_einsum(monkeypatch):
    out_of_memory = load_suite_module(monkeypatch).out_of_memory
    assert out_of_memory("XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4.00GiB")
    assert out_of_memory("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert not out_of_memory("XlaRuntimeError: INTERNAL: cuDNN graph could not be built for this shape")
    assert not out_of_memory("ValueError: model.attention_impl=cudnn cannot run attention of shape (4, 32, 4, 16)")
