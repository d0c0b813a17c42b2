"""Configuration that documents itself: every key of the RM and PPO configs carries its help in its dataclass
field, and `inform-jax train-rm --help` / `inform-jax ppo --help` list every key with its default and meaning."""

import dataclasses

import pytest

from inform_jax.cli import main
from inform_jax.train.config import RMTrainConfig
from inform_jax.train.config_help import option
from inform_jax.train.ppo.config import PPOConfig


def leaf_fields(config, prefix=""):
    """(dotted key, default value, field) of every non-section field, walked independently of config_help."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            yield from leaf_fields(value, f"{prefix}{field.name}.")
        else:
            yield prefix + field.name, value, field


def help_text(capsys, command):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command, config", [("train-rm", RMTrainConfig()), ("ppo", PPOConfig())])
def test_every_config_key_is_documented_in_help(capsys, command, config):
    printed = help_text(capsys, command).splitlines()
    keys = list(leaf_fields(config))
    assert len(keys) > 50  # every section walked (62 RM and 67 PPO keys when written)
    for key, default, field in keys:
        text = field.metadata.get("help", "")
        assert text.strip(), f"{command}: config key {key!r} has no help text"
        assert f"  {key} (default {default!r}): {text}" in printed, f"{command} --help lacks {key}"


def test_an_option_without_help_is_refused():
    with pytest.raises(ValueError, match="needs its help text"):
        option(1)
