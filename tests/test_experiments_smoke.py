"""Every real-scale experiment config runs end to end in its smoke mode (tiny random checkpoint of the same
architecture family, 5-row fixture in the dataset's real format)."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(__file__))
_spec = importlib.util.spec_from_file_location("smoke", os.path.join(ROOT, "experiments", "smoke.py"))
smoke = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(smoke)


@pytest.mark.parametrize("config", smoke.configs(), ids=lambda p: os.path.relpath(p, ROOT))
def test_experiment_smoke_mode(config, tmp_path):
    result = smoke.smoke(config, str(tmp_path))
    assert result["code"] == 0
    marker = "reward_config.json" if "/rm/" in config else "config.json"
    assert os.path.exists(os.path.join(result["final"], marker))


def test_every_experiment_family_has_a_smoke_mode():
    assert len(smoke.configs()) >= 6
    with pytest.raises(ValueError, match="no smoke mode"):
        smoke.smoke(os.path.join(ROOT, "experiments", "decomposition", "x.yaml"))
