"""The lab's pairwise judge: both presentation orders and the tie margin.

The implementation lives in :mod:`inform_jax.eval.winrate` (with pluggable judges in
:mod:`inform_jax.eval.judges`); these names are kept here for the lab and its tests.
"""

from inform_jax.eval.winrate import VERDICTS, compare, compare_scores, rates, verdict

__all__ = ["VERDICTS", "compare", "compare_scores", "rates", "verdict"]
