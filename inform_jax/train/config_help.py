"""Config keys that document themselves: every field of a config dataclass carries its help text in its metadata,
so ``--help`` lists every key with its default and meaning straight from the dataclasses, and nothing drifts.

    @dataclasses.dataclass
    class OptimSection:
        lr: float = option(9e-6, "peak learning rate")
        betas: list = option(help="...", factory=list)

:func:`config_keys` walks a config (nested sections included) into ``(dotted key, default, help)`` rows;
:func:`describe_config` formats them for an argparse epilog.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

HELP = "help"  # the metadata key


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable | None = None):
    """A dataclass field with a default (or a default ``factory``) and its ``--help`` text."""
    if not help:
        raise ValueError("a config option needs its help text")
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={HELP: help})
    return dataclasses.field(default=default, metadata={HELP: help})


def section(factory: Callable) -> dataclasses.Field:
    """A nested section (its fields carry their own help)."""
    return dataclasses.field(default_factory=factory)


def config_keys(config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(dotted key, default, help)`` of every leaf field of ``config`` (a config dataclass instance, whose values
    are the defaults shown), nested sections walked in field order; a field without help has ``""``."""
    rows = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            rows.extend(config_keys(value, f"{prefix}{field.name}."))
        else:
            rows.append((prefix + field.name, value, field.metadata.get(HELP, "")))
    return rows


def describe_config(config) -> str:
    """One line per config key, ``  key (default VALUE): help``, for ``--help``."""
    return "\n".join(f"  {key} (default {default!r}): {text}" for key, default, text in config_keys(config))
