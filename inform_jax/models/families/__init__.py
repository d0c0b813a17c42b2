"""One module per model family over the shared decoder: its Hugging Face config mapping (``config_fields``,
``to_hf``), weight-name rules both ways (``layer_rules``, ``top_rules``), its ``*ForCausalLM`` class names and
presets. Adding a family is one module here (listed in ``_MODULES``) and a parity test against transformers.

A family module defines NAME, MODEL_TYPES, CAUSAL_LM_CLASSES, EMBED_TENSOR, HF_PREFIX, PRESETS,
``config_fields(hf_config, model_type) -> dict``, ``to_hf(config, common, rope_parameters)``, ``layer_rules(config)``
and ``top_rules(config, lm_head)``.
"""

from __future__ import annotations

from types import ModuleType

from inform_jax.models.families import gpt_neox, llama
from inform_jax.models.families.rules import UnsupportedModelError

_MODULES = (llama, gpt_neox)

# Hugging Face model_type -> the family module that implements it. Anything else is refused by name.
BY_MODEL_TYPE: dict[str, ModuleType] = {t: family for family in _MODULES for t in family.MODEL_TYPES}
PRESETS: dict[str, dict] = {name: fields for family in _MODULES for name, fields in family.PRESETS.items()}


def family_of(model_type: str) -> ModuleType:
    """The family module of a Hugging Face model_type; an unsupported one raises naming the supported ones."""
    try:
        return BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; supported: {sorted(BY_MODEL_TYPE)}"
        ) from None
