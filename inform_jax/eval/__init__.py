"""Evaluating policies: win / tie / lose rates of one policy's responses against another's, judged pairwise in
both presentation orders by a pluggable judge (a reward model, an LLM behind a chat endpoint, or the synthetic
world's gold reward)."""

from inform_jax.eval.judges import (
    ChatJudge,
    JudgeError,
    RewardModelJudge,
    ScoreJudge,
    default_margin,
    gold_judge,
    judge_kind,
    load_judge,
    load_template,
    parse_verdict,
    sequence_rewards,
)
from inform_jax.eval.winrate import (
    VERDICTS,
    compare,
    compare_scores,
    judge_both_orders,
    match_by_prompt,
    rates,
    verdict,
    win_rate_report,
)

__all__ = [
    "VERDICTS",
    "ChatJudge",
    "JudgeError",
    "RewardModelJudge",
    "ScoreJudge",
    "compare",
    "compare_scores",
    "default_margin",
    "gold_judge",
    "judge_both_orders",
    "judge_kind",
    "load_judge",
    "load_template",
    "match_by_prompt",
    "parse_verdict",
    "rates",
    "sequence_rewards",
    "verdict",
    "win_rate_report",
]
