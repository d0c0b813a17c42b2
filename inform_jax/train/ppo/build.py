"""`build_ppo(config)`: a PPO trainer from a PPO config alone, the way `inform-jax ppo` builds one.

    trainer = build_ppo(load_config("experiments/ppo/synthetic-eppo.yaml", cls=PPOConfig))
    policy = trainer.fit()

It reads the prompts (``data.prompts``, tokenized with ``data.tokenizer`` or the policy's folder), loads the SFT
policy (``policy.path``), the proxy reward (``reward.kind``: a reward-model folder, or the synthetic world's gold
reward), the critic's initialization (``ppo.critic_init``) and what is logged beside the proxy: the synthetic
world's gold reward and hacked flag with ``reward.gold=world``, or a gold reward model's score with
``reward.gold_path``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import nnx

from inform_jax.data.preference import load_prompts
from inform_jax.data.tokenize import tokenize_prompts
from inform_jax.data.tokenizer import load_tokenizer
from inform_jax.models import from_pretrained
from inform_jax.models.hf_io import checkpoint_digest
from inform_jax.models.reward_model import load_reward_model
from inform_jax.train.backbone import check_tokenizer_fits, runtime_options, section_config
from inform_jax.train.ppo.config import PPOConfig
from inform_jax.train.ppo.trainer import PPOTrainer, ValueModel, callable_score_fn, reward_model_score_fn


def build_ppo(config: PPOConfig, *, tokenizer=None, log=print, prompts=None, **kwargs) -> PPOTrainer:
    """A PPOTrainer for ``config``; ``tokenizer`` overrides the one in ``data.tokenizer`` / ``policy.path``; kwargs
    go to :class:`PPOTrainer` (mesh, callbacks). The tokenizer is kept as ``trainer.tokenizer``. Paths may be Hugging
    Face Hub names (:mod:`inform_jax.hub`); ``prompts``: a ``datasets.Dataset`` used in place of ``data.prompts``."""
    if prompts is not None:
        from inform_jax.data.preference import source_name

        config = dataclasses.replace(config, data=dataclasses.replace(config.data, prompts=source_name(prompts)))
    if not config.policy.path or not config.data.prompts:
        raise ValueError("policy.path (the SFT model folder) and data.prompts are required")
    if config.reward.kind == "model" and not config.reward.path:
        raise ValueError("reward.path (a reward model folder from train-rm) is required with reward.kind=model")
    if tokenizer is None:
        tokenizer = load_tokenizer(config.data.tokenizer or config.policy.path)
    check_tokenizer_fits(tokenizer, section_config(config.policy), "policy")
    texts, report = load_prompts(prompts if prompts is not None else config.data.prompts, tokenizer=tokenizer)
    log(str(report))
    prompts, truncation = tokenize_prompts(texts, tokenizer, config.data.max_prompt_length)
    log(str(truncation))
    policy = from_pretrained(config.policy.path, **runtime_options(config.policy))
    gold_fn, hacked_fn = _logged_gold(config, tokenizer, log)
    critic, reward_params = None, None
    if config.reward.kind == "gold":
        score_fn = callable_score_fn(gold_fn)
    else:
        reward_model = load_reward_model(config.reward.path, **runtime_options(config.policy))
        reward_graph, reward_params = nnx.split(reward_model)
        score_fn = reward_model_score_fn(reward_graph)
        if config.ppo.critic_init == "reward_model":
            backbone = reward_model.backbone if hasattr(reward_model, "backbone") else reward_model.member(0).backbone
            critic = ValueModel(nnx.clone(backbone), rngs=nnx.Rngs(config.train.seed))
    trainer = PPOTrainer(
        config, {k: np.asarray(v) for k, v in prompts.items()}, policy, score_fn=score_fn,
        reward_params=reward_params, critic=critic, gold_fn=gold_fn, hacked_fn=hacked_fn,
        eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id or 0,
        reference_digest=checkpoint_digest(config.policy.path), **kwargs,
    )  # fmt: skip
    trainer.tokenizer = tokenizer
    return trainer


def _logged_gold(config: PPOConfig, tokenizer, log):
    """(gold_fn, hacked_fn) on token ids: the synthetic world's (``reward.gold=world`` or ``reward.kind=gold``),
    a gold reward model's score of the decoded text (``reward.gold_path``), or None."""
    gold_fn = hacked_fn = None
    if config.reward.gold == "world" or config.reward.kind == "gold":
        from inform_jax.world import SyntheticWorld

        scorer = SyntheticWorld().id_scorer()
        gold_fn = lambda *batch: scorer(*batch).gold  # noqa: E731
        hacked_fn = lambda *batch: scorer(*batch).hacked  # noqa: E731
    if config.reward.gold_path:  # simulated RLHF: a gold reward model's score of each rollout is logged
        from inform_jax.eval.judges import RewardModelJudge
        from inform_jax.train.ppo.gold import text_gold_fn

        judge = RewardModelJudge(config.reward.gold_path, log=lambda line: log(f"gold reward model: {line}"))
        gold_fn = text_gold_fn(judge.scores, tokenizer)
    return gold_fn, hacked_fn
