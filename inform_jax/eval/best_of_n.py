"""Best-of-n from one pool of samples: the unbiased estimator, best-of-n's KL from the base policy, and Gao et al.'s
fitted curve.

Best-of-n draws n samples of a policy for a prompt and keeps the one a proxy reward scores highest. With a pool of
N >= n samples of that prompt, every size-n subset is a possible draw, and the value (gold reward, proxy reward, a
hacking label) of the kept sample can be averaged over all C(N, n) subsets at once: sorted by proxy ascending, the
i-th smallest sample (1-indexed) is a subset's maximum exactly when it is in the subset and the other n - 1 members
come from the i - 1 below it, which happens in C(i - 1, n - 1) of the C(N, n) subsets (Nakano et al. 2021, Gao et
al. 2022). This estimates best-of-n's expected value without bias for every n <= N from the same N samples, with far
less variance than splitting the pool into disjoint draws of n.

    values = best_of_n(proxy, gold, ns=[1, 2, 4])      # proxy, gold: [P, N] -> [3, P]
    kl = bon_kl([1, 2, 4])                             # [0, 0.19, 0.64] nats
    alpha, beta = fit_bon_curve(kl, values.mean(1) - values[0].mean())

Ties in the proxy: a best-of-n draw whose maximum is tied keeps one of the tied samples uniformly at random. Under
that rule a tied block's samples are interchangeable, so each rank inside the block holds the block's mean value;
the estimator replaces every sample's value by the mean over its tie block and weights the ranks as above. The
result does not depend on the order of the samples in the pool.

KL: best-of-n's KL from the base policy is log n - (n - 1) / n (Stiennon et al. 2020): exact when the proxy has no
ties (a continuous reward; the kept sample's quantile is then Beta(n, 1)), an upper bound otherwise (Beirami et al.
2024). Gao et al. plot rewards against d = sqrt(KL) and fit the gain over the base policy as R(d) = d (alpha - beta d).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import gammaln


def bon_kl(n) -> np.ndarray:
    """KL (nats) of best-of-n from the base policy, log n - (n - 1) / n, for n >= 1 (scalar or array)."""
    n = np.asarray(n, np.float64)
    if np.any(n < 1):
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    return np.log(n) - (n - 1) / n


def bon_weights(pool_size: int, n: int) -> np.ndarray:
    """[N] float64: the probability that the i-th smallest of N samples (ascending, 0-indexed here) is the maximum
    of a uniformly random size-n subset, C(i, n - 1) / C(N, n) with i the 0-indexed rank; zero below rank n - 1.
    Computed from log-gamma, so N in the thousands and any n <= N stay finite (C(256, 128) is ~1e76)."""
    if not 1 <= n <= pool_size:
        raise ValueError(f"best-of-n needs 1 <= n <= pool size, got n={n} for a pool of {pool_size}")
    below = np.arange(pool_size, dtype=np.float64)  # samples below each rank: i - 1 in the 1-indexed formula
    # log C(below, n - 1); ranks with fewer than n - 1 samples below are masked (their gammaln argument is <= 0)
    log_choose = gammaln(below + 1) - gammaln(n) - gammaln(np.maximum(below - n + 2, 1))
    log_total = gammaln(pool_size + 1) - gammaln(n + 1) - gammaln(pool_size - n + 1)
    return np.where(below >= n - 1, np.exp(log_choose - log_total), 0.0)


def tie_averaged(proxy, values) -> np.ndarray:
    """values [..., N] sorted by ``proxy`` [..., N] ascending, each replaced by the mean over the samples whose proxy
    equals its own (float64): the value a uniformly random choice among tied samples has at that rank."""
    proxy, values = np.asarray(proxy, np.float64), np.asarray(values, np.float64)
    if proxy.shape != values.shape or proxy.ndim < 1:
        raise ValueError(f"proxy and values need one shape [..., N], got {proxy.shape} and {values.shape}")
    if not np.all(np.isfinite(proxy)):
        raise ValueError("the proxy scores must be finite to rank them")
    size = proxy.shape[-1]
    p, v = proxy.reshape(-1, size), values.reshape(-1, size)
    order = np.argsort(p, axis=-1, kind="stable")
    p, v = np.take_along_axis(p, order, -1), np.take_along_axis(v, order, -1)
    starts = np.ones(p.shape, bool)
    starts[:, 1:] = p[:, 1:] != p[:, :-1]
    # one id per tie block, distinct across rows, so one bincount averages every block of every row
    block = np.cumsum(starts, axis=-1) - 1 + np.arange(len(p))[:, None] * size
    sums = np.bincount(block.ravel(), v.ravel(), minlength=p.size)
    counts = np.bincount(block.ravel(), minlength=p.size)
    return (sums / np.maximum(counts, 1))[block].reshape(proxy.shape)


def best_of_n(proxy, values, ns: Sequence[int]) -> np.ndarray:
    """[len(ns), ...] float64: the expected value of the sample best-of-n keeps, for each n in ``ns``, from pools
    ``proxy`` (the scores best-of-n ranks by) and ``values`` (what is read off the kept sample), both [..., N]:
    the mean over all size-n subsets of each pool (ties in the proxy split evenly, see the module doc)."""
    ranked = tie_averaged(proxy, values)
    size = ranked.shape[-1]
    return np.stack([ranked @ bon_weights(size, int(n)) for n in ns])


def fit_bon_curve(kl, gain) -> tuple[float, float]:
    """(alpha, beta) of Gao et al.'s best-of-n form gain = d (alpha - beta d), d = sqrt(kl), by least squares.

    kl, gain: [K], the gain over the base policy (n = 1, where kl = 0 and the gain is 0 by construction). The form
    has no intercept, so n = 1 adds nothing to the fit; at least two distinct kl > 0 are needed."""
    kl, gain = np.asarray(kl, np.float64), np.asarray(gain, np.float64)
    if kl.shape != gain.shape or kl.ndim != 1:
        raise ValueError(f"kl and gain need one shape [K], got {kl.shape} and {gain.shape}")
    if np.unique(kl[kl > 0]).size < 2:
        raise ValueError("fitting alpha and beta needs at least two distinct KL values above 0")
    d = np.sqrt(kl)
    (alpha, beta), *_ = np.linalg.lstsq(np.stack([d, -(d**2)], axis=-1), gain, rcond=None)
    return float(alpha), float(beta)


def bon_curve(kl, alpha: float, beta: float) -> np.ndarray:
    """Gao et al.'s best-of-n gain d (alpha - beta d) at d = sqrt(kl)."""
    d = np.sqrt(np.asarray(kl, np.float64))
    return d * (alpha - beta * d)


def powers_of_two(pool_size: int) -> list[int]:
    """1, 2, 4, ... up to ``pool_size`` (and ``pool_size`` itself when it is not a power of two)."""
    ns = [1 << k for k in range(pool_size.bit_length()) if 1 << k <= pool_size]
    return ns if ns[-1] == pool_size else [*ns, pool_size]
