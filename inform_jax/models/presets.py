"""Architectures of the papers' models (public Hugging Face configs), for random init and ahead-of-time plans.

Real weights load from local folders with `from_pretrained`; a preset gives the same architecture with
no files, e.g. to plan a Llama-3-8B run's memory on a TPU topology from any CPU machine.
"""

from __future__ import annotations

from inform_jax.models.config import DecoderConfig
from inform_jax.models.families import PRESETS


def preset_config(name: str, **overrides) -> DecoderConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return DecoderConfig(**{**PRESETS[name], **overrides})
