"""The model-family registry: every supported model_type has one family module that maps configs and weights both
ways; an unknown one is refused by name. (Weight parity with transformers per family: test_models_parity.)"""

import pytest

from inform_jax.models import DecoderConfig, UnsupportedModelError
from inform_jax.models.families import BY_MODEL_TYPE, PRESETS, family_of
from inform_jax.models.presets import preset_config

FAMILY_FIELDS = ("NAME", "MODEL_TYPES", "CAUSAL_LM_CLASSES", "EMBED_TENSOR", "HF_PREFIX", "PRESETS")
FAMILY_FUNCTIONS = ("config_fields", "to_hf", "layer_rules", "top_rules")


@pytest.mark.parametrize("model_type", sorted(BY_MODEL_TYPE))
def test_each_model_type_round_trips_through_its_family(model_type):
    family = family_of(model_type)
    assert all(hasattr(family, f) for f in FAMILY_FIELDS + FAMILY_FUNCTIONS)
    assert model_type in family.CAUSAL_LM_CLASSES
    preset = next(fields for fields in PRESETS.values() if fields["model_type"] == model_type)
    config = DecoderConfig(**{**preset, "num_layers": 2, "sliding_windows": ()})
    back = DecoderConfig.from_hf(config.to_hf())
    assert back.layer_windows == config.layer_windows  # () and all-zero windows are the same full attention
    assert back.resolved_head_dim == config.resolved_head_dim  # an explicit head_dim equal to the derived one
    assert back.replace(sliding_windows=(), head_dim=None) == config.replace(head_dim=None)
    assert type(config.to_hf()).__name__.lower().startswith(model_type.replace("_", ""))


def test_every_parameter_has_exactly_one_rule():
    for name in ("llama-3-8b", "pythia-70m", "qwen2-7b"):
        config = preset_config(name, num_layers=1)
        rules = config.family_module.layer_rules(config) + config.family_module.top_rules(config, lm_head=True)
        paths = [path + rule.path for path, rule in rules]
        assert len(paths) == len(set(paths)), name
        assert all((rule.save is None) == (rule.fuse is not None) for _, rule in rules)


def test_unknown_model_type_is_refused_by_name():
    with pytest.raises(UnsupportedModelError, match="'gemma'.*supported"):
        DecoderConfig(model_type="gemma")
