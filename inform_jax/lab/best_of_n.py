"""Best-of-n on the laboratory's world: one pool of policy samples per held-out prompt, scored once by the gold
judge and by every reward model, and the best-of-n curves each reward model gives on it.

    pool = sample_pool(lab, sft, lab.eval_prompts, {"standard": rm, "inform": inform}, samples_per_prompt=256)
    pool.proxy["oracle"] = pool.gold                    # gold as its own proxy: the best best-of-n can do
    curves = best_of_n_curves(pool, powers_of_two(256))
    curves["inform"]["gold"], curves["inform"]["kl"]    # [K] each: mean gold of the kept sample, log n - (n-1)/n

Every reward model ranks the same samples, so their curves are paired sample by sample: a difference between two
reward models at one n is a difference in which sample each keeps, never in what was sampled. No PPO is involved.
The estimator and the KL are :mod:`inform_jax.eval.best_of_n`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from inform_jax.eval.best_of_n import best_of_n, bon_kl, fit_bon_curve, powers_of_two
from inform_jax.lab.stages import Lab
from inform_jax.models import CausalLM
from inform_jax.models.batched import map_batches
from inform_jax.models.sampler import generate
from inform_jax.train.ppo.trainer import reward_model_score_fn


@dataclasses.dataclass
class SamplePool:
    """N samples of one policy for each of P prompts, with their scores.

    prompt_ids, prompt_mask: [P, L] the prompts (left-padded); tokens, mask: [P, N, T] the responses (mask 1 for
    generated tokens, EOS included, as PPO's rollouts); gold: [P, N] float32; hacked: [P, N] bool, or None when the
    world has no hacking label; proxy: reward model name -> [P, N] float32 scores of the same samples."""

    prompt_ids: np.ndarray
    prompt_mask: np.ndarray
    tokens: np.ndarray
    mask: np.ndarray
    gold: np.ndarray
    hacked: np.ndarray | None
    proxy: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def size(self) -> int:
        """N, the samples per prompt."""
        return self.gold.shape[1]

    def rows(self) -> dict[str, np.ndarray]:
        """The pool as P * N flat rows (prompt p's samples are rows p * N to p * N + N - 1)."""
        n = self.size
        return {"prompt_ids": np.repeat(self.prompt_ids, n, 0), "prompt_mask": np.repeat(self.prompt_mask, n, 0),
                "tokens": self.tokens.reshape(-1, self.tokens.shape[-1]),
                "mask": self.mask.reshape(-1, self.mask.shape[-1])}  # fmt: skip


def sample_pool(
    lab: Lab,
    policy: CausalLM,
    prompts: dict[str, np.ndarray] | None = None,
    reward_models: dict[str, nnx.Module] | None = None,
    *,
    samples_per_prompt: int = 256,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
) -> SamplePool:
    """``samples_per_prompt`` samples of ``policy`` for each of ``prompts`` ({"input_ids", "attention_mask"}: [P,
    L]; default ``lab.eval_prompts``, the held-out prompts), at ``temperature`` with no top-k / top-p and the lab's
    ``new_tokens``, scored by the world's gold judge (``lab.scorer``, what ``lab.judge_scores`` reads) and by each
    of ``reward_models`` (name -> RewardModel or EnsembleRewardModel, read as PPO reads them).

    The samples come in equal batches of at most ``batch_size`` rows, each batch with the next key split from
    ``seed``: the pool is a function of (policy, prompts, samples_per_prompt, seed, batch_size)."""
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
    prompts = lab.eval_prompts if prompts is None else prompts
    prompt_ids, prompt_mask = np.asarray(prompts["input_ids"]), np.asarray(prompts["attention_mask"])
    n_prompts, n = len(prompt_ids), samples_per_prompt
    rows = {"input_ids": np.repeat(prompt_ids, n, 0), "attention_mask": np.repeat(prompt_mask, n, 0)}
    key = jax.random.key(seed)
    tok = lab.tokenizer

    def sample(batch, _):  # map_batches calls this once per batch, in order: each batch draws the next key
        nonlocal key
        key, sub = jax.random.split(key)
        out = generate(
            policy, batch["input_ids"], batch["attention_mask"], max_new_tokens=lab.config.new_tokens, key=sub,
            temperature=temperature, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
        )  # fmt: skip
        # the world's jitted scorer (what lab.judge_scores reads), kept on device for map_batches to gather
        scores = lab.scorer(batch["input_ids"], batch["attention_mask"], out.tokens, out.mask)
        return {"tokens": out.tokens, "mask": out.mask, "gold": scores.gold, "hacked": scores.hacked}

    # batches of one size (the last filled by wrapping around, the copies cut): one compiled sampler serves them all
    out = map_batches(sample, rows, batch_size=batch_size, mesh=lab.mesh)
    per_prompt = lambda x: x.reshape(n_prompts, n, *x.shape[1:])  # noqa: E731
    pool = SamplePool(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, tokens=per_prompt(out["tokens"]),
        mask=per_prompt(out["mask"]), gold=per_prompt(out["gold"]).astype(np.float32),
        hacked=per_prompt(out["hacked"]).astype(bool),
    )  # fmt: skip
    for name, model in (reward_models or {}).items():
        pool.proxy[name] = reward_model_scores(lab, pool, model, batch_size=batch_size)
    return pool


def reward_model_scores(lab: Lab, pool: SamplePool, reward_model: nnx.Module, *, batch_size: int = 256) -> np.ndarray:
    """[P, N] float32: ``reward_model``'s reward of every sample in ``pool``, computed as PPO computes its proxy
    reward (``reward_model_score_fn``: prompt and response concatenated, the reward read at the last real token;
    InfoRM at its latent mean, an ensemble aggregated as configured)."""
    graphdef, params = nnx.split(reward_model)
    score = jax.jit(reward_model_score_fn(graphdef))

    def fn(batch, _):
        reward, _ = score(params, batch["prompt_ids"], batch["prompt_mask"], batch["tokens"], batch["mask"])
        return reward

    rewards = map_batches(fn, pool.rows(), batch_size=batch_size, mesh=lab.mesh)
    return rewards.reshape(pool.gold.shape).astype(np.float32)


def best_of_n_curves(pool: SamplePool, ns: Sequence[int]) -> dict[str, dict[str, np.ndarray | float]]:
    """Per proxy in ``pool.proxy``, best-of-n by that proxy for each n in ``ns`` (each <= the pool size):

    n, kl: [K] (kl = log n - (n - 1) / n); gold, proxy, hacked: [K] means over prompts of the kept sample's gold
    reward, proxy reward and hacking label (the probability that it is hacked; absent when the pool has no labels);
    gold_per_prompt, proxy_per_prompt, hacked_per_prompt: [K, P] the same per prompt, for paired comparisons;
    gold_alpha, gold_beta, proxy_alpha, proxy_beta: Gao et al.'s fit of the gain over n = 1 (d (alpha - beta d),
    d = sqrt(kl)), NaN with fewer than two n > 1."""
    ns = [int(n) for n in ns]
    kl = bon_kl(ns)
    curves = {}
    for name, proxy in pool.proxy.items():
        read = {"gold": pool.gold, "proxy": proxy} | ({} if pool.hacked is None else {"hacked": pool.hacked})
        curve: dict[str, np.ndarray | float] = {"n": np.asarray(ns), "kl": kl}
        for key, values in read.items():
            per_prompt = best_of_n(proxy, values, ns)  # [K, P]
            curve[f"{key}_per_prompt"] = per_prompt
            curve[key] = per_prompt.mean(axis=1)
        base = {"gold": float(np.mean(pool.gold)), "proxy": float(np.mean(proxy))}  # n = 1 keeps a random sample
        for key in ("gold", "proxy"):
            fit = fit_bon_curve(kl, curve[key] - base[key]) if np.unique(kl[kl > 0]).size >= 2 else (np.nan, np.nan)
            curve[f"{key}_alpha"], curve[f"{key}_beta"] = fit
        curves[name] = curve
    return curves


# reward model kinds (lab.stages) -> the names the lab's reports give them
KIND_LABELS = {"standard": "Standard RM", "inform": "InfoRM", "ensemble": "Ensemble RM", "warm": "WARM",
               "odin": "ODIN", "dir": "Prioritized RM", "planted-good": "Planted good RM",
               "standard-seed2": "Planted RM seed"}  # fmt: skip


def bon_summary(lab: Lab, policy: CausalLM, reward_models: dict[str, nnx.Module], *, samples: int, seed: int) -> dict:
    """The demo's best-of-n: ``samples`` samples of ``policy`` per held-out prompt ranked by each of
    ``reward_models`` (kind -> model, named by :data:`KIND_LABELS`) and by the gold judge itself ("Gold", the
    best that selection can do), at n = 1, 2, 4, ... ``samples``. Returns {"samples", "curves": name -> {"n",
    "kl", "gold", "proxy", "hacked" ([K] lists), "gold_alpha", "gold_beta"}} as JSON-ready values."""
    models = {KIND_LABELS.get(kind, kind): rm for kind, rm in reward_models.items()}
    pool = sample_pool(lab, policy, reward_models=models, samples_per_prompt=samples, seed=seed)
    pool.proxy["Gold"] = pool.gold
    curves = best_of_n_curves(pool, powers_of_two(samples))
    keep = ("n", "kl", "gold", "proxy", "hacked", "gold_alpha", "gold_beta")
    return {
        "samples": samples,
        "curves": {name: {k: np.asarray(c[k]).tolist() for k in keep if k in c} for name, c in curves.items()},
    }
