"""Detecting overoptimization in a reward model's latent space: k-means, CSI, DBSCAN, MOP, latent extraction,
checkpoint selection and plots (docs/reference.md sections 1-2)."""

from inform_jax.detect.csi import ClusterTable, CSIResult, choose_k, csi, csi_from_labels, silhouette_score
from inform_jax.detect.dbscan import DBSCANResult, dbscan, knee_eps
from inform_jax.detect.distances import nearest_distances
from inform_jax.detect.kmeans import KMeansResult, kmeans
from inform_jax.detect.outliers import MOPResult, mop
from inform_jax.detect.selection import auroc, select_checkpoint

__all__ = [
    "CSIResult",
    "ClusterTable",
    "DBSCANResult",
    "KMeansResult",
    "MOPResult",
    "auroc",
    "choose_k",
    "csi",
    "csi_from_labels",
    "dbscan",
    "kmeans",
    "knee_eps",
    "mop",
    "nearest_distances",
    "select_checkpoint",
    "silhouette_score",
]
