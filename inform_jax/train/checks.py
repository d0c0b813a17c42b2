"""Checks of config values with a fixed set of choices or a valid range, run when a config is built (before any
model loads): a bad value stops with a message naming the key, the value and what is allowed.

    check(config, [("optim.lr", positive), ("loss.aggregation", one_of("mean", "min", "uwo")), ...])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from inform_jax.models.attention_backends import ATTENTION_IMPLS

# (what is allowed, in words; the test)
Rule = tuple[str, Callable[[object], bool]]


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def one_of(*choices) -> Rule:
    return f"one of {list(choices)}", lambda v: v in choices


def list_of(*choices) -> Rule:
    """A list (or tuple) whose every item is one of `choices`."""
    return f"a list of {list(choices)}", lambda v: isinstance(v, list | tuple) and all(x in choices for x in v)


def at_least(low: float) -> Rule:
    return f"a number >= {low}", lambda v: _number(v) and v >= low


def above(low: float) -> Rule:
    return f"a number > {low}", lambda v: _number(v) and v > low


def within(low: float, high: float, *, open_high: bool = False) -> Rule:
    bracket = ")" if open_high else "]"
    return (
        f"a number in [{low}, {high}{bracket}",
        lambda v: _number(v) and low <= v and (v < high if open_high else v <= high),
    )


def optional(rule: Rule) -> Rule:
    allowed, test = rule
    return f"null or {allowed}", lambda v: v is None or test(v)


def or_one_of(rule: Rule, *choices) -> Rule:
    """``rule``, or one of a few named values (``loss.margin``: a number or ``column``)."""
    allowed, test = rule
    return f"{allowed}, or one of {list(choices)}", lambda v: (isinstance(v, str) and v in choices) or test(v)


def whole_at_least(low: int) -> Rule:
    return f"an integer >= {low}", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


finite = ("a finite number", _number)
positive = above(0)
whole = whole_at_least(0)
non_negative = at_least(0)
count = whole_at_least(1)
probability = within(0, 1)
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def model_section_rules(prefix: str) -> list[tuple[str, Rule]]:
    """The rules of a model section (the RM's ``model``, PPO's ``policy``)."""
    return [
        (f"{prefix}.dtype", one_of(*DTYPE_NAMES)),
        (f"{prefix}.param_dtype", one_of(*DTYPE_NAMES)),
        (f"{prefix}.remat", one_of(False, True, "full", "dots")),
        (f"{prefix}.attention_impl", one_of(*ATTENTION_IMPLS)),
        (f"{prefix}.scan_layers", one_of(True, False)),
    ]


def check(config, rules: Sequence[tuple[str, Rule]]) -> None:
    """Raise ValueError for the first dotted key of ``config`` whose value breaks its rule."""
    for key, (allowed, test) in rules:
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        if not test(value):
            raise ValueError(f"config key {key!r}: {value!r} is not allowed; expected {allowed}")
