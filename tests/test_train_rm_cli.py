"""`inform-jax train-rm` end to end on synthetic-world files."""

import json
import os

import pytest

from inform_jax.cli import main
from inform_jax.models.reward_model import EnsembleRewardModel, load_reward_model
from inform_jax.train.config import load_config
from inform_jax.train.metrics_log import read_metrics
from inform_jax.world.world import SyntheticWorld

ROOT = os.path.dirname(os.path.dirname(__file__))
TINY = "{vocab_size: 96, hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 4, num_kv_heads: 4}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return SyntheticWorld().write(out, n_train=96, n_test=32, n_sft=8, n_prompts_train=8, n_prompts_test=8)


@pytest.mark.parametrize(
    "method,train_file", [("inform", "prefs_train_hh.jsonl"), ("ensemble", "prefs_train_messages.jsonl")]
)
def test_train_rm_command_trains_evaluates_and_exports(tmp_path, world, method, train_file, capsys):
    out = tmp_path / "run"
    code = main([
        "train-rm", "--method", method, "--output-dir", str(out),
        "--set", f"model.config={TINY}", "--set", "model.dtype=float32", "--set", "mesh.fsdp=1",
        "--set", f"data.train={world[train_file]}", "--set", f"data.eval={world['prefs_test.jsonl']}",
        "--set", f"data.tokenizer={world['tokenizer']}", "--set", "data.max_length=40",
        "--set", "head.latent_dim=8", "--set", "loss.num_members=2",
        "--set", "train.batch_size=16", "--set", "train.max_steps=4", "--set", "train.eval_every=2",
        "--set", "train.log_every=2", "--set", "train.progress=false",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "read 96, kept 96" in printed and "held-out:" in printed
    evals = [r for r in read_metrics(str(out / "metrics.jsonl")) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4] and all(r["pairs"] == 32 for r in evals)
    model = load_reward_model(str(out / "final"))
    assert isinstance(model, EnsembleRewardModel) == (method == "ensemble")
    with open(out / "config.yaml") as f:
        assert f"method: {method}" in f.read()


def test_bad_override_names_the_key():
    with pytest.raises(ValueError, match="unknown config key 'optim.learning_rate'"):
        load_config(None, ["optim.learning_rate=1e-5"])
    with pytest.raises(ValueError, match="method must be one of"):
        load_config(None, ["method=ppo"])
    # YAML 1.1 reads 1e-5 (no dot) as a string: a float field must still get a float, and junk must name the key.
    assert load_config(None, ["optim.lr=1e-5"]).optim.lr == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="'optim.lr': expected a number"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ValueError, match="'train.batch_size': expected an integer"):
        load_config(None, ["train.batch_size=1.5"])


def test_every_example_config_parses():
    folder = os.path.join(ROOT, "experiments", "rm")
    files = [f for f in os.listdir(folder) if f.endswith(".yaml")]
    assert len(files) >= 4
    for name in files:
        config = load_config(os.path.join(folder, name))
        assert (config.model.preset or config.model.config) and config.data.train  # an architecture and data


def test_alpacafarm_converter(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "conv", os.path.join(ROOT, "experiments", "rm", "convert_alpacafarm.py")
    )
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    rows = [
        {"instruction": "Add.", "input": "1+1", "output_1": "2", "output_2": "3", "preference": 1},
        {"instruction": "Greet.", "input": "", "output_1": "bye", "output_2": "hello", "preference": 2},
    ]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    conv.main(str(tmp_path / "a.json"), str(tmp_path / "b.jsonl"))
    out = [json.loads(line) for line in open(tmp_path / "b.jsonl")]
    assert [(r["chosen"], r["rejected"]) for r in out] == [("2", "3"), ("hello", "bye")]
    assert "### Input:\n1+1" in out[0]["prompt"] and "### Input" not in out[1]["prompt"]
    with pytest.raises(ValueError, match="row 0"):
        conv.convert_row({**rows[0], "preference": 0}, 0)
