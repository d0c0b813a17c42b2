"""Scaling curves of the reward-model train step: step time against sequence length and against batch size,
ours (standard RM and InfoRM) and the PyTorch loop of `rm_train_step.py`, side by side in one process.

    python benchmarks/scaling.py                       # 2-layer 256-wide Llama; lengths 64..512, batches 1..16
    python benchmarks/scaling.py --lengths 32 64 --batches 1 2 --repeats 2 --width 64 --layers 1   # quick

Writes benchmarks/results/scaling-<platform>-<date>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os

from _common import RESULTS, save_results
from rm_train_step import bench_ours, bench_torch, make_pairs, model_sizes


def point(sizes: dict, batch: int, length: int, repeats: int, dtype: str, torch_peer: bool) -> dict:
    """Seconds per step of ours (standard, InfoRM) and the peer at one (batch, length)."""
    pairs = make_pairs(batch, length)
    out = {"batch": batch, "length": length, "tokens": 2 * batch * length}
    out["standard_s"] = bench_ours("standard", sizes, pairs, dtype, repeats)["seconds"]
    out["inform_s"] = bench_ours("inform", sizes, pairs, dtype, repeats)["seconds"]
    if torch_peer:
        out["torch_s"] = bench_torch(sizes, pairs, dtype, repeats)["seconds"]
        out["ratio_ours_over_torch"] = out["torch_s"] / out["standard_s"]
    return out


def figure(path: str, curves: dict[str, list[dict]], title: str) -> str:
    from inform_jax.detect.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (axis, rows) in zip(axes, curves.items(), strict=True):
        x = [r[axis] for r in rows]
        for key, label in (("standard_s", "ours, standard RM"), ("inform_s", "ours, InfoRM"), ("torch_s", "PyTorch")):
            if key in rows[0]:
                ax.plot(x, [r[key] * 1e3 for r in rows], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("ms per train step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(plt, fig, path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--length-batch", type=int, default=4, help="pairs per step on the length curve")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--batch-length", type=int, default=128, help="tokens per sequence on the batch curve")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    sizes = model_sizes(args.layers, args.width)
    peer = not args.no_torch
    curves = {
        "length": [point(sizes, args.length_batch, t, args.repeats, args.dtype, peer) for t in args.lengths],
        "batch": [point(sizes, b, args.batch_length, args.repeats, args.dtype, peer) for b in args.batches],
    }
    model = f"llama {args.layers}x{args.width} {args.dtype}"
    result = {"model": model, "length_curve_batch": args.length_batch, "batch_curve_length": args.batch_length,
              "curves": curves}  # fmt: skip
    lines = ["| curve | batch | length | standard ms | InfoRM ms | torch ms | ratio |\n|---|---|---|---|---|---|---|\n"]
    for axis, rows in curves.items():
        for r in rows:
            torch_ms = f"{r['torch_s'] * 1e3:.1f}" if "torch_s" in r else "-"
            ratio = f"{r['ratio_ours_over_torch']:.2f}" if "ratio_ours_over_torch" in r else "-"
            lines.append(f"| {axis} | {r['batch']} | {r['length']} | {r['standard_s'] * 1e3:.1f} | "
                         f"{r['inform_s'] * 1e3:.1f} | {torch_ms} | {ratio} |\n")  # fmt: skip
    stem = save_results("scaling", result, "".join(lines))
    figure(stem + ".png", curves, f"RM train step scaling, {model}")
    print(f"figure: {os.path.relpath(stem + '.png', os.path.dirname(RESULTS))}")


if __name__ == "__main__":
    main()
