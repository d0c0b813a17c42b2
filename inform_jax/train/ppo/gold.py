"""A gold reward for PPO logs from a text judge: the simulated-RLHF setting, where a larger "gold" reward model
stands in for human judgement and the policy is trained against a proxy reward model.

The gold model may use another tokenizer than the policy, so rollouts are decoded to text and scored by the
judge's own tokenization; this runs on the host once per iteration, outside the jitted PPO step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from inform_jax.eval.generation import decode_rows


def text_gold_fn(scores: Callable[[list[str], list[str]], Any], tokenizer: Any) -> Callable[..., np.ndarray]:
    """gold_fn(prompt_ids, prompt_mask, response_ids, response_mask) -> [B] for :class:`PPOTrainer`, from
    ``scores(prompts, responses) -> [B]`` on decoded text (e.g. ``RewardModelJudge(path).scores``)."""

    def gold_fn(prompt_ids, prompt_mask, response_ids, response_mask):
        prompts = decode_rows(tokenizer, prompt_ids, prompt_mask)
        responses = decode_rows(tokenizer, response_ids, response_mask)
        return np.asarray(scores(prompts, responses), np.float32)

    return gold_fn
