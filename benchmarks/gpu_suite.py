"""One prepared run for a lent GPU (one H100 80GB or H200): the RM train step, a PPO iteration and k-means against
their peers, in one process, within a time budget, written row by row.

    python benchmarks/gpu_suite.py --out $OUT           # on the GPU machine, from the repository root (~5 min)
    python benchmarks/gpu_suite.py --tiny --out /tmp/s  # the same code paths at tiny shapes, on the CPU (<1 min)

Rows, in the order they run (the cheap k-means row before the PPO row, the one most likely to run out of
budget):

1. rm_train_step: the Llama-3.2-1B shape (16 layers, width 2048, 32 heads, 8 kv heads, MLP 8192, vocab 128256;
   a reward model has no LM head, so tied or untied embeddings make no difference: neither side has one), bf16
   compute with float32 master weights and AdamW (lr 1e-5, betas 0.9 / 0.95, clip 1.0), 16 pairs x 1024 tokens
   (32 sequences) per step, every decoder layer recomputed in the backward pass on both sides (ours:
   model.remat="full"; the peer: transformers' gradient checkpointing, non-reentrant). The peer,
   transformers' LlamaForSequenceClassification in PyTorch (bf16 autocast, SDPA attention, fused AdamW, float32
   parameters and optimizer state), runs first in the same process; then ours, the standard RM and InfoRM
   (latent 128). Tokens/s count chosen + rejected tokens; MFU = training_flops (benchmarks/rm_train_step.py:
   6 x non-embedding parameters x tokens + attention; the recomputation is not counted) over the median step
   time and the bf16 peak (989 TFLOP/s, H100 / H200).
2. kmeans: 1,000,000 x 128 blobs, k 16, one k-means++ start, at most 100 Lloyd iterations and scikit-learn's
   tolerance rule on both sides; ours (inform_jax.detect.kmeans) on the GPU, scikit-learn's KMeans on the host's
   CPU cores. Seconds per fit (median) and the ratio, with each side's iterations and inertia.
3. ppo_iteration: the same shape as policy (tied embeddings, as Llama-3.2-1B), its copy as reference, an
   SFT-initialised critic and an InfoRM reward model of the same shape, all float32 weights and bf16 compute;
   16 prompts x 64 tokens, 64 new tokens each (no EOS), one minibatch. One trainer: PPO iterations (the
   rollout / scoring / update split), then EPPO (energy.eta 2, SFT energies cached once per prompt before
   training, not counted per iteration) alternated with PPO iteration by iteration. The two share every
   compiled program except the shaped reward's (the only per-iteration work EPPO adds is that and the cached
   energies' lookup), so EPPO costs no second compilation of rollout, scoring and update.

Memory on an 80 GB H100 (sums on paper; the CPU compiler's memory analysis of the same programs is an upper
bound: it converts every bf16 operand to float32): the RM step holds 18.4 GiB of weights, AdamW moments and
gradients; with every layer recomputed it adds each layer's input (4 GiB) and one layer's activations, mostly
attention's [32, 32, 1024, 1024] scores (~11 GiB): ~35-43 GiB. Without recomputation ours would need ~190 GiB
for the attention scores alone and the peer ~75 GiB of activations, so both sides recompute. PPO holds ~37 GiB
(actor and critic with Adam, reference and reward model, all float32) plus ~15-20 GiB in the update.

Before each measurement the suite checks the budget (--budget-s, default 270): a measurement whose estimate
(from the compile times seen so far where there are any) would end past it is skipped with the reason recorded.
Results go to <out>/gpu-<device kind>-<date>.{json,md}, both rewritten (atomically) after every measurement, so
a run that is cut off keeps what it measured. A missed target takes a jax.profiler trace of one step into
<out>/trace-<row>-<what>/ and records the top ops by time. Every measurement and every row is guarded: an error
(e.g. out of memory) is recorded and the suite goes on.

Attention in the attention and RM rows is --attention (model.attention_impl; auto: cuDNN flash attention on a
GPU). Where it raises, in the attention row or in the RM step (other than by running out of memory), the RM row
measures its step with the einsum, auto's own fall-back, and records the error and the choice: a cuDNN that
refuses the shape on this image must not cost the row its step.

JAX's allocator: XLA_PYTHON_CLIENT_PREALLOCATE=false (allocate as needed, so that the PyTorch peers and JAX share
the GPU) and XLA_PYTHON_CLIENT_MEM_FRACTION=0.92 (the allocator's cap, 75% by default, holds without
preallocation too), unless set already. JAX starts on the GPU before torch is imported, the order the decode
benchmark ran in on this image; each PyTorch peer runs before the JAX side of its row and leaves with its objects
deleted and its cache emptied.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import glob
import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

_START = time.perf_counter()
# Before jax is imported (read when its GPU client starts).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (HERE, ROOT):  # the benchmark helpers (_common, rm_train_step, ...) and inform_jax, not pip-installed
    if _path not in sys.path:
        sys.path.insert(0, _path)

# Shapes: the GPU run and --tiny (the same code paths on the CPU).
SHAPES = {
    "full": {
        "rm": {"layers": 16, "width": 2048, "heads": 32, "kv_heads": 8, "intermediate": 8192, "vocab": 128256,
               "pairs": 16, "length": 1024, "repeats": 5},
        "attention": {"rows": 32, "length": 1024, "heads": 32, "kv_heads": 8, "head_dim": 64, "repeats": 5},
        "kmeans": {"n": 1_000_000, "dim": 128, "k": 16, "iterations": 100, "repeats": 3},
        "ppo": {"prompts": 16, "prompt_len": 64, "new_tokens": 64, "iterations": 4},
    },
    "tiny": {
        "rm": {"layers": 2, "width": 64, "heads": 4, "kv_heads": 2, "intermediate": 128, "vocab": 256,
               "pairs": 2, "length": 32, "repeats": 2},
        "attention": {"rows": 2, "length": 256, "heads": 4, "kv_heads": 2, "head_dim": 16, "repeats": 2},
        "kmeans": {"n": 2000, "dim": 8, "k": 16, "iterations": 100, "repeats": 2},
        "ppo": {"prompts": 4, "prompt_len": 8, "new_tokens": 8, "iterations": 2},
    },
}  # fmt: skip

# Targets recorded beside the numbers (not asserted).
TARGETS = {"rm_over_torch": 1.3, "rm_mfu": 0.40, "inform_overhead_pct": 2.0, "eppo_overhead_pct": 3.0,
           "kmeans_over_sklearn": 2.0}  # fmt: skip

# Seconds each measurement is expected to take on the GPU before anything has been compiled (imports, model
# building, compilation and the timed steps); replaced by estimates from the compile times seen once there are any.
ESTIMATES_S = {
    "attention.chosen": 20, "attention.einsum": 20,
    "rm.torch_peer": 30, "rm.ours_standard": 60, "rm.ours_inform": 60, "trace": 15,
    "kmeans.sklearn": 30, "kmeans.ours": 15, "ppo.ppo": 110, "ppo.eppo": 45,
}  # fmt: skip
TINY_ESTIMATE_S = 5
ATTENTION_AGREES = "--attention agrees with einsum: largest output difference"
ROWS = ("attention", "rm", "kmeans", "ppo")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def error_text(e: BaseException) -> str:
    """The exception and the last lines of its traceback (an XLA out-of-memory message can be long)."""
    tail = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-3:])
    return f"{type(e).__name__}: {str(e)[:2000]}\n{tail[-2000:]}"


def first_line(error: str, limit: int) -> str:
    """The first line of a recorded error (its exception and message), at most `limit` characters; "?" if empty."""
    return error.strip().splitlines()[0][:limit] if error.strip() else "?"


def out_of_memory(error: str) -> bool:
    """Whether a recorded error is the device running out of memory (XLA's or PyTorch's words)."""
    return "RESOURCE_EXHAUSTED" in error or "out of memory" in error.lower()


def write_atomic(path: str, text: str) -> None:
    """Write `text` to a temporary file beside `path` and rename it over `path`: a reader (or a kill) never sees
    half a file."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def free_memory() -> None:
    """Collect garbage (nnx modules hold reference cycles) and empty PyTorch's CUDA cache if torch is loaded."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def jax_memory() -> dict | None:
    """JAX's allocator statistics on the first device (bytes in use, peak so far, limit); None on the CPU."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    if not stats:
        return None
    keys = ("bytes_in_use", "peak_bytes_in_use", "bytes_limit", "largest_alloc_size")
    return {k: int(stats[k]) for k in keys if k in stats}


def versions() -> dict:
    out = {"python": platform.python_version(), "jax": jax.__version__}
    for name in ("jaxlib", "flax", "optax", "torch", "transformers", "sklearn"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except Exception as e:  # recorded, not fatal: the rows that need it record their own error
            out[name] = f"not importable ({type(e).__name__})"
    return out


def git_commit() -> str | None:
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return proc.stdout.strip() or None
    except Exception:
        return None


# ------------------------------------------------------------------------------------------------ profiles


def self_times(events: list[dict]) -> list[tuple[dict, float]]:
    """(event, its duration minus that of the events nested in it on the same thread): a loop's or a module's
    event contains its body's ops, which would otherwise be counted twice."""
    out = []
    by_thread: dict[tuple, list[dict]] = {}
    for e in events:
        by_thread.setdefault((e["pid"], e.get("tid")), []).append(e)
    for thread_events in by_thread.values():
        thread_events.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[list] = []  # [event, end, self time]
        for e in thread_events:
            start, dur = float(e["ts"]), float(e["dur"])
            while stack and stack[-1][1] <= start:
                out.append((stack[-1][0], stack.pop()[2]))
            if stack:
                stack[-1][2] -= dur
            stack.append([e, start + dur, dur])
        out.extend((entry[0], entry[2]) for entry in stack)
    return out


def top_ops(folder: str, count: int = 12) -> dict | None:
    """The ops that took the most time (self time: nested ops subtracted) in the perfetto trace jax.profiler wrote
    under `folder`: on a GPU the device's "XLA Ops" line (else its kernels), on the CPU XLA's own threads. None
    when there is no trace."""
    paths = glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"), recursive=True)
    if not paths:
        return None
    with gzip.open(max(paths, key=os.path.getmtime), "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    processes, threads = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            processes[e["pid"]] = e.get("args", {}).get("name", "")
        elif e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e["pid"], e.get("tid"))] = e.get("args", {}).get("name", "")
    timed = [e for e in events if e.get("ph") == "X" and "dur" in e and "ts" in e]

    def thread(e):
        return threads.get((e["pid"], e.get("tid")), "")

    device = [e for e in timed if processes.get(e["pid"], "").startswith("/device:")]
    if device:
        chosen = [e for e in device if "XLA Ops" in thread(e)]
        source = "device XLA Ops"
        if not chosen:
            chosen = [e for e in device if not any(s in thread(e) for s in ("XLA Modules", "Steps", "Framework"))]
            source = "device kernels"
    else:
        chosen = [e for e in timed if thread(e).startswith("tf_XLA") and not e["name"].startswith("ThunkExecutor")]
        source = "host XLA threads"
    totals: dict[str, list] = {}
    for e, own in self_times(chosen):
        entry = totals.setdefault(e["name"], [0.0, 0, ""])
        entry[0] += own
        entry[1] += 1
        args = e.get("args") or {}
        entry[2] = entry[2] or str(args.get("long_name") or args.get("hlo_op") or "")[:200]
    total_us = sum(v[0] for v in totals.values())
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])[:count]
    return {
        "source": source,
        "total_ms": total_us / 1e3,
        "ops": [{"name": name, "ms": us / 1e3, "share": us / total_us if total_us else None, "count": n,
                 **({"detail": detail} if detail else {})} for name, (us, n, detail) in ranked],
    }  # fmt: skip


# ------------------------------------------------------------------------------------------------ the suite


class Suite:
    """The run's record: rows of measurements, rewritten to JSON and markdown after every change."""

    def __init__(self, args):
        self.args = args
        self.out = os.path.abspath(args.out)
        os.makedirs(self.out, exist_ok=True)
        self.device = jax.devices()[0]  # JAX's GPU client starts here, before torch is imported
        self.gpu = self.device.platform == "gpu"
        self.observed: dict[str, float] = {}  # compile seconds seen, for estimates
        date = datetime.date.today().isoformat()
        name = f"gpu-{slug(self.device.device_kind)}-{date}" + ("-tiny" if args.tiny else "")
        self.stem = os.path.join(self.out, name)
        self.record = {
            "suite": "benchmarks/gpu_suite.py",
            "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
            "tiny": args.tiny,
            "device": {
                "kind": self.device.device_kind,
                "platform": self.device.platform,
                "count": jax.device_count(),
            },
            "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
            "date": date,
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "budget_s": args.budget_s,
            "elapsed_s": None,
            "git_commit": git_commit(),
            "env": {
                k: os.environ.get(k)
                for k in (
                    "XLA_PYTHON_CLIENT_PREALLOCATE",
                    "XLA_PYTHON_CLIENT_MEM_FRACTION",
                    "XLA_FLAGS",
                    "JAX_PLATFORMS",
                )
            },
            "versions": versions(),
            "targets": TARGETS,
            "rows": [],
        }
        self.save()

    # ---------------------------------------------------------------- bookkeeping

    def elapsed(self) -> float:
        return time.perf_counter() - _START

    def estimate(self, name: str) -> float:
        if self.args.tiny:
            return TINY_ESTIMATE_S
        compile_s = self.observed.get("rm_compile_s")
        if compile_s is not None:  # programs of the 1B shape compile in about this time on this machine
            scaled = {"rm.ours_inform": self.observed["rm_standard_wall_s"] * 1.1,
                      "ppo.ppo": 2.5 * compile_s + 20, "ppo.eppo": 0.8 * compile_s + 15}  # fmt: skip
            if name in scaled:
                return scaled[name]
        return ESTIMATES_S.get(name, ESTIMATES_S["trace"])

    def save(self) -> None:
        self.record["elapsed_s"] = round(self.elapsed(), 1)
        self.record["jax_memory"] = jax_memory()
        write_atomic(self.stem + ".json", json.dumps(self.record, indent=1, default=_jsonable))
        write_atomic(self.stem + ".md", markdown(self.record))

    def measure(self, row: dict, name: str, estimate_key: str, fn, *, into: str = "measurements"):
        """fn() stored as row[into][name], unless the budget says no (row["skipped"][name] says why) or it raises
        (row["errors"][name]); returns its value or None. Both files are rewritten after it."""
        estimate = self.estimate(estimate_key)
        elapsed = self.elapsed()
        if elapsed + estimate > self.args.budget_s:
            row["skipped"][name] = (f"budget: {elapsed:.0f} s elapsed + ~{estimate:.0f} s estimated > "
                                    f"--budget-s {self.args.budget_s:g}")  # fmt: skip
            self.save()
            return None
        print(f"[{elapsed:6.1f} s] {row['name']}: {name} (estimate ~{estimate:.0f} s)", flush=True)
        start = time.perf_counter()
        value = None
        try:
            value = fn()
            row.setdefault(into, {})[name] = value
        except Exception as e:  # out of memory, a missing package, a bug: recorded, and the suite goes on
            row["errors"][name] = error_text(e)
            print(f"  error: {row['errors'][name]}", flush=True)
        row["wall_s"][name] = round(time.perf_counter() - start, 2)
        free_memory()
        peak = (jax_memory() or {}).get("peak_bytes_in_use")
        if peak is not None:  # JAX's peak since the process started (it cannot be reset)
            row.setdefault("jax_peak_bytes_so_far", {})[name] = peak
        self.save()
        return value

    def run_row(self, name: str, title: str, settings: dict, fn) -> dict:
        row = {"name": name, "title": title, "status": "running", "settings": settings, "measurements": {},
               "results": {}, "targets": [], "traces": {}, "skipped": {}, "errors": {}, "wall_s": {}}  # fmt: skip
        self.record["rows"].append(row)
        self.save()
        try:
            fn(self, row)
        except Exception as e:
            row["errors"]["row"] = error_text(e)
            print(f"  row error: {row['errors']['row']}", flush=True)
        free_memory()
        row["status"] = ("error" if row["errors"] and not row["measurements"] else
                         "partial" if row["errors"] or row["skipped"] else "ok")  # fmt: skip
        if not row["errors"] and not row["measurements"] and row["skipped"]:
            row["status"] = "skipped"
        row["jax_memory_after"] = jax_memory()
        self.save()
        return row

    def trace(self, row: dict, label: str, step) -> None:
        """A jax.profiler trace of one call of `step` into <out>/trace-<row>-<label>/, its path and top ops in
        row["traces"][label] (within the budget; errors recorded like a measurement's)."""

        def run():
            folder = os.path.join(self.out, f"trace-{row['name']}-{label}")
            shutil.rmtree(folder, ignore_errors=True)
            with jax.profiler.trace(folder, create_perfetto_trace=True):
                step()
            try:
                ops = top_ops(folder)
            except Exception as e:
                ops = {"error": error_text(e)}
            return {"path": os.path.relpath(folder, self.out), "top_ops": ops}

        self.measure(row, f"trace_{label}", "trace", run, into="traces")

    def should_trace(self, missed: bool) -> bool:
        return self.args.trace == "always" or (self.args.trace == "missed" and missed)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def target(name: str, value, limit, *, higher: bool) -> dict:
    met = None if value is None else (value >= limit if higher else value < limit)
    return {"name": name, "value": value, "target": (">= " if higher else "< ") + f"{limit:g}", "met": met}


# ------------------------------------------------------------------------------------------------ row 0: attention


def attention_row(suite: Suite, row: dict) -> None:
    """The backend --attention (model.attention_impl, auto by default) picks for the RM step's attention
    (right-padded rows, bf16; cuDNN on a GPU) against the float32-softmax einsum: which ran, the largest
    differences of the output and of dq / dk / dv at real tokens, and forward + backward milliseconds of each."""
    from _common import median_seconds

    from inform_jax.models.attention import SelfAttentionMask, self_attention
    from inform_jax.models.attention_backends import choose_backend, current_platform, rows_padded_on_the_right

    s, impl = row["settings"], suite.args.attention
    b, t, hq, hkv, d = s["rows"], s["length"], s["heads"], s["kv_heads"], s["head_dim"]
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal(shape), jnp.bfloat16) for shape in
               ((b, t, hq, d), (b, t, hkv, d), (b, t, hkv, d)))  # fmt: skip
    lengths = rng.integers(t // 2, t + 1, size=b)
    lengths[0] = t
    valid = np.arange(t)[None] < lengths[:, None]  # right padding, as the RM step's rows
    mask = SelfAttentionMask(jnp.broadcast_to(jnp.arange(t), (b, t)), jnp.asarray(valid), 0)
    real = jnp.asarray(valid)[:, :, None, None]
    m, r = row["measurements"], row["results"]
    r["attention_impl"] = impl
    try:
        r["backend"] = choose_backend(impl, q.shape, k.shape, q.dtype, right_padded=True, platform=current_platform())
    except ValueError:  # an explicit fused choice that cannot run here: its measurement records why
        r["backend"] = "none"

    def program(impl):
        def loss(q, k, v):
            with rows_padded_on_the_right():
                out = self_attention(q, k, v, mask, impl=impl)
            return jnp.sum(jnp.where(real, out.astype(jnp.float32), 0.0) ** 2), out

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))

    outputs = {}

    def measure(impl):
        def fn():
            step = program(impl)
            holder = {}

            def run():
                holder["value"] = jax.block_until_ready(step(q, k, v))

            timings = {}
            seconds = median_seconds(run, s["repeats"], timings)
            (_, out), grads = holder["value"]
            outputs[impl] = (np.asarray(out, np.float32), [np.asarray(g, np.float32) for g in grads])
            return {"fwd_bwd_ms": 1e3 * seconds, "first_call_s": timings["first_s"]}

        return fn

    for name in dict.fromkeys((impl, "einsum")):
        suite.measure(row, name, "attention.einsum" if name == "einsum" else "attention.chosen", measure(name))
    if len(outputs) == 2:
        (out_a, grads_a), (out_e, grads_e) = outputs[impl], outputs["einsum"]
        keep = np.asarray(valid)
        r["max_abs_diff_output"] = float(np.max(np.abs(out_a[keep] - out_e[keep])))
        r["max_abs_diff_grads"] = [float(np.max(np.abs(a - e))) for a, e in zip(grads_a, grads_e, strict=True)]
        r["einsum_output_max_abs"] = float(np.max(np.abs(out_e[keep])))
        r["speedup_over_einsum"] = m["einsum"]["fwd_bwd_ms"] / m[impl]["fwd_bwd_ms"]
    # Outputs are ~unit-sized (attention averages unit-normal values): 0.05 is a few bf16 ulps.
    row["targets"] = [target(ATTENTION_AGREES, r.get("max_abs_diff_output"), 0.05, higher=False)]


def rm_attention(suite: Suite) -> tuple[str, str | None]:
    """(model.attention_impl for the RM step, why it is not --attention): the einsum where the attention row
    measured --attention and it raised (e.g. cuDNN refused the shape), so that the RM row measures a step at all."""
    impl = suite.args.attention
    attention = next((row for row in suite.record["rows"] if row["name"] == "attention"), None)
    if impl != "einsum" and attention is not None and impl in attention["errors"]:
        return "einsum", f"the attention row's {impl} raised: {first_line(attention['errors'][impl], 300)}"
    return impl, None


# ------------------------------------------------------------------------------------------------ row 1: RM step


def rm_row(suite: Suite, row: dict) -> None:
    from rm_train_step import LATENT, PEAK_BF16, bench_ours, bench_torch, make_pairs, model_sizes, training_flops

    s = row["settings"]
    sizes = model_sizes(s["layers"], s["width"], heads=s["heads"], kv_heads=s["kv_heads"],
                        intermediate=s["intermediate"], vocab=s["vocab"])  # fmt: skip
    pairs = make_pairs(s["pairs"], s["length"], vocab=s["vocab"])
    tokens = 2 * s["pairs"] * s["length"]
    remat = s["remat"]
    peak = next((v for k, v in PEAK_BF16.items() if k in suite.device.device_kind), None) if suite.gpu else None
    m, r = row["measurements"], row["results"]
    r["tokens_per_step"] = tokens
    r["peak_bf16_flops"] = peak

    def summarize():
        if "torch_peer" in m:
            r["torch_tokens_per_s"] = tokens / m["torch_peer"]["seconds"]
        for method in ("standard", "inform"):
            if f"ours_{method}" in m:
                ours = m[f"ours_{method}"]
                flops = training_flops(ours["matmul_params"], s["layers"], s["width"], s["length"], tokens)
                r[f"ours_{method}_tokens_per_s"] = tokens / ours["seconds"]
                r[f"ours_{method}_tflops"] = flops / ours["seconds"] / 1e12
                r[f"mfu_{method}"] = flops / ours["seconds"] / peak if peak else None
                r[f"ours_{method}_compile_s"] = ours["first_call_s"] - ours["seconds"]
        if "torch_peer" in m and "ours_standard" in m:
            r["ratio_ours_over_torch"] = m["torch_peer"]["seconds"] / m["ours_standard"]["seconds"]
        if "torch_peer" in m and "ours_inform" in m:
            r["ratio_inform_over_torch"] = m["torch_peer"]["seconds"] / m["ours_inform"]["seconds"]
        if "ours_standard" in m and "ours_inform" in m:
            r["inform_overhead_pct"] = (m["ours_inform"]["seconds"] / m["ours_standard"]["seconds"] - 1) * 100
        row["targets"] = [
            target("RM step (standard) / PyTorch peer", r.get("ratio_ours_over_torch"), TARGETS["rm_over_torch"],
                   higher=True),
            target("MFU, standard RM step", r.get("mfu_standard"), TARGETS["rm_mfu"], higher=True),
            target("MFU, InfoRM step", r.get("mfu_inform"), TARGETS["rm_mfu"], higher=True),
            target("InfoRM overhead over standard, %", r.get("inform_overhead_pct"), TARGETS["inform_overhead_pct"],
                   higher=False),
        ]  # fmt: skip

    def missed(name: str) -> bool:
        return any(t["met"] is False for t in row["targets"] if t["name"].startswith(name))

    # The peer first: it gives its memory back before JAX allocates.
    suite.measure(row, "torch_peer", "rm.torch_peer", lambda: bench_torch(
        sizes, pairs, "bfloat16", s["repeats"], attn_implementation="sdpa", checkpointing=bool(remat)))  # fmt: skip
    summarize()

    def after(method: str):
        def hook(run, result):
            m[f"ours_{method}"] = dict(result)  # provisional, for the targets
            summarize()
            # The standard step's profile explains the ratio and the MFU; InfoRM's its overhead (and its MFU when the
            # standard step was not profiled).
            if method == "standard":
                missing = missed("RM step (standard)") or missed("MFU, standard")
            else:
                missing = missed("InfoRM overhead") or (missed("MFU, InfoRM") and "trace_standard" not in row["traces"])
            if suite.should_trace(missing):
                suite.trace(row, method, run)
            return {}

        return hook

    def ours(method: str) -> dict | None:
        key = f"ours_{method}"
        value = suite.measure(row, key, f"rm.{key}", lambda: bench_ours(
            method, sizes, pairs, "bfloat16", s["repeats"], remat=remat, after=after(method),
            attention=r["attention_impl"]))  # fmt: skip
        if value is None:
            m.pop(key, None)  # a provisional entry from the hook of a measurement that then failed
        return value

    r["attention_impl"], r["attention_fallback"] = rm_attention(suite)
    for method in ("standard", "inform"):
        key = f"ours_{method}"
        value = ours(method)
        error = row["errors"].get(key, "")
        if value is None and error and r["attention_impl"] != "einsum" and not out_of_memory(error):
            # A fused attention that fails to compile or run (cuDNN's limits move between versions) must not cost
            # the row its step: the einsum (auto's own fall-back) again, the first error kept under its own name.
            failed = f"{key} (attention {r['attention_impl']})"
            row["errors"][failed], row["wall_s"][failed] = row["errors"].pop(key), row["wall_s"].pop(key)
            r["attention_fallback"] = f"{failed} raised: {first_line(error, 300)}"
            r["attention_impl"] = "einsum"
            value = ours(method)
        if value is not None and method == "standard":
            suite.observed["rm_compile_s"] = max(value["first_call_s"] - value["seconds"], 1.0)
            suite.observed["rm_standard_wall_s"] = row["wall_s"][key]
        summarize()
        suite.save()
    r["latent_dim"] = LATENT


# ------------------------------------------------------------------------------------------------ row 2: k-means


def kmeans_row(suite: Suite, row: dict) -> None:
    from _common import median_seconds
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs

    from inform_jax.detect.kmeans import kmeans

    s = row["settings"]
    x, _ = make_blobs(s["n"], s["dim"], centers=s["k"], cluster_std=4.0, random_state=0)
    x = x.astype(np.float32)
    m, r = row["measurements"], row["results"]

    def summarize():
        if "sklearn" in m and "ours" in m:
            r["ratio_ours_over_sklearn"] = m["sklearn"]["seconds"] / m["ours"]["seconds"]
            per_iter = {k: m[k]["seconds"] / max(m[k]["iterations"], 1) for k in ("sklearn", "ours")}
            r["ratio_per_iteration"] = per_iter["sklearn"] / per_iter["ours"]
        row["targets"] = [target("k-means / scikit-learn", r.get("ratio_ours_over_sklearn"),
                                 TARGETS["kmeans_over_sklearn"], higher=True)]  # fmt: skip

    def peer():
        fitted = {}

        def fit():
            fitted["model"] = KMeans(s["k"], n_init=1, max_iter=s["iterations"], random_state=0).fit(x)

        seconds = median_seconds(fit, s["repeats"])
        model = fitted["model"]
        return {"seconds": seconds, "iterations": int(model.n_iter_), "inertia": float(model.inertia_),
                "threads": os.cpu_count()}  # fmt: skip

    suite.measure(row, "sklearn", "kmeans.sklearn", peer)
    summarize()

    def ours():
        xj = jax.device_put(x)
        out = {}

        def run():
            out["result"] = kmeans(jax.random.key(0), xj, s["k"], iterations=s["iterations"], restarts=1)
            out["result"].inertia.block_until_ready()

        timings = {}
        seconds = median_seconds(run, s["repeats"], timings)
        value = {"seconds": seconds, "first_call_s": timings["first_s"], "device": suite.device.device_kind,
                 "iterations": int(out["result"].iterations_run), "inertia": float(out["result"].inertia)}  # fmt: skip
        m["ours"] = value  # provisional, for the target
        summarize()
        if suite.should_trace(any(t["met"] is False for t in row["targets"])):
            suite.trace(row, "ours", run)
        return value

    if suite.measure(row, "ours", "kmeans.ours", ours) is None:
        m.pop("ours", None)
    summarize()


# ------------------------------------------------------------------------------------------------ row 3: PPO / EPPO


def ppo_row(suite: Suite, row: dict) -> None:
    from ppo_iteration import make_trainer, split_seconds

    from inform_jax.models import DecoderConfig

    s = row["settings"]
    policy = DecoderConfig(
        model_type="llama", vocab_size=s["vocab"], hidden_size=s["width"], intermediate_size=s["intermediate"],
        num_layers=s["layers"], num_heads=s["heads"], num_kv_heads=s["kv_heads"], tie_word_embeddings=True,
        max_position_embeddings=4096, dtype=jnp.bfloat16, param_dtype=jnp.float32, scan_layers=True,
    )  # fmt: skip
    m, r = row["measurements"], row["results"]
    folder = tempfile.mkdtemp(prefix="gpu-suite-ppo-")
    state: dict = {"iteration": 0}

    def summarize():
        if "eppo" in m:
            ppo, eppo = m["eppo"]["ppo"], m["eppo"]["eppo"]
            r["ppo_iteration_s"], r["eppo_iteration_s"] = ppo["iteration_s"], eppo["iteration_s"]
            r["eppo_overhead_pct"] = (eppo["iteration_s"] / ppo["iteration_s"] - 1) * 100
        elif "ppo" in m:
            r["ppo_iteration_s"] = m["ppo"]["iteration_s"]
        row["targets"] = [target("EPPO overhead over PPO, %", r.get("eppo_overhead_pct"),
                                 TARGETS["eppo_overhead_pct"], higher=False)]  # fmt: skip

    def step(variant: str) -> dict:
        """One iteration as PPO or EPPO: the trainer's config and its shaped-reward program swapped in."""
        trainer = state["trainer"]
        trainer.config, trainer._advantages = state[variant]
        metrics = trainer.iteration_step(state["iteration"])[0]
        state["iteration"] += 1
        return metrics

    def ppo_phase():
        start = time.perf_counter()
        trainer = make_trainer(
            policy, prompts=s["prompts"], prompt_len=s["prompt_len"], new_tokens=s["new_tokens"],
            iterations=1000, eta=2.0, mode="cached", folder=folder, num_prompts=s["prompts"],
            reference_digest="gpu-suite",
        )  # fmt: skip
        gc.collect()  # the policy it was built from (a module graph with cycles) and its 5 GB of weights
        eppo_config = trainer.config
        ppo_config = dataclasses.replace(eppo_config, energy=dataclasses.replace(eppo_config.energy, eta=0.0))
        # The shaped-reward program of each config (the trainer's own is EPPO's, the config it was built with).
        state.update(trainer=trainer, ppo=(ppo_config, trainer.programs_for(ppo_config).advantages),
                     eppo_config=eppo_config)  # fmt: skip
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        step("ppo")  # compiles rollout, scoring, shaped reward and update
        first_s = time.perf_counter() - start
        times = [step("ppo") for _ in range(s["iterations"])]
        return {**split_seconds(times), "build_s": build_s, "first_iteration_s": first_s}

    def eppo_phase():
        trainer = state["trainer"]
        trainer.config = state["eppo_config"]
        start = time.perf_counter()
        trainer.sft_energy = trainer.reference.cached_energy()
        cache_s = time.perf_counter() - start
        state["eppo"] = (state["eppo_config"], trainer.programs_for(state["eppo_config"]).advantages)
        start = time.perf_counter()
        step("eppo")  # compiles EPPO's shaped reward
        first_s = time.perf_counter() - start
        times: dict[str, list] = {"ppo": [], "eppo": []}
        for _ in range(s["iterations"]):  # alternated, so that drift favours neither
            for variant in ("ppo", "eppo"):
                times[variant].append(step(variant))
        value = {"sft_energy_cache_s": cache_s, "eppo_first_iteration_s": first_s,
                 "ppo": split_seconds(times["ppo"]), "eppo": split_seconds(times["eppo"])}  # fmt: skip
        m["eppo"] = value  # provisional, for the target
        summarize()
        if suite.should_trace(any(t["met"] is False for t in row["targets"])):
            suite.trace(row, "eppo", lambda: step("eppo"))
        return value

    try:
        if suite.measure(row, "ppo", "ppo.ppo", ppo_phase) is not None:
            if suite.measure(row, "eppo", "ppo.eppo", eppo_phase) is None:
                m.pop("eppo", None)
        summarize()
    finally:
        state.clear()
        free_memory()
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ markdown


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _table_lines(row: dict) -> list[str]:
    """| row | metric | ours | peer | ratio / value | target | met | lines for one row."""
    r, name = row["results"], row["name"]
    lines = []

    def add(metric, ours=None, peer=None, value=None, tgt=None):
        met = "-"
        if tgt is not None:
            t = next((t for t in row["targets"] if t["name"] == tgt), None)
            met = {True: "yes", False: "**no**", None: "-"}[t["met"]] if t else "-"
            tgt = t["target"] if t else "-"
        lines.append(f"| {name} | {metric} | {_fmt(ours)} | {_fmt(peer)} | {_fmt(value)} | {tgt or '-'} | {met} |")

    if name == "attention":
        m = row["measurements"]
        impl = r.get("attention_impl")
        add(f"fwd+bwd ms, {impl} ({r.get('backend')}) / einsum; ratio = speed-up",
            m.get(impl, {}).get("fwd_bwd_ms"), m.get("einsum", {}).get("fwd_bwd_ms"),
            r.get("speedup_over_einsum"))  # fmt: skip
        add(f"largest |{impl} - einsum| at real tokens: output", value=r.get("max_abs_diff_output"),
            tgt=ATTENTION_AGREES)  # fmt: skip
        add("the same for dq, dk, dv", value=", ".join(f"{x:.3g}" for x in r.get("max_abs_diff_grads", [])) or None)
    elif name == "rm_train_step":
        add(
            "standard RM step, tokens/s (ours / PyTorch)",
            r.get("ours_standard_tokens_per_s"),
            r.get("torch_tokens_per_s"),
            r.get("ratio_ours_over_torch"),
            "RM step (standard) / PyTorch peer",
        )
        add(
            "InfoRM step, tokens/s (ours / PyTorch)",
            r.get("ours_inform_tokens_per_s"),
            r.get("torch_tokens_per_s"),
            r.get("ratio_inform_over_torch"),
        )
        add("MFU, standard RM step", value=r.get("mfu_standard"), tgt="MFU, standard RM step")
        add("MFU, InfoRM step", value=r.get("mfu_inform"), tgt="MFU, InfoRM step")
        add("InfoRM overhead, %", value=r.get("inform_overhead_pct"), tgt="InfoRM overhead over standard, %")
        fallback = " (a fall-back: see the notes)" if r.get("attention_fallback") else ""
        add(f"ours: model.attention_impl{fallback}", r.get("attention_impl"))
    elif name == "kmeans":
        m = row["measurements"]
        add(
            "seconds per fit (ours / scikit-learn); ratio = speed-up",
            m.get("ours", {}).get("seconds"),
            m.get("sklearn", {}).get("seconds"),
            r.get("ratio_ours_over_sklearn"),
            "k-means / scikit-learn",
        )
        add(
            "Lloyd iterations run (ours / scikit-learn)",
            m.get("ours", {}).get("iterations"),
            m.get("sklearn", {}).get("iterations"),
        )
        add("speed-up per Lloyd iteration", value=r.get("ratio_per_iteration"))
    elif name == "ppo_iteration":
        m = row["measurements"]
        for label, split in (("PPO (first phase)", m.get("ppo")), ("PPO (alternated)", m.get("eppo", {}).get("ppo")),
                             ("EPPO (alternated)", m.get("eppo", {}).get("eppo"))):  # fmt: skip
            if split:
                add(f"{label} iteration s (rollout / scoring / update: {split['rollout_s']:.3f} / "
                    f"{split['scoring_s']:.3f} / {split['update_s']:.3f})", split["iteration_s"])  # fmt: skip
        add("EPPO overhead over PPO, %", value=r.get("eppo_overhead_pct"), tgt="EPPO overhead over PPO, %")
    return lines


def markdown(record: dict) -> str:
    device = record["device"]
    v = record["versions"]
    env = record["env"]
    head = [
        f"# GPU suite: {device['kind']} ({device['platform']}), {record['date']}"
        + (" (--tiny: tiny shapes, a check that the code runs; the numbers mean nothing)" if record["tiny"] else ""),
        "",
        f"`{record['command']}`, started {record['started']}, {record['elapsed_s']} s elapsed of a "
        f"{record['budget_s']:g} s budget; {record['machine']}; commit {record['git_commit'] or 'unknown'}.",
        f"jax {v.get('jax')}, jaxlib {v.get('jaxlib')}, flax {v.get('flax')}, optax {v.get('optax')}, torch "
        f"{v.get('torch')}, transformers {v.get('transformers')}, scikit-learn {v.get('sklearn')}; "
        f"XLA_PYTHON_CLIENT_PREALLOCATE={env['XLA_PYTHON_CLIENT_PREALLOCATE']}, "
        f"XLA_PYTHON_CLIENT_MEM_FRACTION={env['XLA_PYTHON_CLIENT_MEM_FRACTION']}.",
        "",
        "| row | metric | ours | peer | ratio / value | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    body = [line for row in record["rows"] for line in _table_lines(row)]
    notes = [""]
    if record.get("error"):
        notes += [f"**{record['error']}**", ""]
    for row in record["rows"]:
        notes.append(f"## {row['name']}: {row['status']}")
        notes.append("")
        notes.append(row["title"])
        notes.append("")
        notes.append("Settings: " + ", ".join(f"{k} {v}" for k, v in row["settings"].items()
                                              if k != "memory_plan"))  # fmt: skip
        if row["settings"].get("memory_plan"):
            notes.append("")
            notes.append(f"Memory: {row['settings']['memory_plan']}")
        notes.append("")
        walls = ", ".join(f"{k} {v:.1f} s" for k, v in row["wall_s"].items())
        if walls:
            notes.append(f"Wall time per measurement (compilation included): {walls}.")
        for name, why in row["skipped"].items():
            notes.append(f"- skipped {name}: {why}")
        if row["results"].get("attention_fallback"):
            notes.append(f"- ours ran attention as {row['results']['attention_impl']}, since "
                         f"{row['results']['attention_fallback']}")  # fmt: skip
        for name, err in row["errors"].items():
            first = first_line(err, 400)
            notes.append(f"- **error** in {name}: `{first}` (the whole message in the JSON)")
        for label, tr in row["traces"].items():
            notes.append(f"- trace of one {label.removeprefix('trace_')} step: `{tr['path']}`")
            ops = tr.get("top_ops") or {}
            if ops.get("ops"):
                notes.append(f"  top ops ({ops['source']}, {ops['total_ms']:.1f} ms in all):")
                for op in ops["ops"][:8]:
                    share = "" if op["share"] is None else f" ({100 * op['share']:.0f}%)"
                    notes.append(f"  - `{op['name'][:80]}`: {op['ms']:.2f} ms{share}, {op['count']} calls")
            elif ops.get("error"):
                notes.append(f"  (top ops not extracted: {ops['error'].splitlines()[0][:200]})")
        notes.append("")
    return "\n".join(head + body + notes) + "\n"


# ------------------------------------------------------------------------------------------------ main


def row_plan(key: str, shapes: dict, args) -> tuple[str, str, dict, object]:
    """(name, title, settings, function) of one row."""
    rm = shapes["rm"]
    if key == "attention":
        a = shapes["attention"]
        title = (f"Self-attention of the RM step's shape ({a['rows']} right-padded rows x {a['length']} tokens, "
                 f"{a['heads']} heads / {a['kv_heads']} kv heads of {a['head_dim']}, bf16): model.attention_impl="
                 f"{args.attention}" + (" (cuDNN flash attention on a GPU)" if args.attention == "auto" else "") +
                 " against the float32-softmax einsum, forward + backward")  # fmt: skip
        return "attention", title, dict(a), attention_row
    arch = {k: rm[k] for k in ("layers", "width", "heads", "kv_heads", "intermediate", "vocab")}
    model = (f"Llama {rm['layers']} layers x {rm['width']} ({rm['heads']} heads, {rm['kv_heads']} kv heads, "
             f"MLP {rm['intermediate']}, vocab {rm['vocab']})")  # fmt: skip
    if key == "rm":
        remat = "full" if args.rm_remat == "full" else False
        title = (f"RM train step, {model}, {rm['pairs']} pairs x {rm['length']} tokens, bf16 compute with float32 "
                 "master weights and AdamW: ours (standard, and InfoRM with latent 128) against transformers' "
                 "LlamaForSequenceClassification + PyTorch in the same process, the peer first")  # fmt: skip
        settings = {
            **rm, "dtype": "bfloat16", "param_dtype": "float32", "remat": remat,
            "torch_peer": "autocast bf16 over float32 parameters, attn_implementation sdpa, AdamW(fused=True) on "
            "CUDA, gradient checkpointing (non-reentrant) when remat, lr 1e-5, betas (0.9, 0.95), clip 1.0",
            "memory_plan": "(full shape) ours: weights + AdamW moments + gradients 18.4 GiB (fp32), layer inputs "
            "4 GiB, one recomputed layer ~11-13 GiB with the einsum's attention scores [32, 32, 1024, 1024] (the "
            "CPU compiler's analysis: 42.6 GiB, with bf16 operands widened to fp32), a few GiB less with cuDNN "
            "attention (attention_impl auto on the GPU), which keeps no scores: ~30-43 GiB. The peer with "
            "checkpointing ~30 GiB; without, ~95 GiB (H200 only); ours without remat and with the einsum ~320 GiB.",
        }  # fmt: skip
        return "rm_train_step", title, settings, rm_row
    if key == "kmeans":
        title = ("k-means (k-means++ init, Lloyd iterations, scikit-learn's tol 1e-4 rule): ours on the device "
                 "against scikit-learn's KMeans (lloyd, n_init 1) on the host CPU")  # fmt: skip
        return "kmeans", title, {**shapes["kmeans"], "restarts": 1}, kmeans_row
    title = (f"PPO iteration, policy {model} with tied embeddings: rollout / scoring / update, and EPPO's overhead "
             "(eta 2, cached SFT energies) alternated with PPO in one trainer")  # fmt: skip
    settings = {
        **shapes["ppo"], **arch, "dtype": "bfloat16", "param_dtype": "float32", "minibatches": 1,
        "eos": "none (full-length responses)",
        "memory_plan": "(full shape) actor and critic with Adam 27.6 GiB, reference and reward model 9.2 GiB (all "
        "fp32), the update's gradients 9.2 GiB and fp32 logits [16, 128, 128256] ~1 GiB each: ~50-60 GiB.",
    }  # fmt: skip
    return "ppo_iteration", title, settings, ppo_row


def main(argv=None) -> int:
    from inform_jax.models.attention_backends import ATTENTION_IMPLS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="results folder (default: %(default)s)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=270.0,
        help="skip a measurement that would end past this many seconds since the start (%(default)s)",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: checks on the CPU that every path runs")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="a subset of the rows, in order")
    parser.add_argument("--trace", choices=("missed", "always", "never"), default=None,
                        help="profile one step where a target is missed (default), always (default with --tiny, so "
                             "the CPU check covers the profiler), or never")  # fmt: skip
    parser.add_argument("--attention", choices=ATTENTION_IMPLS, default="auto",
                        help="model.attention_impl of the attention and RM rows (default auto: cuDNN on a GPU); where "
                             "it raises, the RM row measures its step with the einsum and says why")  # fmt: skip
    parser.add_argument("--rm-remat", choices=("full", "none"), default="full",
                        help="RM step: recompute every layer in the backward pass on both sides (default) or neither "
                             "(ours then needs ~190 GiB for attention scores at the full shape)")  # fmt: skip
    args = parser.parse_args(argv)
    args.trace = args.trace or ("always" if args.tiny else "missed")
    shapes = SHAPES["tiny" if args.tiny else "full"]
    suite = Suite(args)
    print(f"gpu suite on {suite.device.device_kind}: writing {suite.stem}.json / .md", flush=True)
    if not args.tiny and not suite.gpu:  # e.g. JAX's CUDA plugin failed to start and JAX fell back to the CPU
        suite.record["error"] = (f"JAX runs on {suite.device.platform}, not a GPU: the full shapes would not finish; "
                                 "nothing measured (use --tiny off a GPU)")  # fmt: skip
        suite.save()
        print(suite.record["error"], file=sys.stderr, flush=True)
        return 2
    for key in args.rows:
        name, title, settings, fn = row_plan(key, shapes, args)
        suite.run_row(name, title, settings, fn)
    suite.save()
    print(f"done in {suite.elapsed():.0f} s: {suite.stem}.json / .md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
