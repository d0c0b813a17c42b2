"""Detection: CSI (k-means + nearest-SFT distances), DBSCAN and MOP against scikit-learn, in one process.

Peers: CSI = scikit-learn KMeans + pairwise_distances_argmin_min of the centroids to the SFT set; DBSCAN =
sklearn.cluster.DBSCAN; MOP = sklearn LedoitWolf + its Mahalanobis distances. Same data, same k, restarts and
iteration cap; medians after a warm-up (compile) run; the peer's CSI is printed beside ours.

    python benchmarks/detect.py                  # CSI 20000 vs 20000 x 128, k 16; DBSCAN 4000 x 32; MOP
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from _common import median_seconds, save_results

from inform_jax.detect import csi, dbscan, knee_eps, mop


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="RLHF and SFT samples each")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--dbscan-n", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from sklearn.cluster import DBSCAN, KMeans
    from sklearn.covariance import LedoitWolf
    from sklearn.datasets import make_blobs
    from sklearn.metrics import pairwise_distances_argmin_min

    x, _ = make_blobs(2 * args.n, args.dim, centers=args.k, cluster_std=4.0, random_state=0)
    x = x.astype(np.float32)
    rlhf, sft = x[: args.n], x[args.n :]
    rows, result = [], {"n": args.n, "dim": args.dim, "k": args.k, "device": jax.devices()[0].device_kind}

    out = {}

    def ours_csi():
        out["csi"] = csi(rlhf, sft, k=args.k).csi

    def peer_csi():
        km = KMeans(args.k, n_init=args.restarts, max_iter=100, random_state=0).fit(rlhf)
        _, dist = pairwise_distances_argmin_min(km.cluster_centers_, sft)
        out["peer_csi"] = float(np.sum(np.bincount(km.labels_, minlength=args.k) * dist))

    rows.append(("csi", f"CSI {args.n} vs {args.n} x {args.dim}, k-means k {args.k}", ours_csi, peer_csi))

    small, _ = make_blobs(args.dbscan_n, 32, centers=8, cluster_std=2.0, random_state=1)
    eps = knee_eps(small, min_samples=5)  # a realistic eps: the rule `csi(clustering="dbscan")` uses

    def ours_dbscan():
        out["dbscan"] = dbscan(small, eps=eps, min_samples=5).num_clusters

    def peer_dbscan():
        out["peer_dbscan"] = len(set(DBSCAN(eps=eps, min_samples=5).fit(small).labels_) - {-1})

    rows.append(("dbscan", f"DBSCAN {args.dbscan_n} x 32, eps {eps:.2f} (knee)", ours_dbscan, peer_dbscan))

    def ours_mop():
        out["mop"] = mop(rlhf, sft).proportion

    def peer_mop():
        from scipy.stats import chi2

        lw = LedoitWolf().fit(sft)
        out["peer_mop"] = float(np.mean(lw.mahalanobis(rlhf) > chi2.ppf(0.9, args.dim)))

    rows.append(("mop", f"MOP {args.n} vs {args.n} x {args.dim}", ours_mop, peer_mop))

    markdown = "| workload | ours s | scikit-learn s | ratio |\n|---|---|---|---|\n"
    for name, label, ours_fn, peer_fn in rows:
        ours_s, peer_s = median_seconds(ours_fn, args.repeats), median_seconds(peer_fn, args.repeats)
        result[f"{name}_ours_s"], result[f"{name}_sklearn_s"] = ours_s, peer_s
        result[f"{name}_ratio_ours_over_sklearn"] = peer_s / ours_s
        markdown += f"| {label} | {ours_s:.3f} | {peer_s:.3f} | {peer_s / ours_s:.2f} |\n"
    result.update({k: float(v) for k, v in out.items()})
    save_results("detect", result, markdown)


if __name__ == "__main__":
    main()
