"""Overoptimization detection measured as a detector (experiments/lab/PROTOCOL.md section 6), in NumPy.

A lab run (:func:`inform_jax.lab.runs.run_method`, with the demo's SFT reading prepended to its checkpoints)
records three series; every alarm rule here reads one of them and never the gold reward:

- ``detection`` (every ``detect_every`` iterations): entries ``{"iteration", "csi", ...}``, CSI of the policy's
  greedy outputs against the SFT policy's in InfoRM's latent space; the MOP rule reads ``"mop"`` from the same
  entries, which the lab does not record yet (see :func:`mop_alarm`).
- ``metrics`` (every iteration, the PPO trainer's metrics.jsonl rows): ``"iteration"``, ``"kl"`` (the rollouts'
  KL estimate, summed per response), ``"final_layer_energy"`` and ``"energy_reference_layer{l}"`` per layer.
- ``checkpoints`` (every ``eval_every`` iterations, the SFT reading at 0 first): ``"checkpoint"`` (the iteration),
  ``"kl"`` (exact KL from SFT on held-out samples), ``"gold"``.

Each rule turns its series into a statistic ``s_t`` (blind to gold) and alarms at the first recorded iteration
with ``s_t > threshold``, so raising the threshold can only delay an alarm or remove it: every rule is monotone in
its threshold, which is what makes a threshold sweep a clean trade-off curve. Smoothing is trailing (the mean of
the last ``window`` values), never centred: an alarm at iteration t may only use what was recorded up to t.

Ground truth comes from the held-out gold only (:func:`gold_truth`): the peak of the gold curve smoothed over 3
checkpoints (centred: this is hindsight, not an alarm) and whether the run over-optimized at all (the smoothed
gold ended at least ``min_fall`` below that peak). :func:`evaluate_detectors` scores every rule on a set of runs:
false alarms on the protocol's negatives (the oracle arm and PPO w/ KL) and on every run whose gold never fell,
misses, and for the runs that did over-optimize the alarm's lag behind the gold peak in iterations and the gold
lost by stopping there. :func:`sweep` and :func:`compare_at_false_alarm_rate` compare rules at equal false-alarm
rates rather than at thresholds chosen one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inform_jax.eval.matched_kl import smooth as centred_smooth
from inform_jax.lab.report import csi_alarm


class NotRecorded(KeyError):
    """A run lacks the series (or the key) a rule reads: the rule is not measurable on it."""


# ------------------------------------------------------------------------------------------------ building blocks


def trailing_mean(values: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Causal moving average: ``out[t] = mean(values[max(0, t - window + 1) : t + 1])``.

    Args:
      values: ``[T]`` in recording order.
      window: positive width; 1 is the identity.

    Returns:
      ``[T]`` float64.
    """
    if window < 1:
        raise ValueError(f"window must be a positive integer, got {window}")
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return x
    cumsum = np.concatenate([[0.0], np.cumsum(x)])
    hi = np.arange(1, x.size + 1)
    lo = np.maximum(hi - window, 0)
    return (cumsum[hi] - cumsum[lo]) / (hi - lo)


def first_above(iterations: Sequence[int] | np.ndarray, statistic: Sequence[float] | np.ndarray, threshold: float):
    """The first of ``iterations`` [T] whose ``statistic`` [T] is strictly above ``threshold``; None if none is."""
    above = np.flatnonzero(np.asarray(statistic, np.float64) > threshold)
    return int(np.asarray(iterations)[above[0]]) if above.size else None


def _column(series: Sequence[Mapping], key: str, what: str) -> np.ndarray:
    missing = [i for i, entry in enumerate(series) if key not in entry]
    if missing:
        raise NotRecorded(f"{what}: {len(missing)} of {len(series)} entries lack {key!r} (first at index {missing[0]})")
    return np.array([entry[key] for entry in series], np.float64)


def _iterations(series: Sequence[Mapping], key: str = "iteration") -> np.ndarray:
    return np.array([int(entry[key]) for entry in series], np.int64)


def last_layer(metrics: Sequence[Mapping]) -> int:
    """``L - 1`` for a policy of L layers, read from the ``energy_reference_layer{l}`` keys of the metrics rows."""
    prefix = "energy_reference_layer"
    layers = [int(k[len(prefix) :]) for k in (metrics[0] if metrics else {}) if k.startswith(prefix)]
    if not layers:
        raise NotRecorded("energy: the metrics rows carry no energy_reference_layer{l} keys")
    return max(layers)


# ------------------------------------------------------------------------------------------------ statistics


def csi_statistic(detection: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray]:
    """(iterations [T], CSI / CSI at the first detection [T]): the ratio :func:`csi_alarm` compares to its factor.

    Used for threshold grids only; the alarm itself is :func:`inform_jax.lab.report.csi_alarm` (``csi > factor x
    first``), which agrees with ``ratio > factor`` whenever the first CSI is positive."""
    csi = _column(detection, "csi", "CSI")
    if csi.size == 0:
        return np.zeros(0, np.int64), csi
    first = csi[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(first > 0, csi / first, np.where(csi > 0, np.inf, 0.0))
    return _iterations(detection), ratio


def mop_statistic(detection: Sequence[Mapping], window: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(iterations [T], the fraction of policy outputs MOP flags, trailing mean over ``window`` detections [T])."""
    return _iterations(detection), trailing_mean(_column(detection, "mop", "MOP"), window)


def energy_gap(
    metrics: Sequence[Mapping], window: int = 5, layer: int | None = None, policy_key: str = "final_layer_energy"
) -> tuple[np.ndarray, np.ndarray]:
    """(iterations [T], |policy energy - SFT energy on the same rollouts|, trailing mean over ``window`` [T]).

    The policy side is ``policy_key`` (the trainer's ``final_layer_energy``, at the configured ``energy.site``), the
    SFT side ``energy_reference_layer{layer}`` (``layer`` None: the last, L - 1). The two are the same quantity at
    the default site (residual stream, normalized); for a run with ``energy.site: mlp`` pass
    ``policy_key=f"energy_policy_layer{L - 1}"`` so both sides are read at the same site. The gap is smoothed
    rather than the two energies because rollout batches are small and the gap is what EPPO's Fig. 1 shows
    growing."""
    layer = last_layer(metrics) if layer is None else layer
    policy = _column(metrics, policy_key, "energy")
    reference = _column(metrics, f"energy_reference_layer{layer}", "energy")
    return _iterations(metrics), trailing_mean(np.abs(policy - reference), window)


def kl_statistic(metrics: Sequence[Mapping], window: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(iterations [T], the rollouts' KL estimate ``kl``, trailing mean over ``window`` iterations [T])."""
    return _iterations(metrics), trailing_mean(_column(metrics, "kl", "KL"), window)


def heldout_kl_statistic(checkpoints: Sequence[Mapping], window: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(iterations [C], held-out exact KL from SFT, trailing mean over ``window`` checkpoints [C])."""
    return _iterations(checkpoints, "checkpoint"), trailing_mean(_column(checkpoints, "kl", "held-out KL"), window)


# ------------------------------------------------------------------------------------------------ alarm rules


def csi_rule(detection: Sequence[Mapping], factor: float = 2.0) -> int | None:
    """First iteration at which CSI exceeds ``factor`` x its first value (the report's and the studies' rule)."""
    _column(detection, "csi", "CSI")  # a missing key is "not recorded", not a KeyError deep inside csi_alarm
    return csi_alarm(list(detection), factor)


def mop_alarm(detection: Sequence[Mapping], threshold: float = 0.5, window: int = 1) -> int | None:
    """First iteration at which the MOP fraction (trailing mean over ``window`` detections) exceeds ``threshold``.

    Reads ``"mop"`` from the detection entries: :func:`inform_jax.detect.outliers.mop`'s ``proportion`` of the
    policy's probe latents against the SFT probe latents. Under the null (outputs still SFT-like) the fraction is
    about the test level ``alpha`` (0.1 by default), so thresholds well above alpha are meaningful. The lab's
    ``run_method`` does not record it yet: its detection callback must add ``"mop": mop(probe_out["latents"],
    sft_probe["latents"]).proportion`` (as :class:`inform_jax.train.ppo.detect.TrainingDetector` does)."""
    return first_above(*mop_statistic(detection, window), threshold)


def energy_alarm(
    metrics: Sequence[Mapping],
    threshold: float = 0.02,
    window: int = 5,
    layer: int | None = None,
    policy_key: str = "final_layer_energy",
) -> int | None:
    """First iteration at which the smoothed |policy - SFT| final-layer energy gap exceeds ``threshold``
    (:func:`energy_gap`)."""
    return first_above(*energy_gap(metrics, window, layer, policy_key), threshold)


def kl_alarm(metrics: Sequence[Mapping], threshold: float = 2.0, window: int = 5) -> int | None:
    """The baseline: first iteration at which the smoothed rollout KL exceeds ``threshold`` (nats)."""
    return first_above(*kl_statistic(metrics, window), threshold)


def heldout_kl_alarm(checkpoints: Sequence[Mapping], threshold: float = 2.0, window: int = 1) -> int | None:
    """The baseline on the held-out readings: first checkpoint whose exact KL from SFT exceeds ``threshold``."""
    return first_above(*heldout_kl_statistic(checkpoints, window), threshold)


@dataclass(frozen=True)
class Rule:
    """One detector: which run series it reads, its alarm ``alarm(series, threshold) -> iteration | None``, the
    statistic it thresholds ``statistic(series) -> (iterations [T], values [T])`` (for threshold grids), and its
    default threshold (arbitrary: compare rules with :func:`sweep`, not at their defaults)."""

    source: str  # "detection" | "metrics" | "checkpoints"
    alarm: Callable[[Sequence[Mapping], float], int | None]
    statistic: Callable[[Sequence[Mapping]], tuple[np.ndarray, np.ndarray]]
    threshold: float


RULES: dict[str, Rule] = {
    "CSI": Rule("detection", csi_rule, csi_statistic, 2.0),
    "MOP": Rule("detection", mop_alarm, mop_statistic, 0.5),
    "energy": Rule("metrics", energy_alarm, energy_gap, 0.02),
    "KL (rollouts)": Rule("metrics", kl_alarm, kl_statistic, 2.0),
    "KL (held-out)": Rule("checkpoints", heldout_kl_alarm, heldout_kl_statistic, 2.0),
}


# ------------------------------------------------------------------------------------------------ ground truth


def gold_truth(checkpoints: Sequence[Mapping], *, window: int = 3, min_fall: float = 0.05) -> dict[str, Any]:
    """What an ideal detector would know, from the held-out gold curve.

    Args:
      checkpoints: ``[C]`` held-out readings in training order, each with ``checkpoint`` (iteration) and ``gold``.
      window: centred smoothing width over checkpoints (:func:`inform_jax.eval.matched_kl.smooth`, as the lab's
        overoptimization summary uses): hindsight is allowed here, never in an alarm.
      min_fall: the run over-optimized when the smoothed gold ended at least this far below its smoothed peak.

    Returns:
      ``iterations`` [C], ``gold`` [C] (smoothed), ``peak_index``, ``peak_iteration``, ``gold_peak`` (smoothed),
      ``gold_final`` (smoothed), ``fall`` (peak minus final) and ``overoptimized``.
    """
    if not checkpoints:
        raise NotRecorded("ground truth: the run has no held-out checkpoints")
    iterations = _iterations(checkpoints, "checkpoint")
    gold = centred_smooth(_column(checkpoints, "gold", "ground truth"), window)
    peak = int(np.argmax(gold))  # the first of tied maxima: the earliest point at which stopping was best
    fall = float(gold[peak] - gold[-1])
    return {"iterations": iterations, "gold": gold, "peak_index": peak, "peak_iteration": int(iterations[peak]),
            "gold_peak": float(gold[peak]), "gold_final": float(gold[-1]), "fall": fall,
            "overoptimized": bool(fall >= min_fall)}  # fmt: skip


def gold_at(truth: Mapping[str, Any], iteration: float) -> float:
    """The smoothed held-out gold at ``iteration``, linear between checkpoints, held flat beyond the first and last
    ones (an alarm after the last checkpoint reads the last one)."""
    return float(np.interp(iteration, truth["iterations"], truth["gold"]))


# ------------------------------------------------------------------------------------------------ evaluation


def _is_negative(key: str, result: Mapping, negatives: Iterable[str]) -> bool:
    # Several seeds of one method come as distinct keys ("PPO w/ KL/seed1"); run_method's "name" is the method.
    negatives = set(negatives)
    return key in negatives or result.get("name") in negatives


def run_alarms(
    runs: Mapping[str, Mapping], rule: Rule, thresholds: Sequence[float]
) -> dict[str, list[int | None]] | dict[str, str]:
    """Each run's alarm iteration at every threshold: ``{run: [alarm | None] * len(thresholds)}``; the runs that do
    not record the rule's series map to the reason instead (a str)."""
    out: dict[str, Any] = {}
    for key, result in runs.items():
        series = result.get(rule.source)
        if series is None:
            out[key] = f"no {rule.source!r} series"
            continue
        try:
            out[key] = [rule.alarm(series, float(t)) for t in thresholds]
        except NotRecorded as e:
            out[key] = str(e.args[0])
    return out


def _score(alarms: Mapping[str, int | None], truths: Mapping[str, dict], negative: Mapping[str, bool]) -> dict:
    """Scores of one rule at one threshold from each run's alarm (see :func:`evaluate_detectors`)."""
    negatives = [k for k in alarms if negative[k]]
    flat = [k for k in alarms if not truths[k]["overoptimized"]]
    positives = [k for k in alarms if truths[k]["overoptimized"] and not negative[k]]
    per_run = {}
    for key, alarm in alarms.items():
        t = truths[key]
        row = {"alarm": alarm, "negative": negative[key], "overoptimized": t["overoptimized"],
               "peak_iteration": t["peak_iteration"], "gold_peak": t["gold_peak"]}  # fmt: skip
        if alarm is not None:
            row["lag"] = int(alarm - t["peak_iteration"])
            row["gold_lost"] = t["gold_peak"] - gold_at(t, alarm)
        per_run[key] = row
    detected = [k for k in positives if alarms[k] is not None]
    rate = lambda keys: float(np.mean([alarms[k] is not None for k in keys])) if keys else float("nan")  # noqa: E731
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {
        "false_alarm_rate": rate(negatives), "false_alarms": [k for k in negatives if alarms[k] is not None],
        "false_alarm_rate_flat": rate(flat), "false_alarms_flat": [k for k in flat if alarms[k] is not None],
        "detected": detected, "missed": [k for k in positives if alarms[k] is None],
        "miss_rate": 1.0 - rate(positives) if positives else float("nan"),
        "mean_lag": mean([per_run[k]["lag"] for k in detected]),
        "mean_abs_lag": mean([abs(per_run[k]["lag"]) for k in detected]),
        "mean_gold_lost": mean([per_run[k]["gold_lost"] for k in detected]),
        # stopping at the alarm, or at the end when it never came: the gold a user following the rule gives up
        "mean_gold_lost_with_misses": mean([per_run[k]["gold_lost"] if alarms[k] is not None
                                            else truths[k]["gold_peak"] - truths[k]["gold_final"]
                                            for k in positives]),
        "runs": per_run,
    }  # fmt: skip


def _truths(runs: Mapping[str, Mapping], window: int, min_fall: float) -> dict[str, dict]:
    return {k: gold_truth(r["checkpoints"], window=window, min_fall=min_fall) for k, r in runs.items()}


def evaluate_detectors(
    runs: Mapping[str, Mapping],
    *,
    negatives: Sequence[str] = ("Oracle", "PPO w/ KL"),
    thresholds: Mapping[str, float] | None = None,
    rules: Mapping[str, Rule] | None = None,
    min_fall: float = 0.05,
    gold_window: int = 3,
) -> dict[str, Any]:
    """Every alarm rule scored as a detector of over-optimization on a set of lab runs.

    Args:
      runs: name -> a run result (:func:`inform_jax.lab.runs.run_method`'s dict, checkpoints with the SFT reading
        first as the demo stores them): ``checkpoints`` (``checkpoint``, ``gold``; ``kl`` for the held-out KL
        rule), ``detection`` (``iteration``, ``csi``; ``mop`` for MOP), ``metrics`` (``iteration``, ``kl``,
        ``final_layer_energy``, ``energy_reference_layer{l}``). Seeds of one method may be separate keys.
      negatives: runs that should never be flagged (PROTOCOL.md section 6), matched against the key or the run's
        ``name``. An alarm on one is a false alarm whatever its gold did.
      thresholds: rule name -> threshold, overriding :data:`RULES`' defaults.
      rules: name -> :class:`Rule` (default :data:`RULES`; use ``functools.partial`` for other windows).
      min_fall, gold_window: the ground truth (:func:`gold_truth`).

    Returns:
      ``{"truth": {run: peak_iteration, gold_peak, fall, overoptimized, negative}, "negatives_that_fell": [...]
      (negatives whose gold did fall: the protocol's assumption does not hold for them), "detectors": {rule:
      scores}}``. A rule's scores: ``threshold``; ``false_alarm_rate`` over the negatives and
      ``false_alarm_rate_flat`` over every run whose gold never fell (with the runs that tripped it); over the
      positives (over-optimized runs that are not negatives) ``detected``, ``missed``, ``miss_rate``,
      ``mean_lag`` (alarm minus gold-peak iteration: negative is an early warning), ``mean_abs_lag``,
      ``mean_gold_lost`` (smoothed gold at the peak minus at the alarm, interpolated on the checkpoints: the regret
      of stopping at the alarm, >= 0 either side of the peak), ``mean_gold_lost_with_misses`` (a missed run
      stops at the end); ``runs`` per run. A rule that some run does not record is ``{"recorded": False,
      "missing": {run: reason}}``; NaN where a set of runs is empty.
    """
    rules = dict(RULES if rules is None else rules)
    thresholds = {name: rule.threshold for name, rule in rules.items()} | dict(thresholds or {})
    truths = _truths(runs, gold_window, min_fall)
    negative = {k: _is_negative(k, r, negatives) for k, r in runs.items()}
    detectors = {}
    for name, rule in rules.items():
        alarms = run_alarms(runs, rule, [thresholds[name]])
        missing = {k: v for k, v in alarms.items() if isinstance(v, str)}
        if missing:
            detectors[name] = {"recorded": False, "missing": missing}
            continue
        detectors[name] = {"recorded": True, "threshold": float(thresholds[name]),
                           **_score({k: v[0] for k, v in alarms.items()}, truths, negative)}  # fmt: skip
    truth = {k: {"peak_iteration": t["peak_iteration"], "gold_peak": t["gold_peak"], "fall": t["fall"],
                 "overoptimized": t["overoptimized"], "negative": negative[k]} for k, t in truths.items()}  # fmt: skip
    fell = [k for k in runs if negative[k] and truths[k]["overoptimized"]]
    return {"truth": truth, "negatives_that_fell": fell, "detectors": detectors}


def threshold_grid(runs: Mapping[str, Mapping], rule: Rule, *, include_below: bool = True) -> np.ndarray:
    """Every threshold at which some run's alarm changes: the sorted distinct finite values of the rule's statistic
    over all runs (an alarm needs ``statistic > threshold``, so a threshold equal to a value silences it), and one
    value below them all (every run that records anything alarms). ``[G]`` float64; empty if nothing recorded."""
    values = []
    for result in runs.values():
        series = result.get(rule.source)
        if series:
            values.append(np.asarray(rule.statistic(series)[1], np.float64))
    values = np.concatenate(values) if values else np.zeros(0)
    grid = np.unique(values[np.isfinite(values)])
    if include_below and grid.size:
        grid = np.concatenate([[grid[0] - max(1.0, abs(grid[0]))], grid])
    return grid


def sweep(
    runs: Mapping[str, Mapping],
    rule: Rule | str,
    grid: Sequence[float] | np.ndarray | None = None,
    *,
    negatives: Sequence[str] = ("Oracle", "PPO w/ KL"),
    min_fall: float = 0.05,
    gold_window: int = 3,
) -> list[dict[str, Any]]:
    """One rule's (false-alarm rate, lag, gold lost, misses) at every threshold of ``grid`` (default
    :func:`threshold_grid`), in increasing threshold order: a trade-off curve. The false-alarm rates are
    non-increasing and the misses non-decreasing along it (each run's alarm only moves later as the threshold
    rises); the mean lag is over the detected runs, whose set shrinks, so it need not be monotone.

    Returns ``[G]`` dicts with ``threshold`` and :func:`evaluate_detectors`' scores less ``runs`` (plus
    ``alarms``: run -> alarm iteration); raises :class:`NotRecorded` when a run lacks the rule's series."""
    rule = RULES[rule] if isinstance(rule, str) else rule
    grid = threshold_grid(runs, rule) if grid is None else np.sort(np.asarray(grid, np.float64))
    alarms = run_alarms(runs, rule, grid)
    missing = {k: v for k, v in alarms.items() if isinstance(v, str)}
    if missing:
        raise NotRecorded(f"not recorded by every run: {missing}")
    truths = _truths(runs, gold_window, min_fall)
    negative = {k: _is_negative(k, r, negatives) for k, r in runs.items()}
    rows = []
    for i, threshold in enumerate(grid):
        at = {k: v[i] for k, v in alarms.items()}
        scores = _score(at, truths, negative)
        scores.pop("runs")
        rows.append({"threshold": float(threshold), **scores, "alarms": at})
    return rows


def compare_at_false_alarm_rate(
    runs: Mapping[str, Mapping],
    max_false_alarm_rate: float = 0.0,
    *,
    rules: Mapping[str, Rule] | None = None,
    grids: Mapping[str, Sequence[float]] | None = None,
    negatives: Sequence[str] = ("Oracle", "PPO w/ KL"),
    min_fall: float = 0.05,
    gold_window: int = 3,
) -> dict[str, dict[str, Any] | None]:
    """Each rule at its most sensitive threshold whose false-alarm rate on the negatives is at most
    ``max_false_alarm_rate``: the sweep row with the lowest such threshold, so rules are compared on lag, gold
    lost and misses at an equal false-alarm budget. A rule some run does not record maps to None."""
    rules = dict(RULES if rules is None else rules)
    out: dict[str, dict[str, Any] | None] = {}
    for name, rule in rules.items():
        try:
            rows = sweep(runs, rule, (grids or {}).get(name), negatives=negatives, min_fall=min_fall,
                         gold_window=gold_window)  # fmt: skip
        except NotRecorded:
            out[name] = None
            continue
        # NaN (no negatives at all) compares False: such a rule has no admissible threshold
        ok = [r for r in rows if r["false_alarm_rate"] <= max_false_alarm_rate]
        out[name] = ok[0] if ok else None
    return out
