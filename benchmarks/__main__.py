"""Every benchmark, one command: runs each script in its own process and writes one summary table.

    python -m benchmarks                     # every workload at its default size (~15 min on 2 CPU cores)
    python -m benchmarks --only kmeans generate   # reruns these two; today's table keeps the other rows
    python -m benchmarks --quick --out /tmp/bench   # tiny sizes: checks that every script runs (~2 min)

Each script writes its own benchmarks/results/<name>-<platform>-<date>.{json,md}; this runner then writes
benchmarks/results/<machine>-<date>.{json,md}: per workload our throughput, the peer's measured in the same
process, the ratio, and the issue's target with whether it is met. A script runs in a fresh process so that one
workload's compiled programs, threads and memory do not leak into the next one's timing.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

# name -> (arguments at the quick size, rows from its result)
Rows = Callable[[dict], list[dict]]


def _row(workload: str, unit: str, ours: float, peer: float | None, target: float | None = None) -> dict:
    """One table row; ``ours`` and ``peer`` are throughputs (higher is better), ratio = ours / peer."""
    ratio = None if peer in (None, 0) else ours / peer
    met = None if target is None or ratio is None else ratio >= target
    return {"workload": workload, "unit": unit, "ours": ours, "peer": peer, "ratio": ratio, "target": target,
            "met": met}  # fmt: skip


def _overhead(workload: str, pct: float, limit_pct: float) -> dict:
    """A row for an overhead (lower is better): ``pct`` over its baseline, met when under ``limit_pct``."""
    return {"workload": workload, "unit": "% over baseline", "ours": pct, "peer": None, "ratio": None,
            "target": f"< {limit_pct:g}%", "met": pct < limit_pct}  # fmt: skip


def _rm_rows(r: dict) -> list[dict]:
    size = f"{r['model']} b{r['batch_pairs']} t{r['length']} {r['dtype']}"
    rows = [_row(f"RM train step, standard, {size} (peer: transformers + AdamW loop)", "tokens/s",
                 r["ours_standard_tokens_per_s"], r.get("torch_tokens_per_s"), 1.5),
            _row(f"RM train step, InfoRM, {size}", "tokens/s", r["ours_inform_tokens_per_s"],
                 r.get("torch_tokens_per_s")),
            _overhead("InfoRM step over the standard RM step", r["inform_overhead_pct"], 2.0)]  # fmt: skip
    if "trl_tokens_per_s" in r:
        rows.insert(1, _row(f"RM train step, standard, {size} (peer: TRL {r['trl']} RewardTrainer)", "tokens/s",
                            r["ours_standard_tokens_per_s"], r["trl_tokens_per_s"]))  # fmt: skip
    if "mfu_inform" in r:
        rows.append({"workload": f"InfoRM step MFU, {size}", "unit": "MFU", "ours": r["mfu_inform"], "peer": None,
                     "ratio": None, "target": ">= 50%", "met": r["mfu_inform"] >= 0.5})  # fmt: skip
    return rows


def _length_mix_rows(r: dict) -> list[dict]:
    s = r["sizes"]
    size = f"{s['layers']}x{s['width']} b{r['batch']}, log-normal lengths, median {r['median_length']}"
    size += f" max {r['max_length']}"
    rows = [
        _row(
            f"RM train step, InfoRM, {size}: buckets (peer: ours padded to max_length)",
            "real tokens/s",
            r["padded_to_bucket"]["real_tokens_per_s"],
            r["padded_to_max_length"]["real_tokens_per_s"],
        )
    ]
    if "torch_padded_to_longest" in r:
        rows.append(
            _row(
                f"RM train step, InfoRM, {size}: buckets (peer: transformers loop padded to longest)",
                "real tokens/s",
                r["padded_to_bucket"]["real_tokens_per_s"],
                r["torch_padded_to_longest"]["real_tokens_per_s"],
            )
        )
    return rows  # fmt: skip


def _generate_rows(r: dict) -> list[dict]:
    size = f"{r['model']} b{r['batch']} p{r['prompt']} n{r['new_tokens']}"
    return [_row(f"greedy decode, {size} (peer: transformers generate)", "tokens/s", r["ours_tokens_per_s"],
                 r["torch_tokens_per_s"], 2.0)]  # fmt: skip


def _forward_rows(r: dict) -> list[dict]:
    return [_row(f"forward, {r['model']} b{r['batch']} t{r['length']} {r['dtype']} (peer: transformers)",
                 "tokens/s", r["ours_tokens_per_s"], r.get("torch_tokens_per_s"))]  # fmt: skip


def _kmeans_rows(r: dict) -> list[dict]:
    return [_row(f"k-means {r['n']}x{r['dim']}, k {r['k']}, {r['restarts']} restarts (peer: scikit-learn)", "runs/s",
                 1 / r["ours_s"], 1 / r["sklearn_s"], 2.0)]  # fmt: skip


def _detect_rows(r: dict) -> list[dict]:
    names = {"csi": f"CSI {r['n']} vs {r['n']} x {r['dim']}, k {r['k']}", "dbscan": "DBSCAN outliers",
             "mop": f"MOP {r['n']} vs {r['n']} x {r['dim']}"}  # fmt: skip
    return [_row(f"{name} (peer: scikit-learn)", "runs/s", 1 / r[f"{key}_ours_s"], 1 / r[f"{key}_sklearn_s"])
            for key, name in names.items()]  # fmt: skip


def _ppo_rows(r: dict) -> list[dict]:
    rows = [{"workload": f"PPO iteration, {r['model']}, {r['prompts']} prompts x {r['new_tokens']} tokens "
             f"(rollout / scoring / update s: {p['rollout_s']:.2f} / {p['scoring_s']:.2f} / {p['update_s']:.2f})",
             "unit": "iterations/s", "ours": 1 / p["iteration_s"], "peer": None, "ratio": None, "target": None,
             "met": None} for p in [r["ppo"]]]  # fmt: skip
    rows.append(_overhead("EPPO over PPO, cached SFT energies", r["eppo-cached"]["overhead_pct"], 3.0))
    rows.append({**_overhead("EPPO over PPO, per-batch SFT regeneration (the authors' code)",
                             r["eppo-regenerate"]["overhead_pct"], 3.0), "target": None, "met": None})  # fmt: skip
    return rows


def _decomposition_rows(r: dict) -> list[dict]:
    workload = f"decomposition scoring, {r['pairs']} pairs x {r['prompts_per_pair']} prompts, {r['model']}"
    return [_row(f"{workload} (peer: transformers, batched)", "pairs/s", r["ours_pairs_per_s"], r["torch_pairs_per_s"])]


def _attention_rows(r: dict) -> list[dict]:
    shape = f"{r['rows']} x {r['length']}, {r['heads']} heads of {r['head_dim']}"
    return [_row(f"attention fwd+bwd, {impl}, {shape} (peer: torch SDPA)", "calls/s", 1e3 / o["ms"],
                 1e3 / o["torch_ms"]) for impl, o in r["ours"].items()]  # fmt: skip


def _lab_seeds_rows(r: dict) -> list[dict]:
    workload = (f"lab PPO iteration, {r['seeds']} seeds vmapped, {r['model']}, {r['rollouts']} x {r['new_tokens']} "
                "tokens (peer: the seeds one after another)")  # fmt: skip
    it = r["iteration"]
    return [_row(workload, "seed-iterations/s", r["seeds"] / it["vmapped_s"], r["seeds"] / it["loop_s"])]


def _scaling_rows(r: dict) -> list[dict]:
    """The largest point of each curve (the whole curves are in scaling-*.json/png)."""
    rows = []
    for axis, points in r["curves"].items():
        p = points[-1]
        peer = p["tokens"] / p["torch_s"] if "torch_s" in p else None
        workload = f"RM train step scaling ({axis} curve), {r['model']} b{p['batch']} t{p['length']}"
        rows.append(_row(workload, "tokens/s", p["tokens"] / p["standard_s"], peer))
    return rows


BENCHMARKS: dict[str, tuple[list[str], Rows]] = {
    "rm_train_step": (["--layers", "1", "--width", "64", "--batch", "2", "--length", "32", "--repeats", "2"],
                      _rm_rows),
    "rm_length_mix": (["--layers", "1", "--width", "64", "--batch", "2", "--steps", "2", "--median", "40",
                       "--max-length", "256"], _length_mix_rows),
    "generate": (["--layers", "1", "--width", "64", "--batch", "2", "--prompt", "8", "--new-tokens", "8",
                  "--repeats", "2"], _generate_rows),
    "forward": (["--layers", "1", "--width", "64", "--batch", "2", "--length", "32", "--repeats", "2"], _forward_rows),
    "kmeans": (["--n", "2000", "--dim", "8", "--k", "4", "--restarts", "2", "--repeats", "2"], _kmeans_rows),
    "detect": (["--n", "500", "--dim", "8", "--k", "4", "--dbscan-n", "300", "--repeats", "2"], _detect_rows),
    "ppo_iteration": (["--layers", "1", "--width", "64", "--vocab", "256", "--prompts", "4", "--prompt-len", "4",
                       "--new-tokens", "4", "--iterations", "2"], _ppo_rows),
    "decomposition": (["--layers", "1", "--width", "64", "--pairs", "4", "--prompts-per-pair", "2", "--length", "16",
                       "--repeats", "2"], _decomposition_rows),
    "attention": (["--rows", "2", "--length", "128", "--heads", "2", "--head-dim", "16", "--repeats", "2"],
                  _attention_rows),
    "scaling": (["--layers", "1", "--width", "64", "--lengths", "16", "32", "--batches", "1", "2", "--repeats", "1"],
                _scaling_rows),
    "lab_seeds": (["--seeds", "2", "--layers", "1", "--width", "32", "--prompts", "4", "--new-tokens", "4",
                   "--repeats", "1"], _lab_seeds_rows),
}  # fmt: skip


def machine_name(results: dict[str, dict]) -> str:
    """``<accelerator or cpu>-<n>cpu``, the results file's machine part, from the device the scripts ran on (the
    runner itself never starts JAX: on a GPU it would hold most of the memory while the scripts run)."""
    kind = next((r["device"] for r in results.values() if "device" in r), "cpu")
    kind = "cpu" if kind.lower() == "cpu" else kind.lower().replace(" ", "-")
    return f"{kind}-{os.cpu_count()}cpu"


def run_script(name: str, args: list[str], out: str) -> dict:
    """Run benchmarks/<name>.py in a fresh process with results going to ``out``; returns its result dict."""
    env = {**os.environ, "INFORM_JAX_BENCH_RESULTS": out}
    proc = subprocess.run([sys.executable, os.path.join(HERE, f"{name}.py"), *args], env=env, capture_output=True,
                          text=True)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"benchmarks/{name}.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = todays_result(name, out)
    if result is None:
        raise RuntimeError(f"benchmarks/{name}.py wrote no result to {out}")
    return result


def todays_result(name: str, out: str) -> dict | None:
    """The newest result benchmarks/<name>.py wrote to ``out`` today (any platform), if any."""
    paths = glob.glob(os.path.join(out, f"{name}-*-{datetime.date.today().isoformat()}.json"))
    if not paths:
        return None
    with open(max(paths, key=os.path.getmtime)) as f:
        return json.load(f)


def markdown_table(rows: list[dict]) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| workload | unit | ours | peer | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        target = r["target"] if isinstance(r["target"], str) else None if r["target"] is None else f">= {r['target']}x"
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        lines.append(f"| {r['workload']} | {r['unit']} | {fmt(r['ours'])} | {fmt(r['peer'])} | {fmt(r['ratio'])} "
                     f"| {target or '-'} | {met} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="a subset of the workloads")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check that every script runs")
    parser.add_argument("--out", default=RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    date = datetime.date.today().isoformat()
    # A partial rerun (--only) updates today's table: the other workloads' rows come from the results their
    # scripts wrote today in the same folder.
    per_script = {} if not args.only else {name: r for name in BENCHMARKS if (r := todays_result(name, args.out))}
    for name in args.only or BENCHMARKS:
        quick_args, _ = BENCHMARKS[name]
        print(f"== {name}", flush=True)
        per_script[name] = run_script(name, quick_args if args.quick else [], args.out)
    rows = [row for name in BENCHMARKS if name in per_script for row in BENCHMARKS[name][1](per_script[name])]
    system = f"{platform.machine()}, {platform.system()} {platform.release()}"
    summary = {"machine": machine_name(per_script), "platform": system,
               "date": date, "quick": args.quick, "command": "python -m benchmarks " + " ".join(argv or sys.argv[1:])
               + (" (the other rows: today's earlier runs of their scripts)" if args.only else ""),
               "rows": rows, "results": per_script}  # fmt: skip
    stem = os.path.join(args.out, f"{summary['machine']}-{date}")
    with open(stem + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    table = markdown_table(rows)
    with open(stem + ".md", "w") as f:
        f.write(f"Machine {summary['machine']} ({summary['platform']}), {date}: `{summary['command']}`\n\n{table}")
    print(table)
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
