"""Backbones from a config's model section: the architecture, the runtime options, a loaded or fresh decoder."""

from __future__ import annotations

import os

from flax import nnx

from inform_jax.models import CausalLM, DecoderConfig, config_from_pretrained, from_pretrained
from inform_jax.models.dtypes import DTYPES
from inform_jax.models.presets import preset_config


def runtime_options(section) -> dict:
    return dict(
        dtype=DTYPES[section.dtype],
        param_dtype=DTYPES[section.param_dtype],
        scan_layers=section.scan_layers,
        remat=section.remat,
        attention_impl=section.attention_impl,
    )


def section_config(section, *, preset_if_path_missing: bool = False) -> DecoderConfig:
    """The architecture with runtime options of a model section (the RM's `model`, PPO's `policy`): from the
    folder's config.json, else the preset plus `config` fields.

    preset_if_path_missing: plan from the preset when the path is not on this machine (planning only; training
    refuses a missing folder rather than silently starting from random weights).
    """
    if section.path and not (preset_if_path_missing and section.preset and not os.path.isdir(section.path)):
        return config_from_pretrained(section.path, **runtime_options(section))
    if section.preset:
        return preset_config(section.preset, **section.config, **runtime_options(section))
    if not section.config:
        raise ValueError("one of model.path, model.preset or model.config must be given")
    return DecoderConfig(**section.config, **runtime_options(section))


def build_backbone(config, seed: int) -> CausalLM:
    """The decoder without LM head: loaded from `model.path`, or randomly initialized."""
    if config.model.path:
        return from_pretrained(config.model.path, lm_head=False, **runtime_options(config.model))
    return CausalLM(section_config(config.model), rngs=nnx.Rngs(seed), lm_head=False)


def check_tokenizer_fits(tokenizer, config: DecoderConfig, where: str) -> None:
    """A tokenizer with more ids than the model's vocabulary would index past the embedding table (NaN at step 1):
    refuse it before any compute."""
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"{where}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {config.vocab_size}"
        )
