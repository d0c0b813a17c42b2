"""CSI, its clustering choices, nearest distances, AUROC and CSI-guided checkpoint selection."""

import jax
import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import roc_auc_score
from sklearn.metrics import silhouette_score as sk_silhouette

from inform_jax.detect.csi import choose_k, csi, csi_from_labels, silhouette_score, tsne_project
from inform_jax.detect.distances import nearest_distances
from inform_jax.detect.selection import auroc, select_checkpoint


def test_nearest_distances_match_brute_force():
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(37, 6)), rng.normal(size=(23, 6))
    d, idx = nearest_distances(q, r, block=8)
    full = np.linalg.norm(q[:, None] - r[None], axis=-1)
    np.testing.assert_array_equal(idx, full.argmin(1))
    np.testing.assert_allclose(d, full.min(1), rtol=1e-5, atol=1e-5)


def test_csi_from_labels_by_hand():
    rlhf = np.array([[3.0, 0.0], [3.0, 0.2], [3.0, -0.2], [0.0, 4.0], [0.0, 5.0]])
    sft = np.array([[0.0, 0.0], [10.0, 10.0]])
    value, table = csi_from_labels(rlhf, [0, 0, 0, 1, 1], sft)
    # cluster 0: centroid (3, 0), 3 points, nearest SFT (0, 0) at 3; cluster 1: centroid (0, 4.5), 2 points, 4.5.
    assert value == pytest.approx(3 * 3.0 + 2 * 4.5, rel=1e-6)
    np.testing.assert_array_equal(table.size, [3, 2])
    np.testing.assert_allclose(table.distance, [3.0, 4.5], rtol=1e-6)
    np.testing.assert_array_equal(table.nearest_sft, [0, 0])
    assert [row["cluster"] for row in table.rows()] == [0, 1]  # 9.0 before 9.0: stable order


def test_csi_known_answer_with_kmeans_and_normalized_variant():
    rng = np.random.default_rng(1)
    sft = rng.normal(scale=0.05, size=(40, 3))
    far = np.array([6.0, 0.0, 0.0]) + rng.normal(scale=0.05, size=(10, 3))
    near = np.array([0.0, 2.0, 0.0]) + rng.normal(scale=0.05, size=(30, 3))
    rlhf = np.concatenate([near, far])
    result = csi(rlhf, sft, k=2)
    expected = sum(len(group) * np.linalg.norm(sft - group.mean(0), axis=1).min() for group in (near, far))
    assert result.csi == pytest.approx(expected, rel=1e-4)
    assert result.csi_per_sample == pytest.approx(expected / 40, rel=1e-4)
    assert sorted(result.clusters.size.tolist()) == [10, 30]
    assert len(np.unique(result.labels[:30])) == 1 and len(np.unique(result.labels[30:])) == 1


def test_outlier_cluster_raises_csi_more_than_fresh_in_distribution_samples():
    """At a fixed N, replacing 20% of RLHF samples by an outlier cluster raises CSI; by fresh SFT-like samples not."""
    wins = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        sft = rng.normal(size=(200, 8))
        base = rng.normal(size=(200, 8))
        fresh = base.copy()
        fresh[:40] = rng.normal(size=(40, 8))
        outliers = base.copy()
        outliers[:40] = 5.0 + rng.normal(scale=0.3, size=(40, 8))
        key = jax.random.key(seed)
        # k by the sqrt rule: one k-means per set keeps this Monte-Carlo test fast (the silhouette rule is tested below)
        wins += csi(outliers, sft, key=key, k_rule="sqrt").csi > 2 * csi(fresh, sft, key=key, k_rule="sqrt").csi
    assert wins == 5


def test_silhouette_matches_scikit_learn():
    x, labels = make_blobs(n_samples=150, centers=4, n_features=5, random_state=3)
    labels[:3] = 4  # a small extra cluster
    labels[3] = 5  # a singleton: scores 0 by convention
    assert silhouette_score(x, labels) == pytest.approx(sk_silhouette(x, labels), rel=1e-4)


def test_choose_k_rules():
    x, _ = make_blobs(n_samples=300, centers=[[0, 0], [10, 0], [0, 10], [10, 10]], cluster_std=0.5, random_state=0)
    k, scores = choose_k(jax.random.key(0), x, k_range=(2, 6))
    assert k == 4 and set(scores) == set(range(2, 7))
    assert choose_k(jax.random.key(0), x, rule="sqrt")[0] == round(np.sqrt(150))
    assert choose_k(jax.random.key(0), x[:5], k_range=(2, 10))[0] in range(2, 5)  # never N
    with pytest.raises(ValueError, match="k_rule"):
        choose_k(jax.random.key(0), x, rule="elbow")


def test_dbscan_clustering_counts_noise_as_singletons_or_drops_it():
    rng = np.random.default_rng(2)
    sft = rng.normal(scale=0.1, size=(30, 2))
    rlhf = np.concatenate([rng.normal(scale=0.1, size=(40, 2)), [[5.0, 5.0]]])  # one isolated outlier
    kept = csi(rlhf, sft, clustering="dbscan", eps=0.3, min_samples=4)
    dropped = csi(rlhf, sft, clustering="dbscan", eps=0.3, min_samples=4, noise="drop")
    assert kept.params["noise_points"] >= 1 and dropped.params["noise_points"] == kept.params["noise_points"]
    assert kept.labels[-1] >= 0 and dropped.labels[-1] == -1
    outlier_term = np.linalg.norm(sft - rlhf[-1], axis=1).min()
    assert kept.csi - dropped.csi >= outlier_term * 0.999
    auto = csi(rlhf, sft, clustering="dbscan")
    assert auto.params["eps_rule"] == "k-distance knee" and auto.params["eps"] > 0


def test_tsne_projection_runs_and_keeps_sample_order():
    rng = np.random.default_rng(4)
    sft = rng.normal(size=(30, 16))
    rlhf = np.concatenate([rng.normal(size=(20, 16)), 12.0 + rng.normal(size=(20, 16))])
    r2, s2 = tsne_project(rlhf, sft, seed=0)
    assert r2.shape == (40, 2) and s2.shape == (30, 2)
    assert 0.0 <= r2.min() and r2.max() <= 1.0
    # The far RLHF half (rows 20..39) must stay together and away from the SFT points in 2-D.
    far_to_sft = np.linalg.norm(r2[20:, None] - s2[None], axis=-1).min(1)
    near_to_sft = np.linalg.norm(r2[:20, None] - s2[None], axis=-1).min(1)
    assert far_to_sft.min() > near_to_sft.max()
    result = csi(rlhf, sft, projection="tsne", k=2)
    assert result.rlhf_points.shape == (40, 2) and result.params["projection"] == "tsne"


def test_auroc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 6, size=200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    with pytest.raises(ValueError, match="both classes"):
        auroc(scores, np.zeros(200, bool))


def test_select_checkpoint_rules():
    steps, values = [0, 10, 20, 30, 40], [5.0, 5.5, 6.0, 9.0, 12.0]
    chosen = select_checkpoint(steps, values)  # threshold 1.5 * 5 = 7.5: first crossing at 30
    assert chosen["selected_step"] == 20 and chosen["crossing_step"] == 30 and chosen["threshold"] == 7.5
    assert select_checkpoint(steps, values, threshold=100.0)["selected_step"] == 40
    assert select_checkpoint(steps, values, threshold=1.0)["selected_step"] == 0
    with pytest.raises(ValueError, match="increase"):
        select_checkpoint([0, 0], [1.0, 2.0])


@pytest.mark.parametrize(
    "rlhf,sft,match",
    [
        (np.zeros((0, 3)), np.zeros((4, 3)), "rlhf_latents is empty"),
        (np.zeros((4, 3)), np.zeros((4, 2)), "sft_latents has dimension 2, expected 3"),
        (np.array([[0.0, np.nan]] * 4), np.zeros((4, 2)), "rlhf_latents contains NaN"),
        (np.zeros(4), np.zeros((4, 1)), "must be 2-D"),
    ],
)
def test_bad_inputs_name_the_argument(rlhf, sft, match):
    with pytest.raises(ValueError, match=match):
        csi(rlhf, sft, k=2)


def test_bad_options_are_named():
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="clustering"):
        csi(x, x, clustering="hdbscan")
    with pytest.raises(ValueError, match="projection"):
        csi(x, x, projection="umap")
    with pytest.raises(ValueError, match="noise"):
        csi(x, x, noise="keep")
    with pytest.raises(ValueError, match="k=30 exceeds"):
        csi(x, x, k=30)
