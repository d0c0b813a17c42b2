"""Positive controls of the lab's exploit arms (experiments/lab/PROTOCOL.md section 2): does the planted marker
reach the policy and the reward models at all?

A method's result on an arm is read only once its control fires:
  - SFT marker base rate: the share of SFT samples that carry a marker (the protocol asks for 2-5%: reachable).
  - normalized sensitivity: the mean change in a reward model's reward when one marker is inserted into each SFT
    sample, in units of that reward model's reward std over SFT samples (shortcut arms: > 0 for the standard RM).
  - marker probe AUROC: a cross-validated linear probe for "a marker was inserted" on an InfoRM's latent means
    (nuisance arm: >= 0.8 at beta 0, same head and latent size; then it should fall with beta), and the same probe
    on reparameterized samples of the latent, what the decoder reads in training: a mean is a deterministic
    linear map of the backbone's state at every beta, so only the encoder's noise can remove what the means show.

    controls = arm_controls(lab, sft, {"standard": lab.reward_model("standard", sft),
                                       "inform-beta0": lab.reward_model("inform-beta0", sft)})
    controls["sft_marker_rate"], controls["reward_models"]["standard"]["sensitivity"]

Inserted markers use the world's own insertion (``inform_jax.world.markers.insert_marker_ids``), so a marker lands
where the world's samplers put one. Every measurement runs on SFT samples without a marker, each paired with its
copy with one marker: marker presence is then independent of everything else about the response.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from sklearn.linear_model import LogisticRegression

from inform_jax.detect.selection import auroc
from inform_jax.lab.best_of_n import sample_pool
from inform_jax.lab.stages import Lab
from inform_jax.models import CausalLM
from inform_jax.models.batched import map_batches
from inform_jax.models.reward_model import EnsembleRewardModel
from inform_jax.world.markers import insert_marker_ids

# score_fn(prompt_ids [B, P], prompt_mask [B, P], response_ids [B, T], response_mask [B, T]) -> reward [B]
ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class Sensitivity(NamedTuple):
    """A reward's normalized sensitivity to one inserted marker: ``value`` = mean(delta) / std, ``stderr`` its
    standard error over responses (std of delta / sqrt(n) / std), ``mean_delta`` the raw mean reward change, ``n``
    the responses."""

    value: float
    stderr: float
    mean_delta: float
    n: int


# ------------------------------------------------------------------------------------------------ the probe


def marker_probe_auroc(
    features, has_marker, *, seed: int, folds: int = 5, groups=None, regularization: float = 1.0
) -> float:
    """Held-out AUROC of a linear probe (L2 logistic regression on standardized features) for ``has_marker``.

    features: [N, D]; has_marker: [N] bool; groups: [N] ints, rows of one group always share a fold (a response and
    its marked copy: the probe must not see one to score the other); default every row its own group. Groups are
    dealt to ``folds`` folds in a random order from ``seed``; the probe is fit on the other folds and scores the
    held-out one. Returns the mean AUROC over the folds whose held-out rows hold both classes (0.5: the features
    carry no linear trace of the marker; 1: a hyperplane separates them).
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(has_marker).astype(bool)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be [N, D] and has_marker [N], got {x.shape} and {y.shape}")
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    if groups.shape != y.shape:
        raise ValueError(f"groups must be [N] like has_marker, got {groups.shape}")
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    unique = np.unique(groups)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = np.empty(len(unique), np.int64)
    fold_of_group[order] = np.arange(len(unique)) % folds
    fold = fold_of_group[np.searchsorted(unique, groups)]
    scores = []
    for k in range(folds):
        test = fold == k
        train = ~test
        # a fold without both classes has no AUROC; a training set without both has no probe
        if len(np.unique(y[test])) < 2 or len(np.unique(y[train])) < 2:
            continue
        mean, std = x[train].mean(0), x[train].std(0)
        std = np.where(std > 0, std, 1.0)  # a constant feature carries nothing; keep it at 0 rather than divide by 0
        probe = LogisticRegression(C=regularization, max_iter=1000)
        probe.fit((x[train] - mean) / std, y[train])
        scores.append(auroc(probe.decision_function((x[test] - mean) / std), y[test]))
    if not scores:
        raise ValueError("no fold holds both classes: too few rows or groups for the probe")
    return float(np.mean(scores))


# ----------------------------------------------------------------------------------------- sensitivity


def with_and_without_marker(responses, mask, rng: np.random.Generator, vocabulary: tuple[str, ...]):
    """The same responses without and with one marker, at one width.

    responses, mask: [B, T]. Returns ``(plain_ids, plain_mask, marked_ids, marked_mask)``, all [B, T + 1]: the
    plain rows with one masked pad slot appended (so both forms share a shape and one compiled program), the marked
    rows with one marker inserted by ``insert_marker_ids`` (drawing from ``rng``).
    """
    responses, mask = np.asarray(responses), np.asarray(mask).astype(np.int32)
    marked_ids, marked_mask = insert_marker_ids(responses, mask, rng, vocabulary)
    pad = np.zeros((responses.shape[0], 1), responses.dtype)
    plain_ids = np.concatenate([responses, pad], 1)
    plain_mask = np.concatenate([mask, pad.astype(np.int32)], 1)
    return plain_ids, plain_mask, marked_ids, marked_mask


def normalized_sensitivity(
    score_fn: ScoreFn,
    prompts: dict[str, np.ndarray],
    responses,
    mask,
    sft_reward_std: float,
    rng: np.random.Generator,
    *,
    vocabulary: tuple[str, ...],
) -> Sensitivity:
    """The mean reward change from inserting one marker into each response, over the reward's std on SFT samples.

    score_fn: the reward (see :data:`ScoreFn`); prompts: {"input_ids", "attention_mask"} [B, P] (left-padded);
    responses, mask: [B, T] (the responses to insert into, e.g. SFT samples without a marker); sft_reward_std: the
    same reward's std over SFT samples (:func:`reward_std_on_sft_samples`); rng: draws the markers and positions;
    vocabulary: the world's (a marker arm's). delta_i = r(marked_i) - r(plain_i) is paired per response.
    """
    if not sft_reward_std > 0:
        raise ValueError(f"sft_reward_std must be positive, got {sft_reward_std}")
    prompt_ids, prompt_mask = np.asarray(prompts["input_ids"]), np.asarray(prompts["attention_mask"])
    plain_ids, plain_mask, marked_ids, marked_mask = with_and_without_marker(responses, mask, rng, vocabulary)
    plain = np.asarray(score_fn(prompt_ids, prompt_mask, plain_ids, plain_mask), np.float64)
    marked = np.asarray(score_fn(prompt_ids, prompt_mask, marked_ids, marked_mask), np.float64)
    return sensitivity_from_rewards(plain, marked, sft_reward_std)


def sensitivity_from_rewards(plain, marked, sft_reward_std: float) -> Sensitivity:
    """:class:`Sensitivity` of paired rewards [B] without and with a marker, in units of ``sft_reward_std`` (NaN
    when that std is 0: a constant reward has no unit to measure a change in)."""
    if not sft_reward_std > 0:
        return Sensitivity(float("nan"), float("nan"), float(np.mean(marked) - np.mean(plain)), len(plain))
    delta = np.asarray(marked, np.float64) - np.asarray(plain, np.float64)
    n = len(delta)
    stderr = float(delta.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return Sensitivity(float(delta.mean() / sft_reward_std), stderr / sft_reward_std, float(delta.mean()), n)


# ------------------------------------------------------------------------------------ reward models on the lab


@functools.partial(jax.jit, static_argnames=("graphdef", "latent", "hidden"))
def _reward_and_latent(graphdef, params, prompt_ids, prompt_mask, ids, mask, latent, hidden):
    # prompt and response concatenated, as PPO scores a rollout (the reward read at the last real token)
    out = nnx.merge(graphdef, params)(jnp.concatenate([prompt_ids, ids], 1), jnp.concatenate([prompt_mask, mask], 1))
    result = {"reward": out.reward}
    if hidden:  # the backbone's final hidden state where the reward is read: what any head can see
        result["hidden"] = out.backbone.pooled_hidden.astype(jnp.float32)
    if latent:
        result.update(
            latent=out.head.latent_mean.astype(jnp.float32), logvar=out.head.latent_logvar.astype(jnp.float32)
        )
    return result


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _pooled_hidden(graphdef, params, prompt_ids, prompt_mask, ids, mask):
    # the causal LM's final hidden state (after the final norm) at the last real token: where a reward head reads
    out = nnx.merge(graphdef, params)(
        jnp.concatenate([prompt_ids, ids], 1), jnp.concatenate([prompt_mask, mask], 1), compute_logits=False
    )
    return out.pooled_hidden.astype(jnp.float32)


def policy_hidden(lab: Lab, policy: CausalLM, prompt_ids, prompt_mask, ids, mask, *, batch_size: int = 256):
    """``policy``'s final hidden state [N, H] at the last real token of prompts [N, P] + responses [N, T] (the
    reward token of a reward model built on it), as NumPy float32."""
    graphdef, params = nnx.split(policy)
    rows = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "ids": ids, "mask": mask}

    def fn(batch, _):
        return _pooled_hidden(graphdef, params, batch["prompt_ids"], batch["prompt_mask"], batch["ids"], batch["mask"])

    out = map_batches(fn, {k: np.asarray(v) for k, v in rows.items()}, batch_size=batch_size, mesh=lab.mesh)
    return np.asarray(out, np.float32)


def bottleneck_stats(mean, logvar, *, active_threshold: float = 0.01) -> dict[str, float]:
    """How much an InfoRM latent carries, from its encoder's means and log-variances [N, Z] on N inputs.

    rate_nats: the mean over inputs of KL(N(mean, exp(logvar)) || N(0, I)) summed over the Z dimensions (the
    ``paper`` reduction's bottleneck term: an upper bound on the information the latent keeps about the input);
    active_dims: the dimensions whose mean varies across inputs, Var_x(mean_z) > ``active_threshold`` (Burda et
    al. 2016's active units): a dimension whose mean never moves carries nothing, whatever its variance."""
    mean, logvar = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
    kl = 0.5 * (mean**2 + np.exp(logvar) - logvar - 1.0)
    return {"rate_nats": float(kl.sum(1).mean()), "active_dims": int((mean.var(0) > active_threshold).sum()),
            "latent_dims": int(mean.shape[1])}  # fmt: skip


def sampled_latents(mean, logvar, rng: np.random.Generator) -> np.ndarray:
    """One reparameterized draw per row, mean + exp(logvar / 2) * eps with eps ~ N(0, I) from ``rng``: the latent
    an InfoRM's decoder reads in training. mean, logvar: [N, Z] -> [N, Z] float64."""
    mean, logvar = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
    return mean + np.exp(0.5 * logvar) * rng.standard_normal(mean.shape)


# latents drawn per response for the sampled probe: with one draw its AUROC moves by ~0.05 from draw to draw at
# the lab's size, with 8 by ~0.03 between noise streams
SAMPLED_DRAWS = 8


def sampled_probe_auroc(plain, marked, *, seed: int, folds: int = 5, draws: int = SAMPLED_DRAWS) -> float:
    """The marker probe (:func:`marker_probe_auroc`) on latents sampled as InfoRM's decoder reads them in training.

    plain, marked: (means [N, Z], log-variances [N, Z]) of N responses and their copies with one marker. Each row
    is drawn ``draws`` times (:func:`sampled_latents`); a response, its marked copy and all their draws share one
    fold, the folds those of the probe on the means with the same ``seed`` (the two readings are paired). The noise
    comes from a stream of its own, apart from ``default_rng(seed)``, which deals the folds
    and, in :func:`arm_controls`, places the markers."""
    (plain_mean, plain_logvar), (marked_mean, marked_logvar) = plain, marked
    n = len(plain_mean)
    rng = np.random.default_rng([seed, 1])  # entropy (seed, 1): not default_rng(seed)'s stream
    features = np.concatenate([sampled_latents(plain_mean, plain_logvar, rng) for _ in range(draws)]
                              + [sampled_latents(marked_mean, marked_logvar, rng) for _ in range(draws)])  # fmt: skip
    labels = np.repeat([False, True], n * draws)
    groups = np.tile(np.arange(n), 2 * draws)
    return marker_probe_auroc(features, labels, seed=seed, folds=folds, groups=groups)


def has_latent(reward_model) -> bool:
    """Whether ``reward_model`` is a single reward model with an IB latent (an InfoRM at any beta)."""
    return not isinstance(reward_model, EnsembleRewardModel) and reward_model.head_config.kind == "ib"


def score_rows(lab: Lab, reward_model, prompt_ids, prompt_mask, ids, mask, *, batch_size: int = 256) -> dict:
    """``reward_model`` on rows of prompts [N, P] and responses [N, T]: {"reward": [N]}, for a single reward model
    {"hidden": [N, H]} (its backbone's final hidden state at the reward token), and for an InfoRM {"latent": [N, Z],
    "logvar": [N, Z]} (its encoder's means and log-variances), as NumPy float32."""
    graphdef, params = nnx.split(reward_model)
    latent = has_latent(reward_model)
    hidden = not isinstance(reward_model, EnsembleRewardModel)
    rows = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "ids": ids, "mask": mask}

    def fn(batch, _):
        return _reward_and_latent(graphdef, params, batch["prompt_ids"], batch["prompt_mask"], batch["ids"],
                                  batch["mask"], latent, hidden)  # fmt: skip

    out = map_batches(fn, {k: np.asarray(v) for k, v in rows.items()}, batch_size=batch_size, mesh=lab.mesh)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def sft_samples(lab: Lab, sft: CausalLM, *, samples_per_prompt: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """SFT samples at temperature 1 to the held-out prompts (``lab.eval_prompts``, each ``samples_per_prompt``
    times, keys from ``seed``) as flat rows: prompt_ids, prompt_mask [N, P]; tokens, mask [N, T]; marker [N] bool
    (the world scorer's flag: a marker word among the scored words)."""
    pool = sample_pool(lab, sft, lab.eval_prompts, samples_per_prompt=samples_per_prompt, seed=seed)
    rows = pool.rows()
    scores = lab.scorer(rows["prompt_ids"], rows["prompt_mask"], rows["tokens"], rows["mask"])
    return {**{k: np.asarray(v) for k, v in rows.items()}, "marker": np.asarray(scores.marker, bool)}


def reward_std_on_sft_samples(lab: Lab, rm, sft: CausalLM, n: int, *, seed: int = 0) -> float:
    """The std of ``rm``'s reward over about ``n`` SFT samples (temperature 1, held-out prompts; at least one per
    prompt): the unit of the normalized sensitivity."""
    per_prompt = max(1, -(-n // len(lab.eval_prompts["input_ids"])))
    rows = sft_samples(lab, sft, samples_per_prompt=per_prompt, seed=seed)
    reward = score_rows(lab, rm, rows["prompt_ids"], rows["prompt_mask"], rows["tokens"], rows["mask"])["reward"]
    return float(reward.std(ddof=1))


def arm_controls(
    lab: Lab, sft: CausalLM, reward_models: dict, *, samples_per_prompt: int = 8, seed: int = 0, folds: int = 5
) -> dict:
    """The positive controls of the lab's arm (a marker arm) for the SFT policy and each reward model.

    Samples ``samples_per_prompt`` SFT responses per held-out prompt (temperature 1, keys from ``seed``). Returns
      - arm, n_samples; sft_marker_rate and its stderr: the share of samples with a marker (the world's flag);
      - n_paired: samples without a marker, each scored plain and with one inserted marker;
      - sft_probe_auroc: the marker probe on the SFT policy's own final hidden state at the reward token (does the
        backbone carry the marker before any reward training?);
      - reward_models[name]: sft_reward_std (over all samples), sensitivity, sensitivity_stderr, mean_delta; and
        for a reward model with a latent (InfoRM, any beta) probe_auroc: the marker probe's held-out AUROC on the
        latent means of the paired set (a response and its marked copy always in one fold), probe_auroc_sampled:
        the same probe on sampled latents (:func:`sampled_probe_auroc`), and
        :func:`bottleneck_stats` on the plain responses (rate_nats, active_dims, latent_dims); for a single reward
        model probe_auroc_hidden: the same probe on its backbone's final hidden state at the reward token.
    reward_models: name -> RewardModel or EnsembleRewardModel (e.g. from ``lab.reward_model``).
    """
    if not lab.world.config.has_markers:
        raise ValueError(f"arm {lab.config.arm!r} has no markers; the controls need a marker arm")
    rows = sft_samples(lab, sft, samples_per_prompt=samples_per_prompt, seed=seed)
    n = len(rows["marker"])
    rate = float(rows["marker"].mean())
    clean = ~rows["marker"]
    if clean.sum() < 2:
        raise ValueError("fewer than two SFT samples without a marker: nothing to insert one into")
    prompt_ids, prompt_mask = rows["prompt_ids"][clean], rows["prompt_mask"][clean]
    # one draw of markers and positions for every reward model: their sensitivities are paired on the same inserts
    plain_ids, plain_mask, marked_ids, marked_mask = with_and_without_marker(
        rows["tokens"][clean], rows["mask"][clean], np.random.default_rng(seed), lab.world.vocabulary
    )
    labels = np.repeat([False, True], len(plain_ids))
    pairs = np.tile(np.arange(len(plain_ids)), 2)
    sft_features = np.concatenate([
        policy_hidden(lab, sft, prompt_ids, prompt_mask, plain_ids, plain_mask),
        policy_hidden(lab, sft, prompt_ids, prompt_mask, marked_ids, marked_mask),
    ])  # fmt: skip
    result = {"arm": lab.config.arm, "n_samples": n, "sft_marker_rate": rate,
              "sft_marker_rate_stderr": float(np.sqrt(rate * (1 - rate) / n)), "n_paired": int(clean.sum()),
              "sft_probe_auroc": marker_probe_auroc(sft_features, labels, seed=seed, folds=folds, groups=pairs),
              "reward_models": {}}  # fmt: skip
    for name, rm in reward_models.items():
        std = float(score_rows(lab, rm, rows["prompt_ids"], rows["prompt_mask"], rows["tokens"], rows["mask"])
                    ["reward"].std(ddof=1))  # fmt: skip
        plain = score_rows(lab, rm, prompt_ids, prompt_mask, plain_ids, plain_mask)
        marked = score_rows(lab, rm, prompt_ids, prompt_mask, marked_ids, marked_mask)
        sens = sensitivity_from_rewards(plain["reward"], marked["reward"], std)
        entry = {"sft_reward_std": std, "sensitivity": sens.value, "sensitivity_stderr": sens.stderr,
                 "mean_delta": sens.mean_delta}  # fmt: skip
        if "latent" in plain:
            entry.update(bottleneck_stats(plain["latent"], plain["logvar"]))
            features = np.concatenate([plain["latent"], marked["latent"]])
            entry["probe_auroc"] = marker_probe_auroc(features, labels, seed=seed, folds=folds, groups=pairs)
            entry["probe_auroc_sampled"] = sampled_probe_auroc(
                (plain["latent"], plain["logvar"]), (marked["latent"], marked["logvar"]), seed=seed, folds=folds
            )
        if "hidden" in plain:  # the same probe on what the head reads: does the backbone carry the marker at all?
            features = np.concatenate([plain["hidden"], marked["hidden"]])
            entry["probe_auroc_hidden"] = marker_probe_auroc(features, labels, seed=seed, folds=folds, groups=pairs)
        result["reward_models"][name] = entry
    return result
