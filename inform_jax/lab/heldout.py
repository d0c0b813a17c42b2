"""The lab's held-out measurement of a policy: gold reward and exact KL from the SFT policy on sampled responses.

Every checkpoint of every method is read the same way: ``samples_per_prompt`` responses per held-out prompt at
temperature 1, drawn with a key that depends only on the seed and the checkpoint's index (so two methods at the
same checkpoint use the same sampling randomness: paired), gold scored on those samples, and the KL from SFT
summed along each sampled sequence from the full next-token distributions (never negative, unlike the per-sample
log-ratio the PPO trainer logs).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inform_jax.losses import exact_kl
from inform_jax.models import CausalLM
from inform_jax.models.decoder import response_logits


@functools.partial(jax.jit, static_argnames=("policy_graph", "sft_graph", "prompt_len"))
def _sequence_kl(policy_graph, policy_params, sft_graph, sft_params, sequences, sequence_mask, prompt_len):
    """Exact KL(policy || SFT) [B] summed over the response tokens of sequences [B, P + N]."""
    # logits at t - 1 predict token t: the response's distributions sit at positions P - 1 .. P + N - 2
    _, policy_logits = response_logits(nnx.merge(policy_graph, policy_params), sequences, sequence_mask, prompt_len)
    _, sft_logits = response_logits(nnx.merge(sft_graph, sft_params), sequences, sequence_mask, prompt_len)
    return exact_kl(policy_logits, sft_logits, sequence_mask[:, prompt_len:])


class HeldOutEvaluator:
    """Gold, hacked fraction and exact KL from SFT of a policy's samples on the lab's held-out prompts.

    ``samples_per_prompt`` responses per prompt (the protocol asks for at least 4, and at least 256 samples per
    checkpoint); ``seed`` fixes the sampling keys, so calls with the same ``checkpoint`` draw the same random bits
    whatever the policy.
    """

    def __init__(self, lab, sft: CausalLM, *, samples_per_prompt: int = 4, seed: int = 0):
        self.lab = lab
        self.samples_per_prompt = samples_per_prompt
        self.seed = seed
        prompts = lab.eval_prompts
        self.prompts = {k: np.repeat(np.asarray(v), samples_per_prompt, axis=0) for k, v in prompts.items()}
        self.num_prompts = len(prompts["input_ids"])
        self.sft_graph, self.sft_params = nnx.split(sft)

    def key(self, checkpoint: int) -> jax.Array:
        return jax.random.fold_in(jax.random.key(self.seed), checkpoint)

    def __call__(self, policy: CausalLM, checkpoint: int) -> dict:
        """Returns gold / hacked / kl means, their per-prompt means ([num_prompts] lists: the unit a paired
        comparison averages over) and the standard error of the gold mean over prompts."""
        from inform_jax.models.sampler import generate

        lab = self.lab
        ids, mask = jnp.asarray(self.prompts["input_ids"]), jnp.asarray(self.prompts["attention_mask"])
        out = generate(
            policy, ids, mask, max_new_tokens=lab.config.new_tokens, key=self.key(checkpoint), temperature=1.0,
            eos_id=lab.tokenizer.eos_token_id, pad_id=lab.tokenizer.pad_token_id,
        )  # fmt: skip
        graph, params = nnx.split(policy)
        kl = np.asarray(_sequence_kl(graph, params, self.sft_graph, self.sft_params, out.sequences,
                                     out.sequence_mask, ids.shape[1]))  # fmt: skip
        scores = lab.judge_scores(self.prompts, out.tokens, out.mask)
        per_prompt = lambda x: np.asarray(x, np.float64).reshape(self.num_prompts, -1).mean(1)  # noqa: E731
        gold = per_prompt(scores["gold"])
        return {
            "checkpoint": checkpoint,
            "gold": float(gold.mean()),
            "gold_se": float(gold.std(ddof=1) / np.sqrt(len(gold))) if len(gold) > 1 else 0.0,
            "kl": float(kl.mean()),
            "hacked": float(np.mean(scores["hacked"])),
            "samples": int(len(kl)),
            "gold_per_prompt": gold.tolist(),
            "kl_per_prompt": per_prompt(kl).tolist(),
        }
