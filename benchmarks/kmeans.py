"""k-means: our jitted k-means against scikit-learn's KMeans on the same data, in one process.

Same k, restarts (n_init) and iteration cap; times are medians after a warm-up (compile) run; the
inertias are reported so speed is not bought with worse clusterings.

    python benchmarks/kmeans.py                   # 100000 x 128 latents (InfoRM-sized), k 16, 4 restarts
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from _common import median_seconds, save_results

from inform_jax.detect.kmeans import kmeans


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs

    x, _ = make_blobs(args.n, args.dim, centers=args.k, cluster_std=4.0, random_state=0)
    x = x.astype(np.float32)
    xj = jax.device_put(x)
    ours = {}

    def run_ours():
        ours["result"] = kmeans(jax.random.key(0), xj, args.k, iterations=args.iterations, restarts=args.restarts)
        ours["result"].inertia.block_until_ready()

    peer = {}

    def run_peer():
        peer["model"] = KMeans(args.k, n_init=args.restarts, max_iter=args.iterations, random_state=0).fit(x)

    ours_s = median_seconds(run_ours, args.repeats)
    peer_s = median_seconds(run_peer, args.repeats)
    result = {
        "n": args.n, "dim": args.dim, "k": args.k, "restarts": args.restarts,
        "ours_s": ours_s, "sklearn_s": peer_s, "ratio_ours_over_sklearn": peer_s / ours_s,
        "ours_inertia": float(ours["result"].inertia), "sklearn_inertia": float(peer["model"].inertia_),
        "device": jax.devices()[0].device_kind,
    }  # fmt: skip
    markdown = (
        "| workload | ours s | scikit-learn s | ratio |\n|---|---|---|---|\n"
        f"| k-means {args.n}x{args.dim}, k {args.k}, {args.restarts} restarts | {ours_s:.3f} | {peer_s:.3f} | "
        f"{peer_s / ours_s:.2f} |\n"
    )
    save_results("kmeans", result, markdown)


if __name__ == "__main__":
    main()
